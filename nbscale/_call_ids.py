"""Call ids: ``fc-`` + 12 random hex digits of this process + a counter."""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Iterator

_call_ids: tuple[int, str, Iterator[int]] = (-1, "", iter(()))


def new_call_id() -> str:
    """A call id unique across the processes that share a control plane, and cheaper than a
    uuid4 per call."""
    global _call_ids
    pid, prefix, counter = _call_ids
    if pid != os.getpid():  # first call, or a forked child: a prefix of its own
        pid, prefix, counter = os.getpid(), secrets.token_hex(6), itertools.count()
        _call_ids = (pid, prefix, counter)
    return f"fc-{prefix}{next(counter):08x}"
