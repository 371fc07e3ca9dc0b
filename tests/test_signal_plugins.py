"""Your own confidence signal for replay: `--signals file.py:function`, a check (input, answer) -> number."""

from __future__ import annotations

import json
import random

import pytest
from typer.testing import CliRunner

import cli
from optimizers.replay import ReplayOptions, apply, fit
from optimizers.select import Objective
from optimizers.signal_plugins import resolve
from pipelines.errors import ConfigError, DatasetError

CHECK = "def reversed_ok(question, answer):\n    return answer.strip() == question.split()[-1][::-1]\n"


def reversal_table(path, n=300, seed=3):
    """"Reverse the word": `small` (1/10 the price) gets half the words right, and its wrong answers look like its
    right ones (another reversal of the same length); `big` is always right. Only a check of the answer against
    the input tells them apart, which no generic answer feature sees."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    lines = ["id,input,model,score,cost_usd,output"]
    for i in range(n):
        word = "".join(rng.choice(letters) for _ in range(rng.randint(5, 9)))
        right = rng.random() < 0.5
        wrong = "".join(rng.sample(word, len(word)))
        if wrong == word[::-1]:
            wrong = word[::-1][1:] + word[::-1][0]
        small = word[::-1] if right else wrong
        lines += [f"q{i},reverse the word {word},small,{float(right or small == word[::-1])},0.001,{small}",
                  f"q{i},reverse the word {word},big,1.0,0.01,{word[::-1]}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture()
def check_file(tmp_path):
    path = tmp_path / "checks.py"
    path.write_text(CHECK, encoding="utf-8")
    resolve.cache_clear()  # a test rewrites the file: a CLI process resolves each spec once
    yield path
    resolve.cache_clear()


def _fit(table, tmp_path, plugins=(), name="p"):
    return fit(ReplayOptions(str(table), Objective(), holdout=0.3, trials=60, seed=0, features="hashed-words",
                             storage=f"sqlite:///{tmp_path / 'studies.db'}", out=str(tmp_path / f"{name}.json"),
                             plugins=plugins))


def test_your_own_check_lets_the_cheap_model_answer_where_it_passes(tmp_path, check_file):
    table = reversal_table(tmp_path / "rev.csv")
    spec = f"{check_file}:reversed_ok"
    without = _fit(table, tmp_path, name="without").summary
    with_check = _fit(table, tmp_path, (spec,), name="with").summary
    # without the check nothing tells small's right answers from its wrong ones: at big's quality it saves little;
    # with it, small answers every word it reversed and big the rest (small paid on every word: a third saved)
    assert with_check["holdout"]["quality"] >= with_check["baselines"]["big"]["holdout"]["quality"] - 0.01
    assert with_check["savings_pct"] > 25 and with_check["savings_pct"] > without["savings_pct"] + 20
    body = json.loads((tmp_path / "with.json").read_text())
    assert body["replay"]["plugins"] == [spec] and spec in body["replay"]["features"]
    assert "reversed_ok" in body["replay"]["plugin_code"][0]  # the check's code, kept to see it change
    assert any(n.endswith(f"give `replay apply` and `report` --signals {spec} too") for n in with_check["notes"])

    # the artifact names the check and never imports it: apply needs it given again
    with pytest.raises(ConfigError, match=r"fitted with signal plug-in\(s\) .*reversed_ok; pass --signals"):
        apply(tmp_path / "with.json", table)
    applied = apply(tmp_path / "with.json", table, signals=(spec,))
    assert applied.fitted_table and not any("changed since the fit" in n for n in applied.notes)
    res = CliRunner().invoke(cli.app, ["replay", "apply", str(tmp_path / "with.json"), str(table)])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and "--signals" in res.output
    res = CliRunner().invoke(cli.app, ["replay", "apply", str(tmp_path / "with.json"), str(table), "--signals", spec])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli.app, ["replay", "apply", str(tmp_path / "without.json"), str(table), "--signals", spec])
    assert res.exit_code == 2 and "was not fitted with it" in res.output
    res = CliRunner().invoke(cli.app, ["report", str(tmp_path / "with.json"), "--out", str(tmp_path / "r1")])
    assert res.exit_code == 2 and "pass --signals" in res.output  # the report replays the policy too
    res = CliRunner().invoke(cli.app, ["report", str(tmp_path / "with.json"), "--out", str(tmp_path / "r2"),
                                       "--signals", spec])
    assert res.exit_code == 0 and "Savings" in res.output, res.output

    # a check edited after the fit: apply says so; a new fit is a new study (its trials scored other numbers)
    check_file.write_text(CHECK.replace("return", "return len(answer) > 0 and"), encoding="utf-8")
    resolve.cache_clear()
    applied = apply(tmp_path / "with.json", table, signals=(spec,))
    assert any("reversed_ok: its code changed since the fit" in n for n in applied.notes)
    refit = _fit(table, tmp_path, (spec,), name="refit").summary
    assert refit["study"] != with_check["study"]


def test_a_module_on_the_current_folder_works_too(tmp_path, monkeypatch):
    (tmp_path / "mychecks.py").write_text(CHECK, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    resolve.cache_clear()
    plugin = resolve("mychecks:reversed_ok")
    assert plugin.feature_names == ("mychecks:reversed_ok",)
    assert plugin.features("reverse the word abc", "cba") == [1.0] and plugin.features("x abc", "abc") == [0.0]


@pytest.mark.parametrize("spec, message", [
    ("nonesuch", "unknown signal plug-in 'nonesuch': give one of ['arithmetic'], or your own as"),
    ("{dir}/missing.py:f", "no file"),
    ("{dir}/checks.py:absent", "has no function 'absent'"),
    ("{dir}/broken.py:f", "SyntaxError while importing it"),
    ("no_such_module_xyz:f", "ModuleNotFoundError while importing it"),
    ("{dir}/checks.py:not-a-name", "unknown signal plug-in"),
])
def test_a_bad_plugin_spec_is_one_line_before_any_work(tmp_path, check_file, spec, message):
    (tmp_path / "broken.py").write_text("def f(q, a:\n", encoding="utf-8")
    table = reversal_table(tmp_path / "rev.csv", n=20)
    res = CliRunner().invoke(cli.app, ["replay", "fit", str(table), "--signals", spec.format(dir=tmp_path),
                                       "--storage", f"sqlite:///{tmp_path / 's.db'}", "--out", str(tmp_path / "p.json")])
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1 and message in res.output
    assert not (tmp_path / "p.json").exists() and not (tmp_path / "s.db").exists()


@pytest.mark.parametrize("body, message", [
    ("def f(q, a):\n    return 1 / (len(a) - 3)\n", "raised ZeroDivisionError: division by zero on input"),
    ("def f(q, a):\n    return float('nan')\n", "returned nan on input"),
    ("def f(q, a):\n    return 'yes'\n", "returned 'yes' on input"),
])
def test_a_check_that_fails_on_some_answer_names_it_in_one_line(tmp_path, body, message):
    (tmp_path / "bad.py").write_text(body, encoding="utf-8")
    resolve.cache_clear()
    table = reversal_table(tmp_path / "rev.csv", n=20)
    table.write_text(table.read_text() + "q99,reverse the word abc,small,0,0.001,xyz\n"  # a 3-letter answer
                     "q99,reverse the word abc,big,1,0.01,cba\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="signal plug-in '.*bad.py:f' " + message.replace("(", r"\(")):
        _fit(table, tmp_path, (f"{tmp_path / 'bad.py'}:f",))


def test_few_trials_still_warm_start_every_kind_of_policy():
    """60 trials keep 20 warm starts: taken in turn from each kind, not the first 20 (single models and routers),
    so the cascade the check makes cheap is tried even when TPE would not have gone there (the test above)."""
    from optimizers.space import routing_seeds, warm_start_prefix

    seeds = routing_seeds("answer", ["small", "mid", "big"], "big", ["learned", "agreement"], 25)
    assert warm_start_prefix(seeds, len(seeds)) == seeds and warm_start_prefix(seeds, 500) == seeds
    first = warm_start_prefix(seeds, 8)
    shapes = [(p["answer:shape"], "answer:estimator" in p) for p in first]
    assert {("cascade", False), ("router", False), ("cascade", True), ("routed", False)} <= set(shapes)
    assert len(first) == 8 and all(p in seeds for p in first) and len({str(p) for p in first}) == 8
    assert seeds[:8] != first and all(p["answer:shape"] in ("cascade", "router") for p in seeds[:8])



def test_a_check_may_answer_with_numpy_numbers(tmp_path):
    (tmp_path / "np_checks.py").write_text("import numpy as np\n\ndef f(q, a):\n    return np.bool_(a == 'x')\n\n"
                                           "def g(q, a):\n    return np.int64(len(a))\n", encoding="utf-8")
    resolve.cache_clear()
    assert resolve(f"{tmp_path / 'np_checks.py'}:f").features("q", "x") == [1.0]
    assert resolve(f"{tmp_path / 'np_checks.py'}:g").features("q", "abc") == [3.0]
