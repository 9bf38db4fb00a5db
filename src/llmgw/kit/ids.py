"""Request ids."""

from __future__ import annotations

import secrets

__all__ = ["new_request_id"]


def new_request_id() -> str:
    """128 random bits as 32 hex digits, a uuid4's size: ``uuid.uuid4().hex`` costs four times as
    much, and every RPC without a caller id needs one."""
    return secrets.token_hex(16)
