"""How a message travels: ``[header, payload_0, payload_1, ...]``, the header a small JSON
array ``[op, field, field, ...]`` holding the fields of a frozen message dataclass in
declaration order, the payload frames opaque bytes forwarded untouched. Messages are
declared with :func:`op` (``client_messages.py``, ``worker_messages.py``); ``protocol.py``
is the contract they make up together."""

from __future__ import annotations

import dataclasses
import importlib
import json
import json.encoder
import operator
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar, dataclass_transform

_REGISTRY: dict[str, type[Message]] = {}
# Modules of messages not imported yet (``declare_later``): a decode meeting an op it does not
# know imports them first, so a process that never receives their messages never loads them.
_LATER: list[str] = []


_M = TypeVar("_M")
# Per message type, what its header is made of: ``(op, field, field, ...)``, read at C speed.
_HEADER_VALUES: dict[type, Callable[[Any], Any]] = {}
_encoder = json.JSONEncoder(separators=(",", ":"))
_json_encode: Callable[[Any], str] = _encoder.encode
# JSONEncoder.encode builds a C encoder on every call: one made once writes the same JSON (a
# header is never circular: no circularity check) in 60% of the time.
if json.encoder.c_make_encoder is not None:  # type: ignore[attr-defined]
    _c_encode = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None,
        _encoder.default,
        json.encoder.encode_basestring_ascii,
        None,
        ":",
        ",",
        False,
        False,
        True,
    )

    def _json_encode(value: Any) -> str:  # type: ignore[no-redef]
        return "".join(_c_encode(value, 0))


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
    values = _HEADER_VALUES.get(type(msg))
    if values is None:
        values = _HEADER_VALUES[type(msg)] = _header_values(type(msg))
    return [_json_encode(values(msg)).encode(), *payload]


def _header_values(cls: type) -> Callable[[Any], Any]:
    """What ``cls``'s header holds, as a tuple (JSON writes it as the array a list is)."""
    names = [f.name for f in dataclasses.fields(cls)]
    if not names:  # an attrgetter of one name gives the value, not a tuple of it
        return lambda msg: (msg.op,)
    return operator.attrgetter("op", *names)


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
