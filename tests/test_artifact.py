"""Compiled artifact: round trip into a fresh process, tamper/mismatch/schema errors, no secrets,
no code execution on load, and the run-time import boundary (no optuna, no pandas)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import fake_catalog, last_json_line, run_python
from pipelines import artifact
from pipelines.artifact import build, load_program, program_fingerprint, read, save
from pipelines.cache import CallCache
from pipelines.errors import ArtifactError, ConfigError
from pipelines.ledger import Ledger
from pipelines.policy import Policy, PredictorPolicy
from pipelines.tasks import load_task
from pipelines.tiers import load_catalog
from tests.fakes import support_rows, support_script, write_tiers

def support_policy():
    return Policy({"classify": PredictorPolicy(["small", "big"], "logprob_mean", [0.9]),
                   "extract": PredictorPolicy(["small"])})


def compile_support(tmp_path, policy=None, **extra):
    catalog = load_catalog(write_tiers(tmp_path))
    body = build(task_source="support", program=load_task("support").build_program(), catalog=catalog,
                 policy=policy or support_policy(), metrics={"dev": {"quality": 0.9}}, **extra)
    return save(body, tmp_path / "support.tierwise.json")


def sample_messages(k=6):
    rows = list(support_rows().values())
    hard = [r for r in rows if r["difficulty"] != "simple"][:k // 2]
    easy = [r for r in rows if r["difficulty"] == "simple"][:k - len(hard)]
    return [r["message"] for r in hard + easy]


RUN_IN_FRESH_PROCESS = """
import json, sys
from pipelines.artifact import load_program
from pipelines.cache import CallCache
from tests.fakes import support_script
program = load_program(sys.argv[1], cache=CallCache(sys.argv[2]), scripts={"*": support_script()})
out = []
for message in json.loads(sys.argv[3]):
    p = program(message=message)
    out.append({"intent": p.intent, "order_id": p.order_id, "tiers": [s.tier for s in program.last_trail],
                "cost": program.last_cost_usd})
