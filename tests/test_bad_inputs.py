"""Every bad input a clear error: a table of user mistakes (datasets, tiers files, artifacts, CLI flags,
outcome tables, storage, ledgers), each run through the CLI on scripted fake tiers. Each case asserts the
exit code (2 for bad input, 3 for a budget stop), exactly one line on stderr naming what and where, no
traceback, no paid call, and that nothing already on disk was changed or lost.

Most cases run in this process through Typer's CliRunner (fast); a representative few run as real
processes, in parallel threads, to show the same line and exit code from `python cli.py`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

import cli
from conftest import PYTHON, ROOT, compile_fake_support
from pipelines import backends
from pipelines.tasks import DATASETS_DIR
from pipelines.signing import canonical
from tests.fakes import FAKE_TIERS, support_script

KEY = "k" * 20 + "-test-signing-key"
REAL = [json.loads(line) for line in open(DATASETS_DIR / "support.jsonl")]
MESSAGE = REAL[0]["message"]  # the fake tiers answer the shipped rows' messages
ROW = {**REAL[10], "id": "r1"}


def lines(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def rows_with(bad_row: dict | str, good: int = 7) -> str:
    """Seven real support rows and one bad one (second line), so the bad line is named by number."""
    return lines(REAL[0], bad_row, *REAL[1:good])


def resealed(doc: dict) -> dict:
    """A document whose checksum is recomputed after an edit: what an attacker who can write the file does."""
    doc = {k: v for k, v in doc.items() if k != "checksum"}
    import hashlib

    return {**doc, "checksum": hashlib.sha256(canonical(doc)).hexdigest()}


@dataclass
class Case:
    args: list[str]
    pattern: str  # regex the one stderr line must match
    files: dict[str, str | bytes | Callable] = field(default_factory=dict)  # written into the case folder
    code: int = 2
    env: dict = field(default_factory=dict)
    scripted: bool = True  # fake/ tiers answer in this process
    after: Callable[[Path], None] | None = None
    opens_stores: bool = False  # got as far as opening .tierwise/'s stores (their files may appear)


def artifact_edit(mutate, reseal=True, source="artifact.json"):
    """A file maker: the shared artifact, edited by `mutate(doc)`, checksum recomputed unless told not to."""
    def make(shared: Path, tmp: Path) -> str:
        doc = json.loads((shared / source).read_text())
        mutate(doc, tmp)
        return json.dumps(resealed(doc) if reseal else doc)
    return make


def set_path(*keys, value):
    """Set doc[k1][k2]... to `value` (called with the case folder when it is a function)."""
    def mutate(doc, tmp):
        target = doc
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value(tmp) if callable(value) else value
    return mutate


def no_marker(tmp: Path):
    assert not (tmp / "ran.txt").exists(), "the artifact made `run` execute a file"


EVIL = "open('ran.txt', 'w').write('ran')\n"
OPT = ["optimize", "support", "--tiers", "{S}/tiers.toml", "--limit", "8", "--trials", "3"]
RUN = ["run", "{S}/artifact.json", "--input", json.dumps({"message": MESSAGE}).replace("{", "{{").replace("}", "}}")]
GARBAGE = bytes(range(256)) * 20

# A task file as the DSPy docs write one: a bare dspy.Predict, a JSONL trainset, a metric reading example.label
DSPY_TASK = """import dspy

class Sig(dspy.Signature):
    text: str = dspy.InputField()
    label: str = dspy.OutputField()

program = dspy.Predict(Sig)
trainset = "ds.jsonl"

def metric(example, prediction, trace=None):
    return example.label == prediction.label
"""
DSPY_ROWS = '{"id": "a", "text": "one", "label": "x"}\n{"id": "b", "text": "two", "label": "y"}\n' \
    '{"id": "c", "text": "three", "label": "x"}\n'
PER_ITEM = """class Each(dspy.Module):
    def __init__(self):
        super().__init__()
        self.one = dspy.Predict(Sig)

    def forward(self, texts: list[str]):
        return dspy.Prediction(label=" ".join(self.one(text=t).label for t in texts))

program = Each"""
BUILT_IN_FORWARD = """class Inline(dspy.Module):
    def forward(self, **kwargs):
        return dspy.Predict(Sig)(**kwargs)

