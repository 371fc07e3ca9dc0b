"""Real tokenizers available offline: tiktoken's encodings and the tokenizer files litellm ships."""

from __future__ import annotations

import functools
import glob
import os
from pathlib import Path


def _litellm_tokenizer_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("litellm")
    return Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"


@functools.cache
def encoders() -> dict:
    """name -> encode(text) -> list of ids, for every tokenizer that loads without the network."""
    folder = _litellm_tokenizer_dir()
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(folder))  # litellm's cached encodings; no download
    out = {}
    import tiktoken

    for name in ("cl100k_base", "o200k_base", "p50k_base"):
        try:
            out[name] = tiktoken.get_encoding(name).encode
        except Exception:  # noqa: BLE001 - not cached here: skip it rather than reach the network
            pass
    from tokenizers import Tokenizer

    for path in sorted(glob.glob(str(folder / "*_tokenizer.json"))):
        tok = Tokenizer.from_file(path)
        out[Path(path).stem] = lambda text, tok=tok: tok.encode(text, add_special_tokens=False).ids
    assert len(out) >= 3, f"expected offline tokenizers under {folder}"
    return out