print(json.dumps({"results": out, "modules": sorted(m for m in ("optuna", "pandas") if m in sys.modules)}))
"""


def test_round_trip_in_a_fresh_process_gives_the_same_outputs(tmp_path):
    path = compile_support(tmp_path)
    messages = sample_messages()
    program = load_program(path, cache=CallCache(tmp_path / "cache-here"), ledger=Ledger(),
                           scripts={"*": support_script()})
    here = []
    for message in messages:
        p = program(message=message)
        here.append({"intent": p.intent, "order_id": p.order_id, "tiers": [s.tier for s in program.last_trail],
                     "cost": program.last_cost_usd})
    # the hard rows escalate classify to big, the simple ones stay on small
    rows = support_rows()
    for message, result in zip(messages, here):
        escalates = rows[message]["difficulty"] != "simple"
        assert result["tiers"] == (["small", "big", "small"] if escalates else ["small", "small"])
        assert result["intent"] == rows[message]["intent"]  # small where it is right, big where it is not
        assert (result["order_id"] == rows[message]["order_id"]) == (not escalates)  # extract stays on small
    out = last_json_line(run_python(RUN_IN_FRESH_PROCESS, str(path), str(tmp_path / "cache-there"),
                                    json.dumps(messages)).stdout)
    assert out["modules"] == []  # the fresh process ran the artifact without optuna or pandas
    assert [{**r, "cost": pytest.approx(r["cost"])} for r in here] == out["results"]


def test_artifact_records_what_production_needs(tmp_path):
    body = read(compile_support(tmp_path))
    assert body["kind"] == "tierwise-artifact" and body["schema_version"] == artifact.SCHEMA_VERSION
    assert body["program"]["task"] == "support"
    assert body["program"]["predictors"] == ["classify", "extract"]
    assert [t["name"] for t in body["catalog"]] == ["small", "big"]
    assert body["policy"]["predictors"]["classify"] == {"ladder": ["small", "big"], "estimator": "logprob_mean",
                                                        "thresholds": [0.9]}
    assert body["versions"]["dspy"] == "3.4.1"
    assert "checksum" not in body  # read() verified and removed it


def test_tampered_file_fails_its_checksum(tmp_path):
    path = compile_support(tmp_path)
    document = json.loads(path.read_text())
    document["policy"]["predictors"]["classify"]["thresholds"] = [0.0]  # never escalate: cheaper, worse
    path.write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match="checksum mismatch: the file was modified after it was compiled"):
        load_program(path)
    path.write_text(path.read_text()[:-40])
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read(path)
    with pytest.raises(ArtifactError, match="artifact not found"):
        read(tmp_path / "missing.json")


@pytest.mark.parametrize("edit, match", [
    (lambda b: b["program"]["state"]["classify"].update(demos="notalist"), r"malformed program state \(AttributeError"),
    (lambda b: b["policy"]["predictors"]["classify"].update(thresholds=["0.9"]),
     r"policy is malformed: predictor 'classify'.s threshold must be a number, got '0\.9'"),
    (lambda b: b["policy"].update(fallback="yes"), r"policy is malformed: fallback must be true or false, got 'yes'"),
    (lambda b: b["catalog"][0].update(input_per_1m=-1.0), r"tier small: prices must be finite numbers >= 0"),
])
def test_an_artifact_edited_by_hand_is_one_line_even_with_its_checksum_redone(tmp_path, edit, match):
    """The checksum catches accidents, not edits: a file re-saved with a fresh checksum is still read field by field
    (demos that are not a list raised AttributeError from the fingerprint; a quoted threshold was taken)."""
    path = compile_support(tmp_path)
    body = read(path)
    edit(body)
    save(body, path)
    with pytest.raises(ArtifactError, match=match):
        load_program(path, scripts={"*": support_script()})


def test_program_with_a_different_fingerprint_is_refused(tmp_path):
    path = compile_support(tmp_path)
    other = tmp_path / "support_v2.py"
    source = Path(load_task("support").module.__file__).read_text()
    typed = "order_id: Annotated[str, AfterValidator(read_order_id)] = dspy.OutputField"
    assert typed in source  # the answer's type (a validator) is not state: the artifact cannot put it back
    other.write_text(source.replace(typed, "order_id: str = dspy.OutputField"))
    with pytest.raises(ArtifactError) as err:
        load_program(path, task=str(other))
    assert "compiled for a different program" in str(err.value) and "recompile" in str(err.value)


def test_newer_schema_is_refused_with_upgrade_hint(tmp_path):
    body = read(compile_support(tmp_path))
    body["schema_version"] = artifact.SCHEMA_VERSION + 1
    path = save(body, tmp_path / "future.json")  # a valid checksum: only the version is wrong
    with pytest.raises(ArtifactError, match=r"schema version 2 is newer than this tierwise understands \(1\); "
                                            "upgrade tierwise"):
        load_program(path)


def test_not_an_artifact(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"hello": "world"}))
    with pytest.raises(ArtifactError, match="not a tierwise artifact"):
        read(path)


def test_policy_naming_unknown_tiers_is_refused(tmp_path):
    body = read(compile_support(tmp_path))
    body["policy"]["predictors"]["extract"]["ladder"] = ["gigantic"]
    path = save(body, tmp_path / "bad-policy.json")
    with pytest.raises(ArtifactError, match="bad-policy.json: .*unknown tiers \\['gigantic'\\]"):
        load_program(path)


def test_a_policy_with_an_unknown_estimator_names_the_file_and_the_estimator(tmp_path):
    body = read(compile_support(tmp_path))
    body["policy"]["predictors"]["classify"]["estimator"] = "committe"
    path = save(body, tmp_path / "typo.json")
    with pytest.raises(ArtifactError, match="typo.json: policy for predictor 'classify': unknown estimator 'committe'"):
        load_program(path)


@pytest.mark.parametrize("where", ["catalog", "extra"])
def test_api_keys_are_never_written(tmp_path, where):
    catalog = fake_catalog("small", "big")
    extra = None
    if where == "catalog":
        t = catalog.tiers[0]
        catalog.tiers[0] = type(t)(t.name, t.model, t.input_per_1m, t.output_per_1m, {"api_key": "sk-live-123"})
    else:
        extra = {"provider": {"Authorization": "Bearer sk-live-123"}}
    with pytest.raises(ArtifactError, match="secrets never go into an artifact"):
        build(task_source="support", program=load_task("support").build_program(), catalog=catalog,
              policy=support_policy(), extra=extra)
    assert not list(tmp_path.glob("*.json"))


def test_saved_artifact_holds_no_key_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-should-not-leak")
    path = compile_support(tmp_path)
    assert "sk-env-should-not-leak" not in path.read_text()


LOAD_UNDER_AUDIT = """
import json, sys
from pipelines.artifact import load_program
from tests.fakes import support_script
load_program(sys.argv[1], scripts={"*": support_script()})  # warm: imports happen here
events = []
def hook(event, args):
    if event in ("exec", "compile", "pickle.find_class", "marshal.loads", "subprocess.Popen", "os.system"):
        events.append(event)