program = Inline"""

SETTINGS_TOML = '[[tier]]\nname = "a"\nmodel = "fake/a"\n[tier.settings]\n'  # a tier, then its settings


def settings_case(line: str, pattern: str) -> Case:
    """`tiers` on a one-tier file whose settings hold `line`."""
    return Case(["tiers", "--tiers", "{T}/t.toml"], pattern, files={"t.toml": SETTINGS_TOML + line + "\n"})


CASES: dict[str, Case] = {
    # --- datasets ---------------------------------------------------------------------------
    "dataset missing": Case([*OPT, "--dataset", "{T}/nope.jsonl"], r"dataset not found: .*nope\.jsonl"),
    "dataset is a directory": Case([*OPT, "--dataset", "{T}/d"], r"d: is a directory; expected a JSONL file",
                                   files={"d/x": "1"}),
    "dataset not UTF-8": Case([*OPT, "--dataset", "{T}/ds.jsonl"], r"ds\.jsonl:2: not UTF-8 text",
                              files={"ds.jsonl": rows_with("x").encode().replace(b"x\n", b'{"message": "caf\xe9"}\n', 1)}),
    "dataset line not JSON": Case([*OPT, "--dataset", "{T}/ds.jsonl"], r"ds\.jsonl:2: not valid JSON",
                                  files={"ds.jsonl": rows_with("{oops")}),
    "dataset line an array": Case([*OPT, "--dataset", "{T}/ds.jsonl"], r"ds\.jsonl:2: expected a JSON object",
                                  files={"ds.jsonl": rows_with("[1, 2]")}),
    "dataset given as CSV": Case([*OPT, "--dataset", "{T}/ds.csv"], r"ds\.csv:1: not valid JSON",
                                 files={"ds.csv": "id,message\n1,hello\n"}),
    "dataset empty": Case([*OPT, "--dataset", "{T}/ds.jsonl"], r"ds\.jsonl: no rows", files={"ds.jsonl": "\n\n"}),
    "dataset nested too deep": Case([*OPT, "--dataset", "{T}/ds.jsonl"], r"ds\.jsonl:2: JSON nested too deeply",
                                    files={"ds.jsonl": rows_with("[" * 100000 + "]" * 100000)}),
    "row missing its label": Case([*OPT, "--dataset", "{T}/ds.jsonl"],
                                  r"ds\.jsonl:2: row r1 lacks the label 'order_id' that task support's metric reads",
                                  files={"ds.jsonl": rows_with({k: v for k, v in ROW.items() if k != "order_id"})}),
    "row missing its intent label": Case([*OPT, "--dataset", "{T}/ds.jsonl"], r"ds\.jsonl:2: row r1 lacks the label 'intent'",
                                         files={"ds.jsonl": rows_with({k: v for k, v in ROW.items() if k != "intent"})}),
    "row missing its input": Case([*OPT, "--dataset", "{T}/ds.jsonl"], r"ds\.jsonl:2: row r1 lacks the input field 'message'",
                                  files={"ds.jsonl": rows_with({k: v for k, v in ROW.items() if k != "message"})}),
    "input field a number": Case([*OPT, "--dataset", "{T}/ds.jsonl"],
                                 r"ds\.jsonl:2: row r1: input field 'message' must be a string, got int",
                                 files={"ds.jsonl": rows_with({**ROW, "message": 12345})}),
    "input field a list": Case([*OPT, "--dataset", "{T}/ds.jsonl"], r"must be a string, got list",
                               files={"ds.jsonl": rows_with({**ROW, "message": ["a", "b"]})}),
    "row ids repeat": Case([*OPT, "--dataset", "{T}/ds.jsonl"], r"ds\.jsonl:3: row id 'r1' repeats line 2",
                           files={"ds.jsonl": lines(REAL[0], ROW, ROW)}),
    # --- tasks ------------------------------------------------------------------------------
    "unknown task": Case(["optimize", "nope", "--tiers", "{S}/tiers.toml"], r"unknown task 'nope'; shipped tasks"),
    "task name with a path": Case(["optimize", "../support", "--tiers", "{S}/tiers.toml"], r"unknown task '\.\./support'"),
    "task file missing": Case(["optimize", "{T}/mine.py", "--tiers", "{S}/tiers.toml"], r"task file not found: .*mine\.py"),
    "task file raises": Case(["optimize", "{T}/mine.py", "--tiers", "{S}/tiers.toml"],
                             r"task file .*mine\.py:2: failed to import \(ZeroDivisionError",
                             files={"mine.py": "NAME = 'mine'\nx = 1 / 0\n"}),
    "task file lacks functions": Case(["optimize", "{T}/mine.py", "--tiers", "{S}/tiers.toml"],
                                      r"module lacks \['build_program', 'inputs', 'metric'\]",
                                      files={"mine.py": "NAME = 'mine'\n"}),
    "dspy task file lacks its metric": Case(["optimize", "{T}/mine.py", "--tiers", "{S}/tiers.toml"],
                                            r"defines \['program', 'trainset'\] but not \['metric'\]",
                                            files={"mine.py": DSPY_TASK.split("def metric")[0]}),
    "dspy task file metric not a function": Case(["optimize", "{T}/mine.py", "--tiers", "{S}/tiers.toml"],
                                                 r"mine\.py: `metric` must be a function .*not int",
                                                 files={"mine.py": DSPY_TASK.split("def metric")[0] + "metric = 3\n",
                                                        "ds.jsonl": DSPY_ROWS}),
    "dspy task file inputs unknowable": Case(["optimize", "{T}/mine.py", "--tiers", "{S}/tiers.toml"],
                                             r"mine\.py: cannot tell which trainset fields are the program's inputs",
                                             files={"mine.py": DSPY_TASK.replace("program = dspy.Predict(Sig)",
                                                                                 BUILT_IN_FORWARD), "ds.jsonl": DSPY_ROWS}),
    "forward input of another type": Case(["optimize", "{T}/mine.py", "--tiers", "{S}/tiers.toml"],
                                          r"ds\.jsonl:1: row a: input 'texts' must be list\[str\] \(Each\.forward "
                                          r"says so\), got str: Input should be a valid list",
                                          files={"mine.py": DSPY_TASK.replace("program = dspy.Predict(Sig)", PER_ITEM),
                                                 "ds.jsonl": DSPY_ROWS.replace('"text": "one"', '"texts": "one"')
                                                 .replace('"text": "two"', '"texts": ["two"]')
                                                 .replace('"text": "three"', '"texts": ["three"]')}),
    "label outside the Literal": Case([*OPT, "--dataset", "{T}/ds.jsonl"],
                                      r"ds\.jsonl:2: row r1: label 'intent' is 'bilage', not one of the output "
                                      r"field's choices \['billing', .*\]: no answer could match it",
                                      files={"ds.jsonl": rows_with({**ROW, "intent": "bilage"})}),
    "dspy list trainset label outside the Literal": Case(
        ["optimize", "{T}/mine.py", "--tiers", "{S}/tiers.toml"],
        r"mine\.py trainset\[1\]: row ex00001-\w+: label 'label' is 'z', not one of the output field's choices \['x', 'y'\]",
        files={"mine.py": DSPY_TASK.replace("import dspy", "import dspy\nfrom typing import Literal")
               .replace("label: str", "label: Literal['x', 'y']")
               .replace('trainset = "ds.jsonl"', "trainset = [dspy.Example(text=t, label=l).with_inputs('text') "
                                                 "for t, l in [('one', 'x'), ('two', 'z'), ('three', 'y')]]")}),
    "dspy row missing its label": Case(["optimize", "{T}/mine.py", "--tiers", "{S}/tiers.toml"],
                                       r"ds\.jsonl:2: row b lacks the label 'label' that task mine's metric reads",
                                       files={"mine.py": DSPY_TASK, "ds.jsonl": DSPY_ROWS.replace(', "label": "y"', "")}),
    # --- tiers files ------------------------------------------------------------------------
    "tiers file missing": Case(["tiers", "--tiers", "{T}/none.toml"], r"tiers file not found: .*none\.toml"),
    "tiers file is a directory": Case(["tiers", "--tiers", "{T}"], r"tiers file .*: is a directory; expected a TOML file"),
    "tiers file not UTF-8": Case(["tiers", "--tiers", "{T}/t.toml"], r"t\.toml: not UTF-8 text",
                                 files={"t.toml": b'[[tier]]\nname = "caf\xe9"\n'}),
    "tiers file not TOML": Case(["tiers", "--tiers", "{T}/t.toml"], r"t\.toml: not valid TOML",
                                files={"t.toml": "[[tier]\nname = 1\n"}),
    "tiers settings a string": Case(["tiers", "--tiers", "{T}/t.toml"],
                                    r"t\.toml \[\[tier\]\] #1: 'settings' must be a table",
                                    files={"t.toml": '[[tier]]\nname = "a"\nmodel = "fake/a"\nsettings = "fast"\n'}),
    "tier a list of strings": Case(["tiers", "--tiers", "{T}/t.toml"], r"t\.toml \[\[tier\]\] #1: expected a \[\[tier\]\] table",
                                   files={"t.toml": 'tier = ["a"]\n'}),
    "tiers file without tiers": Case(["tiers", "--tiers", "{T}/t.toml"], r"expected one or more \[\[tier\]\] tables",
                                     files={"t.toml": 'name = "a"\n'}),
    "price NaN": Case(["tiers", "--tiers", "{T}/t.toml"], r"#1: prices must be finite numbers, got nan",
                      files={"t.toml": '[[tier]]\nname = "a"\nmodel = "fake/a"\ninput_per_1m = nan\noutput_per_1m = 1\n'}),
    "price inf": Case(["tiers", "--tiers", "{T}/t.toml"], r"#1: prices must be finite numbers",
                      files={"t.toml": '[[tier]]\nname = "a"\nmodel = "fake/a"\ninput_per_1m = 1\noutput_per_1m = inf\n'}),
    "price negative": Case(["tiers", "--tiers", "{T}/t.toml"], r"#1: prices must not be negative",
                           files={"t.toml": '[[tier]]\nname = "a"\nmodel = "fake/a"\ninput_per_1m = -1\n'}),
    "price a string": Case(["tiers", "--tiers", "{T}/t.toml"], r"#1: prices must be numbers",
                           files={"t.toml": '[[tier]]\nname = "a"\nmodel = "fake/a"\ninput_per_1m = "cheap"\n'}),
    "tier unknown key": Case(["tiers", "--tiers", "{T}/t.toml"], r"#1: unknown keys \['speed'\]",
                             files={"t.toml": '[[tier]]\nname = "a"\nmodel = "fake/a"\nspeed = 1\n'}),
    "tier with an API key": Case(["tiers", "--tiers", "{T}/t.toml"], r"API keys belong in environment variables",
                                 files={"t.toml": '[[tier]]\nname = "a"\nmodel = "openai/gpt-4o"\napi_key = "sk-x"\n'}),
    "tier empty name": Case(["tiers", "--tiers", "{T}/t.toml"], r"#1: 'name' must be a non-empty string",
                            files={"t.toml": '[[tier]]\nname = ""\nmodel = "fake/a"\n'}),
    "unknown local model": Case(["tiers", "--tiers", "{T}/t.toml"], r"unknown local model 'local/huge'",
                                files={"t.toml": '[[tier]]\nname = "a"\nmodel = "local/huge"\n'}),
    "duplicate tier names": Case(["tiers", "--tiers", "{T}/t.toml"], r"t\.toml: tier names must be unique; .* named twice",
                                 files={"t.toml": '[[tier]]\nname = "a"\nmodel = "fake/a"\n[[tier]]\nname = "a"\nmodel = "fake/b"\n'}),
    "max_concurrency a string": settings_case('max_concurrency = "abc"',
                                              r"settings\.max_concurrency must be a whole number >= 1, got 'abc'"),
    "max_concurrency zero": settings_case("max_concurrency = 0",
                                          r"settings\.max_concurrency must be a whole number >= 1, got 0"),
    "cooldown_s negative": settings_case("cooldown_s = -30", r"settings\.cooldown_s must be a finite number >= 0, got -30"),
    "cooldown_after a word": settings_case('cooldown_after = "x"',
                                           r"settings\.cooldown_after must be a whole number >= 0, got 'x'"),
    "API tier with one price": Case(["tiers", "--tiers", "{T}/t.toml"],
                                    r"#1: set both input_per_1m and output_per_1m \(no price is known for "
                                    r"'openai/house-model' to take the other from; 0 for free\)",
                                    files={"t.toml": '[[tier]]\nname = "a"\nmodel = "openai/house-model"\n'
                                                     'api_base = "http://127.0.0.1:9/v1"\ninput_per_1m = 0.5\n'}),
    "API base without a provider prefix": Case(
        ["optimize", "support", "--tiers", "{T}/t.toml", "--limit", "8"],
        r"tier a \(qwen-small\) is not available: a model served at api_base needs a provider prefix litellm knows, "
        r"such as openai/qwen-small", scripted=False,
        files={"t.toml": '[[tier]]\nname = "a"\nmodel = "qwen-small"\napi_base = "http://127.0.0.1:9/v1"\n'
                         'input_per_1m = 0.5\noutput_per_1m = 1.0\n[[tier]]\nname = "b"\nmodel = "openai/big"\n'
                         'api_base = "http://127.0.0.1:9/v1"\ninput_per_1m = 5\noutput_per_1m = 10\n'}),
    "max_tokens zero": settings_case("max_tokens = 0", r"settings\.max_tokens must be a whole number >= 1, got 0"),
    "timeout a word": settings_case('timeout_s = "soon"', r"settings\.timeout_s must be a finite number"),
    "unknown setting": settings_case("temp = 0", r"unknown settings \['temp'\]"),
    "fake tiers without a script": Case(OPT, r"tier small \(fake/small\) is not available: fake/ models are scripted",
                                        scripted=False),
    "unknown provider prefix": Case(["optimize", "support", "--tiers", "{T}/t.toml"],
                                    r"tier a \(acme/model-x\) is not available: no provider serves this model id",
                                    files={"t.toml": '[[tier]]\nname = "a"\nmodel = "acme/model-x"\ninput_per_1m = 1\n'
                                                     'output_per_1m = 2\n'}),
    "API tier without its key": Case(["optimize", "support", "--tiers", "{T}/t.toml"],
                                     r"tier a \(openai/gpt-4o-mini\) is not available: OPENAI_API_KEY not set",
                                     files={"t.toml": '[[tier]]\nname = "a"\nmodel = "openai/gpt-4o-mini"\n'},
                                     env={"OPENAI_API_KEY": ""}),
    "match-tier unknown": Case([*OPT, "--match-tier", "huge"], r"unknown tier 'huge'; catalog has: small, big"),
    # --- optimize flags ---------------------------------------------------------------------
    "trials 0": Case([*OPT[:-1], "0"], r"Invalid value for '--trials'.*\(see .*optimize --help\)"),
    "trials a word": Case([*OPT[:-1], "many"], r"Invalid value for '--trials'"),
    "unknown option": Case([*OPT, "--fast"], r"No such option: --fast"),
    "missing task argument": Case(["optimize"], r"Missing argument 'TASK'|Missing argument 'task'"),
    "limit 0": Case([*OPT[:4], "--limit", "0"], r"--limit must be at least 4, got 0"),
    "limit negative": Case([*OPT[:4], "--limit", "-5"], r"--limit must be at least 4, got -5"),
    "holdout 0": Case([*OPT, "--holdout", "0"], r"--holdout must lie in \(0, 1\), got 0\.0"),
    "holdout nan": Case([*OPT, "--holdout", "nan"], r"--holdout must lie in \(0, 1\), got nan"),
    "holdout 1": Case([*OPT, "--holdout", "1"], r"--holdout must lie in \(0, 1\)"),
    "max-cost nan": Case([*OPT, "--max-cost-per-1k", "nan"], r"--max-cost-per-1k must be a finite amount >= 0, got nan"),
    "max-cost negative": Case([*OPT, "--max-cost-per-1k", "-1"], r"--max-cost-per-1k must be a finite amount >= 0"),
    "min-quality nan": Case([*OPT, "--min-quality", "nan"], r"--min-quality must lie in \[0, 1\], got nan"),
    "min-quality 90": Case([*OPT, "--min-quality", "90"], r"--min-quality must lie in \[0, 1\]"),
    "budget nan": Case([*OPT, "--budget-usd", "nan"], r"Invalid value for '--budget-usd'"),
    "budget negative": Case([*OPT, "--budget-usd", "-1"], r"Invalid value for '--budget-usd'"),
    "seed a word": Case([*OPT, "--seed", "x"], r"Invalid value for '--seed'"),
    "seed negative": Case([*OPT, "--seed", "-1"], r"--seed must be a whole number from 0 to 4294967295, got -1"),
    "seed too large": Case([*OPT, "--seed", "4294967296"], r"--seed must be a whole number from 0 to 4294967295"),
    "budget inf": Case([*OPT, "--budget-usd", "inf"], r"--budget-usd must be a finite amount >= 0, got inf"),
    "two objectives": Case([*OPT, "--min-quality", "0.5", "--match-tier", "big"], r"give at most one of"),
    "out is a directory": Case([*OPT, "--out", "{T}/outdir"], r"--out .*outdir: is a directory", files={"outdir/keep": "x"}),
    "out under a file": Case([*OPT, "--out", "{T}/afile/a.json"], r"--out .*a\.json: cannot write there",
                             files={"afile": "x"}),
    "sign key unset": Case([*OPT, "--sign-key-env", "NO_SUCH_KEY_VAR"], r"environment variable NO_SUCH_KEY_VAR is not set"),
    "sign key too short": Case([*OPT, "--sign-key-env", "SHORT_KEY"], r"SHORT_KEY holds 5 characters; use at least 16",
                               env={"SHORT_KEY": "abcde"}),
    "sign key env not a name": Case([*OPT, "--sign-key-env", "a b"], r"expected the name of an environment variable"),
    # --- storage ----------------------------------------------------------------------------
    "storage bad scheme": Case([*OPT, "--storage", "foo://x"], r"--storage 'foo://x': unknown database scheme 'foo'"),
    "storage not a URL": Case([*OPT, "--storage", "studies"], r"--storage 'studies': not a database URL"),
    # A password never reaches a message (test_bad_input checks every case for "secretpw").
    "storage driver missing": Case([*OPT, "--storage", "mysql://u:secretpw@127.0.0.1/x"],
                                   r"--storage 'mysql://u@127\.0\.0\.1/x': the database driver is not installed "
                                   r"\(MySQLdb\)"),
    "storage port not a number": Case([*OPT, "--storage", "postgresql://u:secretpw@127.0.0.1:notaport/x"],
                                      r"--storage 'postgresql://u@127\.0\.0\.1:notaport/x': the port is not a number"),
    "storage bad scheme, password": Case([*OPT, "--storage", "foo://u:secretpw@h/db"],
                                         r"--storage 'foo://u@h/db': unknown database scheme 'foo'"),
    "storage password in the query": Case([*OPT, "--storage", "foo://h/db?user=u&password=secretpw"],
                                          r"--storage 'foo://h/db\?user=u&password=\*\*\*': unknown database scheme"),
    "cache URL unknown scheme": Case(RUN, r"TIERWISE_CACHE_URL 'memcached://u@127\.0\.0\.1:1/0': unknown store scheme "
                                     r"for the call cache", env={"TIERWISE_CACHE_URL": "memcached://u:secretpw@127.0.0.1:1/0"}),
    "cache URL port not a number": Case(OPT, r"TIERWISE_CACHE_URL 'redis://@127\.0\.0\.1:notaport/0': the port is not a "
                                        r"number", env={"TIERWISE_CACHE_URL": "redis://:secretpw@127.0.0.1:notaport/0"}),
    "storage under a file": Case([*OPT, "--storage", "sqlite:///{T}/afile/s.db"], r"cannot create .*s\.db \(.*afile is not a "
                                 r"writable folder\)", files={"afile": "x"}),
    "storage a directory": Case([*OPT, "--storage", "sqlite:///{T}/sdir"], r"sdir is a directory; name the database file",
                                files={"sdir/keep": "x"}),
    "studies.db corrupted": Case(OPT, r"studies\.db: the Optuna study database is corrupted.*Kept: every paid call.*"
                                 r"mv .*studies\.db .*studies\.db\.corrupt", files={".tierwise/studies.db": GARBAGE}),
    "outcome store corrupted": Case(OPT, r"outcomes: the outcome table is corrupted \(file is not a database\)\. Kept: "
                                    r"every paid call", files={".tierwise/outcomes/cache.db": GARBAGE}),
    "call cache corrupted": Case(OPT, r"cache: the call cache is corrupted \(file is not a database\)\. Kept: the "
                                 r"recorded outcomes", files={".tierwise/cache/cache.db": GARBAGE}, opens_stores=True),
    ".tierwise is a file": Case(OPT, r"\.tierwise: .*\.tierwise is a file, not a folder", files={".tierwise": "x"}),
    # --- artifacts --------------------------------------------------------------------------
    "artifact missing": Case(["run", "{T}/nowhere.json", "--input", "{{}}"], r"artifact not found: .*nowhere\.json"),
    "artifact is a directory": Case(["run", "{T}", "--input", "{{}}"], r": is a directory, not an artifact file"),
    "artifact not JSON": Case(["run", "{T}/a.json", "--input", "{{}}"], r"a\.json: not a tierwise artifact \(not valid JSON",
                              files={"a.json": "{oops"}),
    "artifact not UTF-8": Case(["run", "{T}/a.json", "--input", "{{}}"], r"a\.json: not a tierwise artifact",
                               files={"a.json": b'{"kind": "caf\xe9"}'}),
    "artifact of another kind": Case(["run", "{T}/a.json", "--input", "{{}}"], r"a\.json: not a tierwise artifact$",
                                     files={"a.json": '{"hello": "world"}'}),
    "schema version a string": Case(["run", "{T}/a.json", *RUN[2:]], r"a\.json: schema_version '1' is not a whole number",
                                    files={"a.json": artifact_edit(set_path("schema_version", value="1"))}),
    "schema version newer": Case(["run", "{T}/a.json", *RUN[2:]], r"schema version 99 is newer than this tierwise "
                                 r"understands \(1\)", files={"a.json": artifact_edit(set_path("schema_version", value=99))}),
    "artifact tampered": Case(["run", "{T}/a.json", *RUN[2:]], r"a\.json: checksum mismatch",
                              files={"a.json": artifact_edit(set_path("policy", "predictors", "extract", "ladder",
                                                                      value=["big"]), reseal=False)}),
    "artifact names evil.py/": Case(["run", "{T}/a.json", *RUN[2:]], r"a\.json: was compiled from the task file .*evil\.py/'; "
                                    r"pass it explicitly", after=no_marker,
                                    files={"evil.py": EVIL, "a.json": artifact_edit(
                                        set_path("program", "task", value=lambda tmp: f"{tmp}/evil.py/"))}),
    "artifact names evil.py/.": Case(["run", "{T}/a.json", *RUN[2:]], r"pass it explicitly", after=no_marker,
                                     files={"evil.py": EVIL, "a.json": artifact_edit(
                                         set_path("program", "task", value=lambda tmp: f"{tmp}/evil.py/."))}),
    "artifact names a module path": Case(["run", "{T}/a.json", *RUN[2:]], r"pass it explicitly",
                                         files={"a.json": artifact_edit(set_path("program", "task", value="os.path"))}),
    "artifact without a program source": Case(["run", "{T}/a.json", *RUN[2:]], r"records no way to rebuild its program",
                              files={"a.json": artifact_edit(set_path("program", "task", value=None))}),
    "policy names unknown tier": Case(["run", "{T}/a.json", *RUN[2:]], r"unknown tiers \['gigantic'\]",
                                      files={"a.json": artifact_edit(set_path("policy", "predictors", "extract", "ladder",
                                                                              value=["gigantic"]))}),
    "artifact tiers cannot answer": Case(RUN, r"artifact\.json: tier small \(fake/small\) cannot answer here", scripted=False),
    "unsigned, signature required": Case([*RUN, "--require-signature"], r"artifact\.json: unsigned artifact, and a signature "
                                         r"is required", env={"TIERWISE_SIGNING_KEY": KEY}),
    "unsigned, required by env": Case(RUN, r"unsigned artifact", env={"TIERWISE_REQUIRE_SIGNATURE": "1",
                                                                      "TIERWISE_SIGNING_KEY": KEY}),
    "signed with another key": Case(["run", "{S}/signed.json", *RUN[2:], "--require-signature"],
                                    r"signed\.json: signature mismatch: not signed with the key in TIERWISE_SIGNING_KEY",
                                    env={"TIERWISE_SIGNING_KEY": "another-key-of-enough-length"}),
    "signed, edited, resealed": Case(["run", "{T}/a.json", *RUN[2:]], r"a\.json: signature mismatch",
                                     env={"TIERWISE_SIGNING_KEY": KEY, "TIERWISE_REQUIRE_SIGNATURE": "1"},
                                     files={"a.json": artifact_edit(set_path("policy", "predictors", "extract", "ladder",
                                                                             value=["big"]), source="signed.json")}),
    "signature required, no key": Case(["run", "{S}/signed.json", *RUN[2:], "--require-signature"],
                                       r"signing key: environment variable TIERWISE_SIGNING_KEY is not set",
                                       env={"TIERWISE_SIGNING_KEY": ""}),
    "require-signature env garbage": Case(RUN, r"TIERWISE_REQUIRE_SIGNATURE='maybe': expected 1 or 0",
                                          env={"TIERWISE_REQUIRE_SIGNATURE": "maybe"}),
    # --- run inputs -------------------------------------------------------------------------
    "input not JSON": Case([*RUN[:3], "{{nope"], r"--input is not valid JSON"),
    "input an array": Case([*RUN[:3], "[1, 2]"], r"--input must be a JSON object"),
    "input lacks a field": Case([*RUN[:3], '{{"msg": "hi"}}'], r"input 1: missing fields \['message'\]"),
    "input field not a string": Case([*RUN[:3], '{{"message": 42}}'], r"input 1: input field 'message' must be a string"),
    "input and dataset": Case([*RUN, "--dataset", "{T}/x.jsonl"], r"give exactly one of --input"),
    "batch row not a string": Case(["run", "{S}/artifact.json", "--dataset", "{T}/b.jsonl"],
                                   r"b\.jsonl: row 2: input field 'message' must be a string, got dict",
                                   files={"b.jsonl": lines({"message": MESSAGE}, {"message": {"text": "hi"}})}),
    "batch dataset a directory": Case(["run", "{S}/artifact.json", "--dataset", "{T}/b"],
                                      r"b: is a directory; expected a JSONL file", files={"b/keep": "x"}),
    "report needs a signature": Case(["report", "{S}/artifact.json", "--out", "{T}/rep"], r"unsigned artifact",
                                     env={"TIERWISE_REQUIRE_SIGNATURE": "1", "TIERWISE_SIGNING_KEY": KEY}),
    # --- ledgers ----------------------------------------------------------------------------
    "ledger is a directory": Case([*RUN, "--ledger", "{T}/ldir"], r"ledger .*ldir: is a directory", files={"ldir/keep": "x"}),
    "ledger under a file": Case([*RUN, "--ledger", "{T}/afile/l.jsonl"], r"ledger .*l\.jsonl: cannot create it",
                                files={"afile": "x"}),
    "ledger line an array": Case(["report", "{T}/l.jsonl", "--out", "{T}/rep"], r"l\.jsonl:2: not a ledger record",
                                 files={"l.jsonl": lambda shared, tmp: (shared / "ledger.jsonl").read_text().splitlines()[0]
                                        + "\n[1, 2]\n"}),
    "ledger missing": Case(["report", "{T}/none.jsonl"], r"ledger not found: .*none\.jsonl"),
    "ledger empty": Case(["report", "{T}/l.jsonl", "--out", "{T}/rep"], r"l\.jsonl: the ledger has no calls",
                         files={"l.jsonl": "\n"}),
    "report out is a file": Case(["report", "{S}/artifact.json", "--out", "{T}/r.txt"], r"report --out .*r\.txt: .*r\.txt is "
                                 r"a file", files={"r.txt": "keep me"}),
    "report split unknown": Case(["report", "{S}/artifact.json", "--out", "{T}/rep", "--split", "test"],
                                 r"--split must be one of all, dev, holdout"),
    "report study, no storage": Case(["report", "somestudy"], r"no --storage was given for a study"),
    "report study, bad storage": Case(["report", "somestudy", "--storage", "foo://x"], r"unknown database scheme 'foo'"),
    "report study, server refuses": Case(["report", "somestudy", "--storage", "postgresql://u:secretpw@127.0.0.1:1/x"],
                                         r"report: cannot open the study database 'postgresql://u@127\.0\.0\.1:1/x' "
                                         r"\([^;]*\)$"),  # a server that refused is not a corrupted file
    "report study, corrupted db": Case(["report", "somestudy", "--storage", "sqlite:///{T}/s.db"],
                                       r"s\.db: the Optuna study database is corrupted", files={"s.db": GARBAGE}),
    # --- outcome tables (generic: the table's contents are checked in test_replay) ---------
    "outcome table missing": Case(["replay", "fit", "{T}/none.csv"], r"outcome table not found: .*none\.csv"),
    "outcome table .txt": Case(["replay", "fit", "{T}/t.txt"], r"t\.txt: unknown outcome table format '\.txt'",
                               files={"t.txt": "id,model\n"}),
    "outcome table a directory": Case(["replay", "fit", "{T}/tables"], r"tables: is a directory; expected an outcome table",
                                      files={"tables/a.csv": "id\n"}),
    "replay missing argument": Case(["replay", "fit"], r"Missing argument 'OUTCOMES'|Missing argument 'outcomes'"),
    "replay seed negative": Case(["replay", "fit", "{T}/none.csv", "--seed", "-3"],
                                 r"--seed must be a whole number from 0 to 4294967295, got -3"),
    # --- money ------------------------------------------------------------------------------
    "budget zero stops": Case([*OPT, "--budget-usd", "0"], r"^stopped: budget reached: this compile has spent \$0\.000000 "
                              r"of --budget-usd \$0\.000000 \(", code=3, opens_stores=True),
}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Files the cases read and never write: fake tiers, an artifact, a signed one, a ledger."""
    folder = tmp_path_factory.mktemp("shared")
    (folder / "tiers.toml").write_text(FAKE_TIERS)
    compile_fake_support(folder, name="artifact.json")
    os.environ["TIERWISE_SIGNING_KEY"] = KEY
    try:
        from pipelines.artifact import read, save

        save(read(folder / "artifact.json"), folder / "signed.json", sign_key_env="TIERWISE_SIGNING_KEY")
    finally:
        del os.environ["TIERWISE_SIGNING_KEY"]
    from pipelines.artifact import load_program
    from pipelines.ledger import Ledger

    program = load_program(folder / "artifact.json", ledger=Ledger(folder / "ledger.jsonl"),
                           scripts={"*": support_script()})
    program(message=MESSAGE)
    return folder


