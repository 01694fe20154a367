"""How a message travels: ``[header, payload_0, payload_1, ...]``, the header a small JSON
array ``[op, field, field, ...]`` holding the fields of a frozen message dataclass in
declaration order, the payload frames opaque bytes forwarded untouched. Messages are
declared with :func:`op` (``client_messages.py``, ``worker_messages.py``); ``protocol.py``
is the contract they make up together."""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar, dataclass_transform

_REGISTRY: dict[str, type[Message]] = {}
# Modules of messages not imported yet (``declare_later``): a decode meeting an op it does not
# know imports them first, so a process that never receives their messages never loads them.
_LATER: list[str] = []


_M = TypeVar("_M")
_FIELDS: dict[type, tuple[str, ...]] = {}
_json_encode = json.JSONEncoder(separators=(",", ":")).encode
_json_decode = json.JSONDecoder().raw_decode  # json.loads, less its per-call checks (3x faster)


class ProtocolError(Exception):
    """Raised when a peer sends a frame sequence this module cannot decode."""


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    op: ClassVar[str] = ""


@dataclass_transform(frozen_default=True)
def op(name: str) -> Callable[[type[_M]], type[_M]]:
    """Class decorator: a frozen slotted message dataclass registered under ``name``."""

    def wrap(cls: type[_M]) -> type[_M]:
        if name in _REGISTRY:
            raise RuntimeError(f"duplicate op {name!r}")
        cls.op = name  # type: ignore[attr-defined]
        made = dataclasses.dataclass(frozen=True, slots=True)(cls)
        _REGISTRY[name] = made  # type: ignore[assignment]
        return made

    return wrap


def encode(msg: Message, payload: Sequence[Any] = ()) -> list[Any]:
    """Frames for ``msg``: the JSON header first, then the payload frames untouched."""
    names = _FIELDS.get(type(msg))
    if names is None:
        names = _FIELDS[type(msg)] = tuple(f.name for f in dataclasses.fields(msg))  # type: ignore[arg-type]
    header = _json_encode([msg.op, *[getattr(msg, n) for n in names]]).encode()
    return [header, *payload]


def decode(frames: Sequence[Any]) -> tuple[Message, list[Any]]:
    """Split ``frames`` into the message and its payload frames (left as received)."""
    if not frames:
        raise ProtocolError("empty message")
    raw = frames[0]
    header = raw.bytes if hasattr(raw, "bytes") else bytes(raw)
    try:
        text = header.decode()
        value, end = _json_decode(text)
        if end != len(text):
            raise ValueError("trailing data after the header")
        op_name, *fields = value
        try:
            cls = _REGISTRY[op_name]
        except KeyError:
            _import_later()
            cls = _REGISTRY[op_name]
        msg = cls(*fields)
    except (ValueError, KeyError, TypeError) as exc:
        raise ProtocolError(f"undecodable header {header[:80]!r}: {exc}") from None
    return msg, list(frames[1:])


def declare_later(module: str) -> None:
    """Messages of ``module`` (a module's full name) are known to ``decode`` and ``ops``
    without its import now: they import it when they first need it."""
    _LATER.append(module)


def _import_later() -> None:
    while _LATER:
        importlib.import_module(_LATER.pop())


def ops() -> dict[str, type[Message]]:
    """Every op, for tests and documentation."""
    _import_later()
    return dict(_REGISTRY)
