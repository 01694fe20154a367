"""``nbscale.Retries``: Modal's retry policy, validated the same way."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .exceptions import InvalidError


@dataclass(frozen=True)
class Retries:
    """Retry failed inputs up to ``max_retries`` times, waiting
    ``initial_delay * backoff_coefficient ** (n - 1)`` seconds (at most ``max_delay``)
    before retry ``n``. Each input retries independently; the timeout restarts each attempt."""

    max_retries: int
    backoff_coefficient: float = 2.0
    initial_delay: float = 1.0
    max_delay: float = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise InvalidError(f"max_retries must be an int >= 0, got {self.max_retries!r}")
        if not 1.0 <= self.backoff_coefficient <= 10.0:
            raise InvalidError(
                f"backoff_coefficient must be between 1.0 and 10.0, got {self.backoff_coefficient}"
            )
        if not 0.0 <= self.initial_delay <= 60.0:
            raise InvalidError(
                f"initial_delay must be between 0 and 60 s, got {self.initial_delay}"
            )
        if not 1.0 <= self.max_delay <= 60.0:
            raise InvalidError(f"max_delay must be between 1 and 60 s, got {self.max_delay}")

    @classmethod
    def parse(cls, value: int | Retries | None) -> Retries | None:
        """Modal's shorthand: an int N is N retries with a fixed 1 s delay."""
        if value is None or isinstance(value, Retries):
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidError(f"retries must be an int or nbscale.Retries, got {value!r}")
        return cls(max_retries=value, backoff_coefficient=1.0, initial_delay=1.0)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