def snapshot(*folders: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for folder in folders for p in folder.rglob("*") if p.is_file()
            and not p.name.endswith(".lock")}


def prepare(case: Case, shared: Path, tmp: Path) -> list[str]:
    for name, content in case.files.items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        content = content(shared, tmp) if callable(content) else content
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return [a.format(S=shared, T=tmp) for a in case.args]


def check_one_line(code: int, stdout: str, stderr: str, case: Case) -> str:
    assert code == case.code, (code, stdout, stderr)
    assert "Traceback" not in stdout + stderr
    rows = stderr.strip().splitlines()
    assert len(rows) == 1, stderr
    assert rows[0].startswith("error: " if case.code == 2 else "stopped: "), rows[0]
    assert re.search(case.pattern, rows[0]), rows[0]
    return rows[0]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, shared, tmp_path, monkeypatch):
    case = CASES[name]
    monkeypatch.chdir(tmp_path)
    calls = []
    if case.scripted:
        script = support_script()
        monkeypatch.setitem(backends.SCRIPTED, "*", lambda tier, messages: calls.append(tier) or script(tier, messages))
    args = prepare(case, shared, tmp_path)
    before = snapshot(tmp_path, shared)
    result = CliRunner().invoke(cli.app, args, env={k: v or None for k, v in case.env.items()})
    check_one_line(result.exit_code, result.stdout, result.stderr, case)
    assert "secretpw" not in result.stderr + result.stdout
    assert calls == [], "a call was paid for before the input was refused"
    after = snapshot(tmp_path, shared)
    assert {p: after.get(p) for p in before} == before, "a file that was there before changed or vanished"
    new = {p for p in set(after) - set(before) if not (case.opens_stores and ".tierwise" in p.parts)}
    assert not new, f"a refused command left files behind: {sorted(new)}"  # e.g. a stray .tmp beside --out
    if case.after:
        case.after(tmp_path)


