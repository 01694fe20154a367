"""A launcher's failure, apart from ``base.py`` so that what must load light (the Docker
engine's address, for the zygote started at ``import nbscale``) can raise it."""

from __future__ import annotations


class LaunchFailed(Exception):
    """Raised by a launcher that could not start a worker; ``lasting`` when trying again
    cannot help (the host has no GPU of the kind asked for): the pool's waiting inputs then
    fail at once instead of after the launch backoff."""

    def __init__(self, message: str, lasting: bool = False) -> None:
        super().__init__(message)
        self.lasting = lasting
