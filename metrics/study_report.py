"""A report from an Optuna study: its trials and the Pareto front (a study keeps no per-row results)."""

from __future__ import annotations

import pandas as pd

from metrics import report_tables as rt
from metrics.report_model import Report
from pipelines.errors import ConfigError


def report_from_study(storage: str, study_name: str) -> Report:
    """Trials and the front from a study (no per-row results: a study keeps only each trial's scores).
    Latency is not recorded per trial, so its column is empty."""
    import optuna
    import sqlalchemy

    from optimizers.study import check_storage
    from pipelines.stores import optuna_url, redact

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    check_storage(storage)
    shown = redact(storage)
    storage = optuna_url(storage)  # postgresql:// through psycopg 3, as optimize wrote it
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except sqlalchemy.exc.DatabaseError as e:
        why = str(getattr(e, "orig", None) or e).splitlines()[0]
        if not storage.startswith("sqlite"):  # a server that refused or cannot be reached: nothing is corrupted
            raise ConfigError(f"report: cannot open the study database {shown!r} ({why})") from None
        raise ConfigError(f"report: cannot read the study database {shown!r} ({why}); if it is corrupted, move "
                          "it aside and rerun `optimize`: the study is rebuilt from the recorded outcomes") from None
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        close = [n for n in names if study_name.lower() in n.lower()] or names
        more = f" and {len(close) - 5} more" if len(close) > 5 else ""
        raise ConfigError(f"report: no study {study_name!r} in {shown} ({len(names)} studies; "
                          f"{'e.g.' if names else 'none'} {', '.join(close[:5])}{more})") from None
    except (ValueError, ImportError, optuna.exceptions.StorageInternalError) as e:
        raise ConfigError(f"report: cannot open Optuna storage {shown!r} ({e})") from None
    frame = study.trials_dataframe(attrs=("number", "values", "user_attrs", "state"))
    if frame.empty or "user_attrs_policy" not in frame:
        raise ConfigError(f"report: study {study_name!r} has no completed tierwise trials")
    frame = frame[frame["state"] == "COMPLETE"]
    trials = pd.DataFrame({"number": frame["number"], "quality": frame["values_0"],
                           "cost_per_1k": frame["values_1"], "policy": frame["user_attrs_policy"]})
    table = rt.trials_table(trials.reset_index(drop=True))
    table.insert(3, "latency_s", float("nan"))
    tiers = sorted({b for b in table["baseline"] if b},
                   key=lambda t: table.loc[table["baseline"] == t, "cost_per_1k"].iloc[0])
    return Report(f"{storage}#{study_name}", "study", {"pareto": rt.pareto_table(table), "trials": table},
                  {"study": study_name, "tiers": tiers,
                   "policies": {int(n): p for n, p in zip(trials["number"], trials["policy"])}})