REAL_PROCESS = ["tiers file is a directory", "trials 0", "artifact names evil.py/", "studies.db corrupted",
                "ledger is a directory", "budget zero stops"]
DRIVER = """
import sys
from pipelines import backends
from tests.fakes import support_script
backends.SCRIPTED["*"] = support_script()  # the fake tiers answer in this process, as they do in CliRunner
import cli
sys.argv = ["cli.py", *sys.argv[1:]]
cli.main()
"""


def test_real_processes_print_the_same_one_line(shared, tmp_path):
    """A representative few as real `python cli.py` processes (run side by side): exit code, one line."""
    def run(name):
        case, folder = CASES[name], tmp_path / re.sub(r"\W", "_", name)
        folder.mkdir()
        args = prepare(case, shared, folder)
        env = {**os.environ, "PYTHONPATH": str(ROOT), **{k: v for k, v in case.env.items()}}
        proc = subprocess.run([PYTHON, "-c", DRIVER, *args], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=300)
        return name, folder, proc

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, REAL_PROCESS))
    for name, folder, proc in results:
        check_one_line(proc.returncode, proc.stdout, proc.stderr, CASES[name])
        if CASES[name].after:
            CASES[name].after(folder)


# --- what the table cannot show: behaviour that must hold after the refusals are gone ----------------


