"""Opaque prefixed identifiers (DESIGN section 3)."""

from __future__ import annotations

import re
import secrets

# \Z, not $: `$` also matches before a trailing newline, which would let "order-1\n" through.
RESOURCE_ID = re.compile(r"\A[A-Za-z0-9_\-.:]{1,128}\Z")
THREAD_PREFIX = "thrd_"


def new_id(prefix: str) -> str:
    """A fresh random id such as `msg_5f0c...` (12 random bytes as hex)."""
    return f"{prefix}_{secrets.token_hex(12)}"


def new_ids(prefix: str, count: int) -> list[str]:
    """`count` fresh ids as `new_id` makes them, from one read of the system's randomness."""
    random = secrets.token_hex(12 * count)
    return [f"{prefix}_{random[i : i + 24]}" for i in range(0, 24 * count, 24)]


def thread_id_for(resource_id: str) -> str:
    """The predictable id of the thread about `resource_id`."""
    return THREAD_PREFIX + resource_id


def kind_of(subscriber_id: str) -> str | None:
    """The subscriber type an id names (`user`, `contact`, `api_key`), or None."""
    if subscriber_id.startswith("usr_"):
        return "user"
    if subscriber_id.startswith("cnt_"):
        return "contact"
    if subscriber_id.startswith("org_"):
        return "api_key"
    return None
