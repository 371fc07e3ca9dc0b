"""The few named errors a user can cause. The CLI prints their message as one line and exits 2."""


class TierwiseError(Exception):
    """A user-facing problem: bad input, missing install, tampered file. Message says what and where."""


class ConfigError(TierwiseError):
    """A tiers file, policy, flag or task that cannot be used as given."""


class DatasetError(TierwiseError):
    """A dataset or outcome table row that cannot be read."""


class MissingExtraError(TierwiseError):
    """An optional install (e.g. the `local` extra) is needed for what was asked."""


class ModelFileError(TierwiseError):
    """A local model file is missing, truncated or fails its SHA-256 check."""


class ArtifactError(TierwiseError):
    """A compiled artifact that is tampered, of a newer schema, or built for another program."""


class BudgetExceeded(TierwiseError):
    """Optimization stopped because the next uncached call would pass --budget-usd."""


class AllRungsFailed(TierwiseError):
    """Every tier of a predictor's ladder failed; the message names each failure."""


class LedgerError(TierwiseError):
    """The ledger file cannot be written: the run stops rather than make calls it cannot record."""


class InputError(TierwiseError, ValueError):
    """A compiled program called with an input its signature cannot take (a dict for a `str` field): refused
    before any call is paid for, as `run` refuses it."""


class StoreError(TierwiseError):
    """A disk store (call cache, outcome table) is corrupted or cannot be opened; the message says what
    is kept and how to rebuild."""


def raise_found(error: BaseException, kinds, unless=()) -> None:
    """Raise the first exception of `kinds` (and not of `unless`) in `error`'s chain (its causes and contexts),
    if there is one: what must stop the run even after dspy or a user's code wrapped it."""
    seen = error
    while seen is not None:
        if isinstance(seen, kinds) and not isinstance(seen, unless):
            raise seen
        seen = seen.__cause__ or seen.__context__


def reraise_ours(error: BaseException) -> None:
    """A TierwiseError (a budget stop, a config or store problem) passing through a user's program or metric
    stops the run; any other exception of their own is that request's failure (AllRungsFailed included)."""
    raise_found(error, TierwiseError, unless=AllRungsFailed)


def one_line(error: BaseException | str) -> str:
    """'ValueError: invalid literal ...': the exception's type and the first line of its message (a message
    already written down, a str, keeps its own words)."""
    text = str(error).strip().splitlines()
    if isinstance(error, str):
        return text[0][:200] if text else ""
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__
