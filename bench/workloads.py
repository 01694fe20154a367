"""Workload functions shared by every peer.

They live in a plain module (not in `run.py`) so that every peer's worker processes import them
by name, the same way for all of them.
"""

from __future__ import annotations

import time
from typing import Any, TypeVar

T = TypeVar("T")


def noop(x: T) -> T:
    """Return the input unchanged (W1, W2, W5)."""
    return x


def first_of_its_pool(x: T) -> T:
    """Return the input unchanged: the function a W5-scale child calls once 8 workers serve
    ``noop``, its own pool's first worker (``nbscale`` keeps a pool per function)."""
    return x


def sleep10ms(x: T) -> T:
    """Sleep 10 ms, then return the input (W3)."""
    time.sleep(0.01)
    return x


def array_nbytes(a: Any) -> int:
    """Return the size of a numpy array in bytes (W4)."""
    return int(a.nbytes)
