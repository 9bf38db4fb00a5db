"""Request ids."""

from __future__ import annotations

import re
import secrets

__all__ = ["new_request_id", "valid_request_id"]

# What a caller's request id may look like: it is logged, published and sent on to our peers
# in their metadata, where grpc refuses control characters and non-ASCII (the call would die
# with no status at all).
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")


def valid_request_id(value: str | None) -> bool:
    return bool(value) and _VALID_REQUEST_ID.fullmatch(value or "") is not None


def new_request_id() -> str:
    """128 random bits as 32 hex digits, a uuid4's size: ``uuid.uuid4().hex`` costs four times as
    much, and every RPC without a caller id needs one."""
    return secrets.token_hex(16)
