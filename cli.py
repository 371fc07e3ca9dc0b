"""tierwise command line: each command a thin function over pipelines/, optimizers/ and metrics/.

    python cli.py tiers [--tiers FILE] [--json]
    python cli.py optimize TASK [--limit N] [--trials N] [--budget-usd X] [objective flags] [--out FILE]
    python cli.py run ARTIFACT --input '{"message": "..."}' | --dataset FILE.jsonl [--json]
    python cli.py report ARTIFACT_OR_STUDY [--out DIR]
    python cli.py replay fit OUTCOMES [...] | replay apply POLICY OUTCOMES --decisions OUT.csv
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

# Constants only; importing optimizers imports pipelines, which keeps dspy and litellm offline
# (LITELLM_LOCAL_MODEL_COST_MAP) before either loads anywhere.
from optimizers import defaults

try:  # typer >= 0.20 vendors click as typer._click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as click_errors


class OneLineErrors(TyperGroup):
    """A mistyped flag or value (`--trials 0`, an unknown option) is one line on stderr and exit 2, like
    every other user mistake, instead of Click's usage box."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError as e:
            e.show()  # the help text itself
            sys.exit(e.exit_code)
        except click_errors.UsageError as e:
            command = e.ctx.command_path if e.ctx else "cli.py"
            typer.echo(f"error: {e.format_message()} (see {command} --help)", err=True)
            sys.exit(e.exit_code)
        except click_errors.ClickException as e:
            typer.echo(f"error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compile DSPy programs into cost-aware cascades over model tiers.")
replay_app = typer.Typer(no_args_is_help=True, help="Fit or apply a policy from recorded outcomes (no new calls).")
app.add_typer(replay_app, name="replay")


def _fail(message: str) -> None:
    from pipelines.stores import redact_text

    typer.echo(f"error: {redact_text(message)}", err=True)  # a driver's error may quote a URL with its password
    raise typer.Exit(2)


BUDGET_STOP = 3  # not a mistake: the run did what --budget-usd asked and stopped


