"""``nbscale.Retries``: Modal's retry policy, validated the same way."""

from __future__ import annotations

from dataclasses import dataclass

from nbscale_server.queue import RetryPolicy
from nbscale_server.values import is_int

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
        self.policy()  # the policy's own checks, with Modal's ranges

    def policy(self) -> RetryPolicy:
        """The policy the control plane applies."""
        try:
            return RetryPolicy(
                self.max_retries, self.backoff_coefficient, self.initial_delay, self.max_delay
            )
        except ValueError as exc:
            raise InvalidError(str(exc)) from None

    @classmethod
    def parse(cls, value: int | Retries | None) -> Retries | None:
        """Modal's shorthand: an int N is N retries with a fixed 1 s delay."""
        if value is None or isinstance(value, Retries):
            return value
        if not is_int(value):
            raise InvalidError(f"retries must be an int or nbscale.Retries, got {value!r}")
        return cls(max_retries=value, backoff_coefficient=1.0, initial_delay=1.0)