sys.addaudithook(hook)
program = load_program(sys.argv[1], scripts={"*": support_script()})
print(json.dumps({"events": events, "marker": __import__("os").path.exists(sys.argv[2])}))
"""


def test_loading_never_executes_code_from_the_file(tmp_path):
    """Code-shaped strings in every free-text spot of an artifact stay strings: loading it runs no
    exec/compile/unpickle (audited in a fresh process) and the payload's side effect never happens."""
    marker = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {marker}')"
    body = read(compile_support(tmp_path))
    body["metrics"] = {"note": payload}
    body["summary"] = {"objective": payload}
    state = body["program"]["state"]
    state["classify"]["demos"] = [{"message": payload, "intent": payload}]
    program = load_task("support").build_program()
    program.load_state(state)  # the state goes on before the fingerprint check: make the two agree
    body["program"]["fingerprint"] = program_fingerprint(program)
    body["pickled"] = "gASVKAAAAAAAAACMBXBvc2l4lIwGc3lzdGVtlJOUjAV0b3VjaJSFlFKULg=="  # pickle of os.system
    path = save(body, tmp_path / "hostile.json")
    out = last_json_line(run_python(LOAD_UNDER_AUDIT, str(path), str(marker)).stdout)
    assert out == {"events": [], "marker": False}


def test_run_time_imports_no_optuna_or_pandas():
    code = ("import sys, json; import pipelines, pipelines.artifact, pipelines.cascade, pipelines.runtime, "
            "pipelines.engine, pipelines.ledger, pipelines.cache; "
            "print(json.dumps(sorted(m for m in ('optuna', 'pandas', 'optimizers') if m in sys.modules)))")
    assert last_json_line(run_python(code).stdout) == []


def test_an_artifact_cannot_choose_a_task_file_to_execute(tmp_path):
    """The checksum is not a signature: a task given as a .py path runs only when the caller names it."""
    body = read(compile_support(tmp_path))
    marker = tmp_path / "ran.txt"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    body["program"]["task"] = str(evil)
    path = save(body, tmp_path / "points_at_file.json")
    with pytest.raises(ArtifactError, match="pass it explicitly"):
        load_program(path)
    assert not marker.exists()


PEOPLE = """
from typing import Annotated

import dspy
from pydantic import AfterValidator, BaseModel


class Person(BaseModel):
    name: str
    age: int


class One(dspy.Signature):
    text: str = dspy.InputField()
    person: Person = dspy.OutputField()


class Many(dspy.Signature):
    text: str = dspy.InputField()
    people: list[Person] = dspy.OutputField()


def at_least_one(value):
    if value < 1:
        raise ValueError("count at least one")
    return value


class Count(dspy.Signature):
    text: str = dspy.InputField()
    count: Annotated[int, AfterValidator(at_least_one)] = dspy.OutputField()


class Extract(dspy.Module):
    def __init__(self):
        super().__init__()
        self.person = dspy.Predict(One)
        self.people = dspy.Predict(Many)
        self.count = dspy.Predict(Count)
"""


def test_a_users_class_fingerprints_the_same_compiled_from_a_script_or_imported(tmp_path, monkeypatch):
    """A program compiled by `python people.py` names its output type `__main__.Person` (and its validator
    `__main__.at_least_one`); loaded later with `load(path, program=people.Extract())` they are `people.*`:
    the fingerprints differed, and the artifact was refused as "compiled for a different program"."""
    import runpy
    import sys

    from pipelines.artifact import program_fingerprint

    (tmp_path / "people.py").write_text(PEOPLE)
    monkeypatch.syspath_prepend(str(tmp_path))
    as_script = runpy.run_path(str(tmp_path / "people.py"), run_name="__main__")["Extract"]()
    imported = __import__("people").Extract()
    assert program_fingerprint(as_script) == program_fingerprint(imported)
    for before in ("modules", "function_modules"):
        assert program_fingerprint(as_script, before) != program_fingerprint(imported, before)
    sys.modules.pop("people", None)


def test_an_artifact_fingerprinted_the_old_way_still_loads(tmp_path, monkeypatch):
    """Artifacts written before the qualified-name fingerprint named a user's class and validator by their
    module (`people.Person`), or (2026-12-01) the validator alone: loading one onto the same program is
    accepted; a fingerprint of neither naming still is not."""
    (tmp_path / "people.py").write_text(PEOPLE)
    monkeypatch.syspath_prepend(str(tmp_path))
    program = __import__("people").Extract()
    policy = Policy({name: PredictorPolicy(["a"]) for name in ("person", "people", "count")})
    body = build(task_source=None, program=program, catalog=fake_catalog("a"), policy=policy)
    scripts = {"*": lambda tier, messages: ""}
    olds = [program_fingerprint(program, naming) for naming in ("modules", "function_modules")]
    assert len({body["program"]["fingerprint"], *olds}) == 3
    for i, old in enumerate(olds):
        body["program"]["fingerprint"] = old
        assert load_program(save(body, tmp_path / f"old{i}.json"), program=__import__("people").Extract(),
                            scripts=scripts).policy
    body["program"]["fingerprint"] = "0" * 20  # no naming's
    with pytest.raises(ArtifactError, match="compiled for a different program"):
        load_program(save(body, tmp_path / "other.json"), program=__import__("people").Extract(), scripts=scripts)
    import sys
    sys.modules.pop("people", None)


