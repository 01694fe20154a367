"""The control plane's refusals: one exception, whose ``kind`` (a ``protocol.ERROR_*`` name)
says which client exception the caller gets, or which HTTP status the REST API answers."""

from __future__ import annotations

import pickle
from typing import Any


class RequestError(Exception):
    """A request the control plane refuses; ``kind`` names the client-side exception."""

    def __init__(self, kind: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.kind = kind
        self.details = details


def rejection(kind: str, message: str) -> bytes:
    """The payload of an input the control plane rejects: the client raises the exception
    named ``kind`` (a ``protocol.ERROR_*``) with ``message``."""
    return pickle.dumps({"kind": kind, "message": message})
