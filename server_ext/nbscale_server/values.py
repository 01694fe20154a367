"""What a value must be to count as a number where nbscale takes one, for the client's and the
control plane's checks alike. ``bool`` is an ``int`` to Python, never a count to nbscale
(``max_retries=True`` is a slip). Standard library only: the client imports it."""

from __future__ import annotations

import math


def is_int(value: object) -> bool:
    """An ``int``, not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_count(value: object) -> bool:
    """An ``int`` >= 0, not a ``bool``: an index, a total, a number of retries."""
    return is_int(value) and value >= 0  # type: ignore[operator]


def is_number(value: object) -> bool:
    """A finite ``int`` or ``float``, not a ``bool`` (NaN and the infinities are no
    setting's value)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