def test_dspy_load_idioms_on_an_artifact_say_how_to_load_it(tmp_path):
    """`compiled.load(path)` (dspy's idiom) raised KeyError 'metadata'; a class for program= raised a TypeError
    about `self`: each is now one line saying what to write."""
    from pipelines.tasks.support import SupportTriage

    path = compile_support(tmp_path)
    scripts = {"*": support_script()}
    with pytest.raises(ConfigError, match=r"program= takes an instance, SupportTriage\(\), not the class"):
        load_program(path, program=SupportTriage, scripts=scripts)
    program = load_program(path, program=SupportTriage(), scripts=scripts)
    with pytest.raises(ConfigError, match=r"a tierwise artifact loads with pipelines\.load\(.*program=YourProgram\(\)\)"):
        program.load(path)


def test_a_production_spend_cap_refuses_the_call_that_could_pass_it(tmp_path):
    """load(path, budget_usd=X): paid calls reserve their upper-bound price; the request whose next call could
    pass the cap raises BudgetExceeded before that call is paid, and cached answers are still served."""
    from concurrent.futures import ThreadPoolExecutor

    from pipelines import load
    from pipelines.errors import BudgetExceeded

    path = compile_support(tmp_path)
    messages = sample_messages(6)
    script, cache = support_script(), CallCache(tmp_path / "cache")
    uncapped = load(path, cache=cache, ledger=Ledger(), scripts={"*": script})
    first_cost = uncapped.runtime.catalog["big"].cost_bound({"messages": [{"content": messages[0] * 4}]})
    capped = load(path, cache=CallCache(tmp_path / "cold"), ledger=Ledger(), scripts={"*": script},
                  budget_usd=first_cost)
    with pytest.raises(BudgetExceeded, match=r"budget_usd reached: this program has spent \$.* of \$"):
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda m: capped(message=m), messages))
    cap = capped.spend_cap
    assert cap.spent_usd <= cap.cap_usd and cap.reserved_usd == 0.0

    # Threads: calls in flight hold their upper bound (several times their price); a call waits for them to
    # settle rather than be refused while the cap still has room (helpers saw 15 of 16 refused at 13% spent).
    import re

    roomy = load(path, cache=CallCache(tmp_path / "cold2"), ledger=Ledger(), scripts={"*": script},
                 budget_usd=first_cost * 4)
    refusals = []
    with ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(roomy, message=m) for m in sample_messages(12)]:
            try:
                future.result()
            except BudgetExceeded as e:
                refusals.append(str(e))
    for refusal in refusals:  # each refused only when what was spent then, plus the call's bound, passes the cap
        spent, cap, bound = map(float, re.search(r"spent \$([\d.]+) of \$([\d.]+) .* at most \$([\d.]+)\)",
                                                 refusal).groups())
        assert spent + bound > cap - 1e-6, refusal
    assert roomy.spend_cap.spent_usd <= roomy.spend_cap.cap_usd and roomy.spend_cap.paid_calls >= 4

    for message in messages[:2]:
        uncapped(message=message)  # now in `cache`
    served = load(path, cache=cache, ledger=Ledger(), scripts={"*": script}, budget_usd=0)
    assert served(message=messages[0]).intent and served.spend_cap.paid_calls == 0
    with pytest.raises(BudgetExceeded):
        served(message=messages[5])
    with pytest.raises(ConfigError, match="budget_usd must be a finite amount >= 0, got -1"):
        load(path, cache=cache, scripts={"*": script}, budget_usd=-1)


def test_an_artifact_is_never_saved_over_a_device_or_pipe(tmp_path):
    """`--out /dev/null` to throw the artifact away: the atomic save renamed its file over the device (as root,
    /dev/null became a regular file for every process on the machine). Refused before anything is written."""
    import os
    import stat

    from pipelines.artifact import check_destination

    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    with pytest.raises(ConfigError, match=r"--out .*pipe: is not a regular file \(a device, pipe or socket\)"):
        check_destination(pipe)
    with pytest.raises(ConfigError, match="is not a regular file"):
        save(read(compile_support(tmp_path)), pipe)
    assert stat.S_ISFIFO(os.stat(pipe).st_mode)
    with pytest.raises(ConfigError, match=r"/dev/null: is not a regular file"):
        check_destination("/dev/null")