def guarded(fn):
    """User mistakes print one line naming what and where, exit 2, no traceback. A budget stop prints
    its line and exits 3, so scripts can tell it from bad input."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from pipelines.errors import BudgetExceeded, TierwiseError

        try:
            return fn(*args, **kwargs)
        except BudgetExceeded as e:
            typer.echo(f"stopped: {e}", err=True)
            raise typer.Exit(BUDGET_STOP)
        except TierwiseError as e:
            _fail(str(e))

    return wrapper


@app.command()
@guarded
def tiers(tiers_file: Optional[Path] = typer.Option(None, "--tiers", help="TOML tiers file (default: local tiers)"),
          as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
          check: bool = typer.Option(False, "--check", help="also ask each API tier's endpoint for its model list "
                                                           "(the only network use; no paid call)")):
    """List the tier catalog with prices and availability (no weights are loaded, nothing reaches the
    network unless --check)."""
    from pipelines.probe import check as probe
    from pipelines.tiers import load_catalog

    catalog = load_catalog(tiers_file)
    rows = []
    for tier in catalog:
        ok, why = probe(tier) if check else tier.availability()
        rows.append({**tier.to_dict(), "available": ok, "status": why})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"{'tier':<10} {'model':<28} {'$/1M in':>9} {'$/1M out':>9}  {'available':<9} status / price source")
    for r in rows:
        typer.echo(f"{r['name']:<10} {r['model']:<28} {r['input_per_1m']:>9.4f} {r['output_per_1m']:>9.4f}  "
                   f"{'yes' if r['available'] else 'NO':<9} {r['status']}; {r['price_source']}")
    if check:
        for r in rows:
            if not r["available"]:
                typer.echo(f"tier {r['name']} ({r['model']}) is unreachable: {r['status']}", err=True)
        if not all(r["available"] for r in rows):
            raise typer.Exit(1)


@app.command()
@guarded
def optimize(
    task: str = typer.Argument(..., help="task short name (e.g. support) or path to a task .py file"),
    dataset: Optional[Path] = typer.Option(None, help="labeled dev set (JSONL); default: the task's own"),
    tiers_file: Optional[Path] = typer.Option(None, "--tiers", help="TOML tiers file (default: local tiers)"),
    trials: int = typer.Option(defaults.TRIALS, min=1, help="Optuna trials in the study (a resumed study counts its old ones)"),
    seed: int = typer.Option(defaults.SEED, help="seed for sampling, the --limit subset and the holdout split"),
    budget_usd: Optional[float] = typer.Option(None, "--budget-usd", min=0.0, help="cap on uncached spend for this compile, across reruns (exit 3 when reached)"),
    min_quality: Optional[float] = typer.Option(None, "--min-quality", help="objective: cheapest with quality >= Q"),
    match_tier: Optional[str] = typer.Option(None, "--match-tier", help="objective: cheapest matching tier NAME"),
    max_cost_per_1k: Optional[float] = typer.Option(None, "--max-cost-per-1k", help="objective: best under a cost"),
    holdout: float = typer.Option(defaults.HOLDOUT, help="fraction of rows held out for the final check"),
    storage: Optional[str] = typer.Option(
        None, help="where the compile's state lives (default sqlite + folders under .tierwise/). A postgresql:// "
                   "URL keeps the study, outcomes, spend and call cache there: workers on one URL share one compile"),
    out: Optional[Path] = typer.Option(None, help="artifact path (default TASK.tierwise.json)"),
    limit: Optional[int] = typer.Option(None, help="optimize on a seeded sample of N rows"),
    concurrency: int = typer.Option(1, "--concurrency", min=1, max=64,
                                    help="calls at once while recording outcomes (API tiers; each within its "
                                         "max_concurrency; a local tier one call at a time)"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as one JSON object"),
    sign_key_env: Optional[str] = typer.Option(None, "--sign-key-env", metavar="VAR",
                                               help="sign the artifact (HMAC-SHA256) with the key in this "
                                                    "environment variable"),
    allow_incomplete: bool = typer.Option(False, "--allow-incomplete",
                                          help="when a tier could not answer some rows (outage, timeouts after "
                                               "retries), compile on the rows every tier answered instead of "
                                               "stopping"),
    semantic_cache: bool = typer.Option(False, "--semantic-cache",
                                        help="also search a semantic cache (and its threshold) for the predictors the "
                                             "task declares; adds the task's paraphrase groups to its default dev set"),
    decompose: bool = typer.Option(False, "--decompose",
                                   help="split every predictor that writes several output fields into one predictor "
                                        "per field, each with its own tier (pipelines.decompose)"),
):
    """Compile TASK: record outcomes per tier, search ladders and thresholds, write the artifact."""
    from optimizers.live import OptimizeOptions
    from optimizers.live import optimize as run_optimize
    from optimizers.progress import LiveProgress
    from optimizers.select import Objective
    from optimizers.summary import render_text

    options = OptimizeOptions(task=task, dataset=str(dataset) if dataset else None,
                              tiers=str(tiers_file) if tiers_file else None, trials=trials, seed=seed,
                              budget_usd=budget_usd, objective=Objective(min_quality, match_tier, max_cost_per_1k),
                              holdout=holdout, storage=storage, out=str(out) if out else None, limit=limit,
                              concurrency=concurrency, sign_key_env=sign_key_env, semantic_cache=semantic_cache,
                              allow_incomplete=allow_incomplete, decompose=decompose)
    with LiveProgress(enabled=sys.stderr.isatty() or not as_json) as progress:
        summary = run_optimize(options, progress)
    typer.echo(_json(summary) if as_json else render_text(summary))


def _json(value) -> str:
    """Strict JSON: a value that is not a number (NaN, inf) is null, never a bare NaN other tools refuse."""
    from pipelines.artifact import finite_json

    return json.dumps(finite_json(value), indent=2, allow_nan=False)


@app.command()
@guarded
def run(
    artifact_path: Path = typer.Argument(..., metavar="ARTIFACT", help="compiled artifact (JSON)"),
    input_json: Optional[str] = typer.Option(None, "--input", help="one input as a JSON object"),
    dataset: Optional[Path] = typer.Option(None, help="JSONL of inputs (batch)"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    ledger_path: Optional[Path] = typer.Option(None, "--ledger", help="append call records to this JSONL file"),
    task: Optional[str] = typer.Option(None, help="task name or .py file to rebuild the program from "
                                                  "(required for artifacts compiled from a task file)"),
    require_signature: Optional[bool] = typer.Option(None, "--require-signature/--no-require-signature",
                                                     help="refuse an unsigned or wrongly signed artifact "
                                                          "(default: TIERWISE_REQUIRE_SIGNATURE=1)"),
    sign_key_env: Optional[str] = typer.Option(None, "--sign-key-env", metavar="VAR",
                                               help="environment variable holding the signing key "
                                                    "(default TIERWISE_SIGNING_KEY)"),
    budget_usd: Optional[float] = typer.Option(None, "--budget-usd", min=0.0,
                                               help="cap on uncached spend for this run: once reached, only cached "
                                                    "answers (the rest print as REFUSED), then exit 3"),
):
    """Run a compiled pipeline on one input or a JSONL batch, with a cost/tier summary."""
    from pipelines.commands import run_artifact

    outputs = run_artifact(artifact_path, input_json, dataset, as_json, ledger_path, echo=typer.echo, task=task,
                           require_signature=require_signature, key_env=sign_key_env, budget_usd=budget_usd)
    if any(out["error"] for out in outputs):  # every request ran and is printed; a script must still see it
        raise typer.Exit(1)


@app.command()
@guarded
def report(
    source: str = typer.Argument(..., metavar="ARTIFACT_OR_STUDY",
                                 help="compiled artifact (.json), ledger (.jsonl) or Optuna study name"),
    out: Path = typer.Option(Path("tierwise-report"), help="folder for the CSVs, pareto.png and report.html"),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL holding the study"),
    split: str = typer.Option("all", help="rows for the per-predictor and segment tables: all, dev or holdout"),
    signals: Optional[str] = typer.Option(None, "--signals",
                                          help="a replay policy's own signal plug-ins, as given to `replay fit`"),
):
    """Trade-off report: savings, routing-fairness audit per segment, per-predictor tiers, Pareto front."""
    from metrics.report import check_out_dir, load_report, render_text, write_report
    from optimizers.signal_plugins import parse

    check_out_dir(out)
    result = load_report(source, storage=storage, split=split, signals=parse(signals))
    written = write_report(result, out)  # before printing: a folder it cannot write is one line, not a report then one
    typer.echo(render_text(result))
    typer.echo(f"\nwrote {len(written)} files to {out}/: {', '.join(sorted(written))}")


@replay_app.command("fit")
@guarded
def replay_fit(
    outcomes: Path = typer.Argument(..., help="outcome table: CSV, TSV, JSONL or Parquet, one row per id x model"),
    min_quality: Optional[float] = typer.Option(None, "--min-quality", help="objective: cheapest with quality >= Q"),
    match_tier: Optional[str] = typer.Option(None, "--match-tier", help="objective: cheapest matching MODEL"),
    max_cost_per_1k: Optional[float] = typer.Option(None, "--max-cost-per-1k", help="objective: best under a cost"),
    holdout: float = typer.Option(defaults.HOLDOUT, help="fraction of ids held out for the final check"),
    trials: int = typer.Option(defaults.REPLAY_TRIALS, min=1, help="Optuna trials in the study (a resumed study counts its old ones)"),
    seed: int = typer.Option(defaults.SEED, help="seed for sampling and the holdout split"),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default sqlite under .tierwise/)"),
    out: Optional[Path] = typer.Option(None, help="policy artifact path (default STEM.replay.tierwise.json)"),
    score_max: Optional[float] = typer.Option(None, "--score-max",
                                              help="divide scores by this (judge scores, e.g. 10 for 1-10)"),
    clip_scores: bool = typer.Option(False, "--clip-scores", help="clip scores outside [0, 1] into it (noted)"),
    signals: Optional[str] = typer.Option(None, "--signals",
                                          help="opt-in signal plug-ins, comma-separated: arithmetic (GSM8K-style "
                                               "re-checks of a math answer's working) or your own check, "
                                               "file.py:function or module:function, (input, answer) -> number"),
    features: Optional[str] = typer.Option(None, "--features",
                                           help="router input features: embedding (default) or hashed-words"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as one JSON object"),
):
    """Search routers, cascades and routed cascades over recorded outcomes (no calls), write the policy artifact."""
    from optimizers.replay import ReplayOptions, fit
    from optimizers.select import Objective
    from optimizers.signal_plugins import parse
    from optimizers.summary import render_text

    fitted = fit(ReplayOptions(str(outcomes), Objective(min_quality, match_tier, max_cost_per_1k), holdout, trials,
                               seed, storage, str(out) if out else None, score_max=score_max, plugins=parse(signals),
                               features=features, clip_scores=clip_scores))
    typer.echo(_json(fitted.summary) if as_json else render_text(fitted.summary))


@replay_app.command("apply")
@guarded
def replay_apply(
    policy: Path = typer.Argument(..., help="policy artifact written by `replay fit`"),
    outcomes: Path = typer.Argument(..., help="outcome table to replay the policy on"),
    decisions: Optional[Path] = typer.Option(None, "--decisions", help="write one decision per id to this CSV"),
    score_max: Optional[float] = typer.Option(None, "--score-max",
                                              help="divide this table's scores by this (default: as when fitted)"),
    signals: Optional[str] = typer.Option(None, "--signals",
                                          help="your own signal plug-ins the policy was fitted with (file.py:function, "
                                               "as given to fit): an artifact never imports code itself"),
):
    """Replay a fitted policy on an outcome table: per-id decisions, quality, cost per 1k and the saving against
    the model the fit compared it to. A table without a score column (logs nobody labelled) gets the decisions
    and costs only."""
    from optimizers.replay import apply, decision_stats, reference_comparison, write_decisions
    from optimizers.signal_plugins import parse
    from pipelines.artifact import check_destination

    if decisions:
        check_destination(decisions, flag="--decisions", example="decisions.csv")
    applied = apply(policy, outcomes, score_max, unscored_table=True, signals=parse(signals))
    written = write_decisions(applied, decisions) if decisions else None  # before printing: a closed pipe loses nothing

    def quality(value, other=None) -> str:  # a table without scores says what it cannot
        if value is None:
            return "quality unknown (no scores)   "
        return f"quality {value:.4f}" + (f" vs {other:.4f}" if other is not None else "") + "   "

    stats = decision_stats(applied.decisions)
    typer.echo(f"ids: {stats['n']}   {quality(stats['quality'])}cost/1k ${stats['cost_per_1k']:.6f}")
    versus = reference_comparison(applied)
    if versus:
        saving = "" if versus["saving_pct"] is None else f"   saving {versus['saving_pct']:.1f}%"
        typer.echo(f"vs {versus['reference']} alone on the {versus['n']} ids it answered: "
                   f"{quality(versus['quality'], versus['reference_quality'])}cost/1k "
                   f"${versus['cost_per_1k']:.6f} vs ${versus['reference_cost_per_1k']:.6f}{saving}")
    if applied.fitted_holdout:
        h = decision_stats(applied.fitted_holdout)
        typer.echo(f"fitted holdout ids: {h['n']}   {quality(h['quality'])}cost/1k ${h['cost_per_1k']:.6f}")
    for note in applied.notes:
        typer.echo(f"note: {note}")
    if written:
        typer.echo(f"decisions: {written}")


def main():
    app()


if __name__ == "__main__":
    main()