FUTURE_TASK = '''from __future__ import annotations

from typing import Literal

import dspy

NAME = "future_support"
INTENTS = ("billing", "shipping", "returns", "account", "technical", "product_question")


class Classify(dspy.Signature):
    """Classify the customer's message."""
    message: str = dspy.InputField()
    intent: Literal["billing", "shipping", "returns", "account", "technical", "product_question"] = dspy.OutputField()


class Program(dspy.Module):
    def __init__(self):
        super().__init__()
        self.classify = dspy.Predict(Classify)

    def forward(self, message: str):
        return self.classify(message=message)


def build_program():
    return Program()


def inputs(row: dict) -> dict:
    return {"message": row["message"]}


def metric(row: dict, prediction) -> float:
    return float(prediction.intent == row["intent"])
'''


def intent_script():
    """The fake tiers answer the intent plainly (one output field): small right on simple rows, big always."""
    rows = {r["message"]: r for r in REAL}

    def script(tier, messages):
        row = rows[messages[-1]["content"]]
        right = tier == "big" or row["difficulty"] == "simple"
        return (row["intent"] if right else "billing"), 0.95 if right else 0.4

    return script


def test_a_task_file_with_future_annotations_compiles_and_runs(shared, tmp_path, monkeypatch):
    """String annotations resolve (the module is in sys.modules): quality is the script's, not 0.000."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(backends.SCRIPTED, "*", intent_script())
    task = tmp_path / "future_task.py"
    task.write_text(FUTURE_TASK)
    result = CliRunner().invoke(cli.app, ["optimize", str(task), "--tiers", str(shared / "tiers.toml"), "--limit", "20",
                                          "--dataset", str(DATASETS_DIR / "support.jsonl"), "--trials", "5", "--json",
                                          "--out", "f.json"])
    assert result.exit_code == 0, (result.stderr, result.exception)
    summary = json.loads(result.stdout)
    assert summary["baselines"]["big"]["dev"]["quality"] == 1.0  # the big tier is always right
    assert 0 < summary["baselines"]["small"]["dev"]["quality"] < 1
    ran = CliRunner().invoke(cli.app, ["run", "f.json", "--task", str(task), "--json",
                                       "--input", json.dumps({"message": MESSAGE})])
    assert ran.exit_code == 0, ran.stderr
    assert json.loads(ran.stdout)["results"][0]["output"] == {"intent": REAL[0]["intent"]}


def test_signed_artifact_end_to_end(shared, tmp_path, monkeypatch):
    """optimize --sign-key-env signs; run --require-signature accepts it with the key, refuses it with
    another key, and refuses the unsigned artifact; the key is written nowhere."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(backends.SCRIPTED, "*", support_script())
    monkeypatch.setenv("TIERWISE_SIGNING_KEY", KEY)
    made = CliRunner().invoke(cli.app, [*[a.format(S=shared) for a in OPT], "--out", "signed.json",
                                        "--sign-key-env", "TIERWISE_SIGNING_KEY", "--json"])
    assert made.exit_code == 0, (made.stderr, made.exception)
    document = json.loads((tmp_path / "signed.json").read_text())
    assert document["signature"]["alg"] == "HMAC-SHA256" and len(document["signature"]["value"]) == 64
    assert document["signature"]["key_env"] == "TIERWISE_SIGNING_KEY"
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    run = ["run", "signed.json", "--require-signature", "--input", json.dumps({"message": MESSAGE})]
    ok = CliRunner().invoke(cli.app, run)
    assert ok.exit_code == 0 and "FAILED" not in ok.stdout, ok.stderr
    wrong = CliRunner().invoke(cli.app, run, env={"TIERWISE_SIGNING_KEY": "x" * 32})
    assert wrong.exit_code == 2 and "signature mismatch" in wrong.stderr
    unsigned = CliRunner().invoke(cli.app, ["run", str(shared / "artifact.json"), *run[2:]])
    assert unsigned.exit_code == 2 and "unsigned artifact" in unsigned.stderr
    from pipelines import load

    assert set(load(tmp_path / "signed.json", require_signature=True).policy.predictors) == {"classify", "extract"}
    with pytest.raises(Exception, match="unsigned artifact"):
        load(shared / "artifact.json", require_signature=True)


def test_a_torn_ledger_line_does_not_swallow_the_next_record(tmp_path):
    from pipelines.ledger import CallRecord, Ledger

    path = tmp_path / "ledger.jsonl"
    first = CallRecord("small", "fake/small", "classify", 10, 2, 1e-6, 0.0, 0.1, False)
    Ledger(path).add(first)
    with open(path, "a") as f:
        f.write('{"tier": "big", "model": "fake/b')  # a writer killed mid-line
    second = CallRecord("big", "fake/big", "classify", 10, 2, 1e-5, 0.0, 0.1, False)
    Ledger(path).add(second)
    frame = Ledger.read_frame(path)
    assert list(frame["call_id"]) == [first.call_id, second.call_id]


CONCURRENT_RESUME = """
import sys
import optuna
from optimizers.study import open_study, run_search_buffered

study = open_study("race", sys.argv[1], 0)
def evaluate(policy):
    return float(len(policy.predictors["p"].ladder)), 1.0
ran = run_search_buffered(study, evaluate, ["p"], ["a", "b"], ["logprob_mean"], int(sys.argv[2]), 0, batch=5)
print(ran)
"""


def test_concurrent_resumes_stop_at_the_asked_trials(tmp_path):
    """Two processes resuming one study to --trials 60 leave exactly 60 trials (they overshot to 90+)."""
    from conftest import run_python

    storage = f"sqlite:///{tmp_path}/s.db"
    run_python(CONCURRENT_RESUME, storage, "10")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([PYTHON, "-c", CONCURRENT_RESUME, storage, "60"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    import optuna

    trials = optuna.load_study(study_name="race", storage=storage).get_trials()
    assert len([t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]) == 60
    assert sum(int(out.strip().splitlines()[-1]) for out, _ in outs) == 50


FRESH_STUDY = """
from optimizers.study import open_study
print(len(open_study("fresh", None, 0).trials))
"""


def test_processes_racing_on_a_fresh_folder_all_open_the_study(tmp_path):
    """Three processes creating .tierwise/studies.db at once: none sees `table studies already exists` (without
    the lock, 3 of 4 processes failed so in a trial run)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([PYTHON, "-c", FRESH_STUDY], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-300:] for _, err in outs]


PROGRESS_AFTER_REDIRECT = """
import os, sys
os.environ["TTY_COMPATIBLE"] = "1"  # draw frames as at a terminal
from optimizers.progress import LiveProgress
from pipelines import local

class Budget:
    paid_calls, spent_usd = 3, 0.0012

with LiveProgress(enabled=True) as progress:
    progress.stage("recording outcomes", total=3)
    local._route_native_stderr_to_log()  # what loading a local model does: fd 2 -> llama.log
    os.write(2, b"llama.cpp says hello\\n")
    for _ in range(3):
        progress.advance(Budget)
print("error: a last line", file=sys.stderr)
"""


def test_progress_display_reaches_the_terminal_after_fd2_is_pointed_at_the_log(tmp_path):
    """The frames and the final line go where stderr pointed at start; only llama.cpp's output goes to the log."""
    from conftest import run_python

    proc = run_python(PROGRESS_AFTER_REDIRECT, env_extra={"TIERWISE_MODEL_DIR": str(tmp_path)})
    log = (tmp_path / "llama.log").read_text()
    assert "llama.cpp says hello" in log
    assert "recording outcomes" not in log and "a last line" not in log
    assert "recording outcomes" in proc.stderr and "3/3" in proc.stderr and "paid calls 3" in proc.stderr
    assert proc.stderr.strip().endswith("error: a last line")


def test_a_tier_that_cannot_be_reached_is_refused_before_the_search(shared, tmp_path, monkeypatch):
    """Every call to `small` fails at the connection: after its first 3 rows the compile stops (exit 2), instead
    of listing it, searching it and silently falling back on `big` for every call. Malformed answers would not
    count: the model was reached."""
    monkeypatch.chdir(tmp_path)
    base, calls = support_script(), []

    def script(tier, messages):
        calls.append(tier)
        return ConnectionError("connection refused") if tier == "small" else base(tier, messages)

    monkeypatch.setitem(backends.SCRIPTED, "*", script)
    tiers = tmp_path / "tiers.toml"
    tiers.write_text(FAKE_TIERS.replace('output_per_1m = 0.4\n', 'output_per_1m = 0.4\nsettings = {retries = 0}\n'))
    result = CliRunner().invoke(cli.app, ["optimize", "support", "--tiers", str(tiers), "--limit", "8", "--trials", "3"])
    assert result.exit_code == 2, (result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: tier small (fake/small) cannot be reached: its first 3 rows all failed at the call (")
    assert "connection refused" in lines[0] and lines[0].endswith("check the model id, its key and the network")
    assert calls.count("small") == 6  # 3 rows x 2 predictors, then it stopped
    assert not (tmp_path / "support.tierwise.json").exists()


def big_goes_down(tmp_path, monkeypatch, after: int, until: int | None, settings: str):
    """Fake tiers whose `big` endpoint refuses connections from its call `after` + 1 to `until` (None: for
    good) while `down[0]` holds, retried once. Returns the call log, the switch and the tiers file."""
    monkeypatch.chdir(tmp_path)
    base, calls, down = support_script(), [], [True]

    def script(tier, messages):
        calls.append(tier)
        if tier == "big" and down[0] and after < calls.count("big") <= (until or len(calls)):
            return ConnectionError("connection refused")
        return base(tier, messages)

    monkeypatch.setitem(backends.SCRIPTED, "*", script)
    tiers = tmp_path / "tiers.toml"
    tiers.write_text(FAKE_TIERS.replace('output_per_1m = 4.0\n', 'output_per_1m = 4.0\nsettings = {retries = 1, '
                                        f'backoff_s = 0.01, {settings}}}\n'))
    return calls, down, tiers


def test_a_tier_that_goes_down_mid_recording_stops_the_compile_and_a_rerun_fills_the_gaps(tmp_path, monkeypatch):
    """`big` answers its first 3 rows, then its endpoint is down (a transient error: retried, then a cool-down).
    Its baseline would be `small`'s fallback answers: the compile stops (exit 2) naming the real error, not
    the cool-down; the rerun, with `big` back, pays only for the cells it lacked."""
    calls, down, tiers = big_goes_down(tmp_path, monkeypatch, after=6, until=None,
                                       settings="cooldown_after = 2, cooldown_s = 60")
    args = ["optimize", "support", "--tiers", str(tiers), "--limit", "8", "--trials", "3"]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 2, (result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: tier big (fake/big) could not answer 5 of 8 rows (first: ")
    assert "the last 5 in a row: it looks down, so recording stopped there" in lines[0]
    assert "connection refused" in lines[0] and "cooling down" not in lines[0]
    assert lines[0].endswith("rerun when the tier answers again (no call is paid twice), or pass "
                             "--allow-incomplete to compile on the rows every tier answered")
    assert not (tmp_path / "support.tierwise.json").exists()
    paid_before = len(calls)
    down[0] = False
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, (result.stderr, result.exception)
    # the 5 rows x 2 predictors `big` lacked; `small`'s pass was never reached (recording stopped once `big`
    # was down on 5 rows in a row; small answered only as its fallback), so its other cells are paid now, and
    # each of small's 8 rows x 2 predictors once in all
    assert calls[paid_before:].count("big") == 10 and calls.count("small") == 16


def test_a_tier_down_on_5_rows_in_a_row_stops_recording_there(tmp_path, monkeypatch):
    """Down for good after 3 rows of 20: the compile would stop after recording anyway, so it stops once
    the tier failed 5 rows in a row (helpers saw 3 minutes of retries and waits on a dead server before)."""
    calls, _, tiers = big_goes_down(tmp_path, monkeypatch, after=6, until=None, settings="cooldown_after = 100")
    result = CliRunner().invoke(cli.app, ["optimize", "support", "--tiers", str(tiers), "--limit", "20", "--trials",
                                          "3"])
    assert result.exit_code == 2, (result.stderr, result.exception)
    assert "could not answer 5 of 8 rows" in result.stderr and "it looks down, so recording stopped there" \
        in result.stderr
    assert calls.count("big") == 6 + 5 * 2 * 2  # 3 rows answered, then 5 rows x 2 predictors x (1 + 1 retry)


def test_allow_incomplete_compiles_on_the_rows_every_tier_answered_and_a_later_rerun_fills_them(
        tmp_path, monkeypatch):
    """An outage of 2 rows with --allow-incomplete: the compile finishes on the 10 rows `big` answered, says how
    many it left out and why, and no baseline or policy is scored on a fallback's answer. Its study is its
    own: the rerun without the flag, `big` back, pays only the missing cells and compiles on all 12 rows."""
    calls, down, tiers = big_goes_down(tmp_path, monkeypatch, after=6, until=14, settings="cooldown_after = 100")
    args = ["optimize", "support", "--tiers", str(tiers), "--limit", "12", "--trials", "3", "--holdout", "0.4",
            "--json"]
    result = CliRunner().invoke(cli.app, [*args, "--allow-incomplete"])
    assert result.exit_code == 0, (result.stderr, result.exception)
    summary = json.loads(result.stdout)
    notes = [n for n in summary["notes"] if n.startswith("--allow-incomplete")]
    assert notes[0].startswith("--allow-incomplete: tier big (fake/big) could not answer 2 of 12 rows (first: ")
    assert "connection refused" in notes[0]
    assert notes[1].startswith("--allow-incomplete: 2 rows left out of 12 (dev and holdout)")
    body = json.loads((tmp_path / "support.tierwise.json").read_text())
    evaluation = body["evaluation"]
    scored = {r["row_id"] for r in evaluation["chosen"]}
    assert len(scored) == 10
    for rows in evaluation["baselines"].values():
        assert {r["row_id"] for r in rows} == scored
        assert all(s["decision"] != "failed" for r in rows for s in r["steps"])  # no fallback answer scored
    paid_before = len(calls)
    down[0] = False
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert calls[paid_before:] == ["big"] * 4  # the 2 rows x 2 predictors it lacked, nothing else
    rerun = json.loads(result.stdout)
    assert rerun["study"] != summary["study"]  # fewer rows were another compile
    assert not any(n.startswith("--allow-incomplete") for n in rerun["notes"])
    assert len(json.loads((tmp_path / "support.tierwise.json").read_text())["evaluation"]["chosen"]) == 12


def test_a_ledger_that_fails_mid_run_stops_the_run_and_loses_no_paid_call(shared, tmp_path, monkeypatch):
    """/dev/full accepts opening and refuses every write: the first record fails, the run stops with one
    line and exit 2 (it printed FAILED and exited 0 before), and the paid call is in the cache for the rerun."""
    monkeypatch.chdir(tmp_path)
    calls = []
    script = support_script()
    monkeypatch.setitem(backends.SCRIPTED, "*", lambda tier, messages: calls.append(tier) or script(tier, messages))
    monkeypatch.setenv("TIERWISE_CACHE_DIR", str(tmp_path / "cache"))
    args = [a.format(S=shared) for a in RUN]
    result = CliRunner().invoke(cli.app, [*args, "--ledger", "/dev/full"])
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    assert result.stderr.strip().splitlines() == [
        "error: ledger /dev/full: cannot append (No space left on device); the run stopped so that no call goes "
        "unrecorded (calls already paid are in the cache)"]
    paid = len(calls)
    assert paid == 1
    rerun = CliRunner().invoke(cli.app, [*args, "--json", "--ledger", str(tmp_path / "ledger.jsonl")])
    assert rerun.exit_code == 0, rerun.stderr
    from pipelines.ledger import Ledger

    first = Ledger.read_frame(tmp_path / "ledger.jsonl").iloc[0]
    assert (first["tier"], first["cache_hit"], first["cost_usd"]) == (calls[0], True, 0.0)  # not paid again
    assert len(calls) == paid + len(Ledger.read_frame(tmp_path / "ledger.jsonl")) - 1


def test_a_store_damaged_mid_run_is_a_named_error_not_a_sqlite_traceback(tmp_path):
    """Pages of the call cache overwritten after it was opened: the next read names the folder and the recovery."""
    from pipelines.cache import CallCache
    from pipelines.errors import StoreError

    cache = CallCache(tmp_path / "cache")
    for i in range(300):
        cache.put(f"k{i}", "x" * 5000)
    cache.close()
    with open(tmp_path / "cache" / "cache.db", "r+b") as f:
        f.seek(8192)
        f.write(b"\xff" * 20000)
    with pytest.raises(StoreError) as err:
        CallCache(tmp_path / "cache").get("k5")
    assert str(err.value).startswith(f"{tmp_path / 'cache'}: the call cache is corrupted (database disk image is "
                                     "malformed). Kept: the recorded outcomes")


@pytest.mark.parametrize("sqlite_says, expected", [
    ("database or disk is full", "the call cache cannot grow: the disk is full (database or disk is full); free space "
                                 "and rerun (nothing is lost)"),
    ("attempt to write a readonly database", "the call cache cannot be written (attempt to write a readonly "
                                             "database): the folder is read-only for this process"),
    ("file is not a database", "the call cache is corrupted (file is not a database). Kept:"),
])
def test_a_full_disk_or_read_only_folder_is_not_called_corruption(tmp_path, monkeypatch, sqlite_says, expected):
    """SQLite raises one class for damage and for a store it cannot write; only damage is worth moving aside
    (its recovery), and a full disk or read-only folder was reported as corruption with that advice."""
    import sqlite3

    import diskcache

    from pipelines.cache import CallCache
    from pipelines.errors import StoreError

    cache = CallCache(tmp_path / "cache")

    def refuse(self, *args, **kwargs):
        raise sqlite3.OperationalError(sqlite_says)

    monkeypatch.setattr(diskcache.Cache, "set", refuse)
    with pytest.raises(StoreError) as err:
        cache.put("k", "v")
    assert str(err.value).startswith(f"{tmp_path / 'cache'}: {expected}")


def test_an_outage_of_several_tiers_names_each_in_one_line():
    """mid down on every row and the flagship on 2: the stop named the flagship alone, and the hint
    (--allow-incomplete) then left no row; each tier with gaps is named, with its count."""
    from conftest import fake_catalog
    from optimizers.preflight import TierProbe
    from pipelines.errors import ConfigError

    probe = TierProbe(fake_catalog("cheap", "mid", "flagship"))
    probe.observed_rows = {"flagship": 22, "mid": 22, "cheap": 22}
    probe.unavailable_rows = {"flagship": 2, "mid": 22}
    probe.first_error = {"flagship": "tier flagship unavailable: " + "x" * 300, "mid": "tier mid unavailable: refused"}
    with pytest.raises(ConfigError) as err:
        probe.check_complete()
    message = str(err.value)
    assert message.startswith("tier flagship (fake/flagship) could not answer 2 of 22 rows (first: tier flagship "
                              "unavailable: xxx")
    assert "; tier mid (fake/mid) could not answer 22 of 22 rows (first: tier mid unavailable: refused): " in message
    assert "\n" not in message and len(message) < 800


PROGRESS_HEADER = """
import os
os.environ.pop("TTY_COMPATIBLE", None)
os.environ.pop("FORCE_COLOR", None)
from optimizers import progress as module
from optimizers.progress import LiveProgress
"""

PROGRESS_TO_A_FILE = PROGRESS_HEADER + """
class Budget:
    paid_calls, spent_usd = 3, 0.0012

with LiveProgress(enabled=True) as progress:
    progress.stage("recording outcomes", total=3)
    progress.advance(Budget)
    module.PLAIN_EVERY_S = 0.0  # as if 15 s had passed at each call
    for _ in range(2):
        progress.advance(Budget)
"""


def test_progress_to_a_file_writes_plain_lines_as_it_goes():
    """Stderr redirected to a log: the bar cannot redraw and nothing was written until the end of the compile;
    now a plain line every 15 s of a stage (none in its first 15 s: a quick refusal stays one line)."""
    from conftest import run_python

    lines = run_python(PROGRESS_TO_A_FILE).stderr.strip().splitlines()
    assert lines == [f"recording outcomes: {n}/3  paid calls 3  spent $0.001200" for n in (2, 3)], lines


STAGES_TO_A_FILE = PROGRESS_HEADER + """
class Budget:
    paid_calls, spent_usd = 2, 0.5

with LiveProgress(enabled=True) as progress:
    progress.stage("recording outcomes", total=2)
    progress.advance(Budget)
    progress.advance(Budget)
    progress.stage("searching policies", total=30, done=30)
"""


def test_progress_to_a_file_ends_each_stage_on_its_last_count():
    """A stage that ends within 15 s of its last line (every call cached) printed no line; a resumed study's
    search read 0/30 when the study already held its 30 trials."""
    from conftest import run_python

    lines = run_python(STAGES_TO_A_FILE).stderr.strip().splitlines()
    assert lines == ["recording outcomes: 2/2  paid calls 2  spent $0.500000", "searching policies: 30/30"], lines
