"""A run of inputs as one pickled list of plain values: *packed*.

A map's chunk of small inputs travels as a run (``PayloadWriter.add_run``: each input's
``(args, kwargs)`` pickled on its own, ~0.34 us an input to dump and ~0.36 to load). When
every input of a chunk is exactly one positional argument of a ``PACKABLE`` type (ints,
floats, strings, bytes, bools, None) and no keyword (``f.map(range(n))``), the caller
pickles the list of those values instead (``values_of``, ``dump_values``: ~0.01 us an input)
and the worker unpickles it in one go and calls the function on each value itself.

The control plane still never unpickles inputs. Where it must split a run (a worker asks for
fewer, an input is retried, a lost worker ran one, spawn_map and detached maps keep them one
by one), it cuts the list by where each value's opcodes lie, read once when the run arrives
(``Layout``, which refuses anything but such a list): a piece goes to its worker as a list of
its own values (``Layout.piece``), and an input kept alone as its own ``((x,), {})`` pickle
(``Layout.apart``). The caller pickles with the memo off (``Pickler.fast``), so that no value
names another's bytes (a string that recurs is pickled again), and a value is its opcodes.

A packed run's submit-inputs row has count > 0 and no sizes; its run-inputs row says packed
(``RUN_PACKED``).
"""

from __future__ import annotations

import io
import operator
import pickle
from collections.abc import Sequence
from typing import Any

from .packed import PACKABLE
from .serialization import PICKLE_PROTOCOL, load_run

_PROTO = b"\x80\x05"
_FRAME = 0x95
_LIST = b"]("  # EMPTY_LIST MARK: the list, its values after
_END = b"e."  # APPENDS STOP
_BATCH = 1000  # pickle's values per MARK ... APPENDS: ``e(`` between batches
_NEXT_BATCH = b"e("
# ((x,), {}) around a value's opcodes: TUPLE1 EMPTY_DICT TUPLE2 STOP
_AS_INPUT = b"\x85}\x86."
_first, _second = operator.itemgetter(0), operator.itemgetter(1)
# A value's opcode: the bytes of its fixed argument, or (negative) the bytes of its length
# then that many bytes (little-endian); anything else is not a packed value.
_WIDTH = [-9] * 256
for _code, _width in {
    "N": 0,  # None
    "\x88": 0,  # True
    "\x89": 0,  # False
    "K": 1,  # BININT1
    "M": 2,  # BININT2
    "J": 4,  # BININT
    "G": 8,  # BINFLOAT
    "\x8a": -1,  # LONG1
    "\x8b": -4,  # LONG4
    "\x8c": -1,  # SHORT_BINUNICODE
    "X": -4,  # BINUNICODE
    "\x8d": -8,  # BINUNICODE8
    "C": -1,  # SHORT_BINBYTES
    "B": -4,  # BINBYTES
    "\x8e": -8,  # BINBYTES8
}.items():
    _WIDTH[ord(_code)] = _width


def values_of(inputs: Sequence[tuple[Any, Any]]) -> list[Any] | None:
    """The one positional value of each of ``inputs`` (``(args, kwargs)`` pairs), or None
    unless every one has exactly one, of a ``PACKABLE`` type, and no keywords. Checked a
    pass at a time at C speed (~0.08 us an input in all), never input by input."""
    if len(inputs) < 2 or any(map(_second, inputs)):
        return None
    args = list(map(_first, inputs))
    if set(map(len, args)) != {1}:
        return None
    values = list(map(_first, args))
    if not set(map(type, values)) <= PACKABLE:
        return None
    return values


def dump_values(values: list[Any]) -> bytes | None:
    """``values`` (all ``PACKABLE``) pickled as one list, without the memo; None when that
    takes more than one of pickle's 64 KiB frames (``Layout`` reads one): halve them."""
    out = io.BytesIO()
    pickler = pickle.Pickler(out, protocol=PICKLE_PROTOCOL)
    pickler.fast = True  # no memo: each value is its own opcodes, for ``Layout`` to cut
    pickler.dump(values)
    data = out.getvalue()
    return data if _one_frame(data) else None


def _one_frame(data: bytes) -> bool:
    """Whether ``data`` (a protocol 5 pickle) is one frame, or none."""
    return data[2] != _FRAME or int.from_bytes(data[3:11], "little") == len(data) - 11


def load_values(data: Any, skip: int, count: int) -> list[Any]:
    """Values ``skip`` .. ``skip + count`` of a packed run; ValueError when it is not one."""
    values = pickle.loads(data)
    if type(values) is not list or len(values) < skip + count:
        raise ValueError(f"a packed run of {skip + count} inputs holds {type(values).__name__}")
    if skip or count != len(values):
        return values[skip : skip + count]
    return values


def load_inputs(
    data: Any, buffers: Sequence[Any], skip: int, count: int, packed: bool
) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """The ``(args, kwargs)`` of inputs ``skip`` .. ``skip + count`` of a run, packed or not."""
    if not packed:
        return load_run(data, buffers, skip, count)
    return [((value,), {}) for value in load_values(data, skip, count)]


def _read_batch(raw: bytes, at: int, count: int, bounds: list[int]) -> int:
    """Read where the ``count`` values from ``at`` start into ``bounds``; where they end.
    A batch of values of one fixed-size opcode (ints of one size, floats: a map's values,
    often) is read at once, its opcodes compared in one stride of the bytes (~4x faster)."""
    size = _WIDTH[raw[at]]
    if size >= 0:
        step = 1 + size
        stop = at + count * step
        if raw[at:stop:step] == raw[at : at + 1] * count:
            bounds.extend(range(at, stop, step))
            return stop
    width = _WIDTH
    for _ in range(count):
        bounds.append(at)
        size = width[raw[at]]
        if size >= 0:
            at += 1 + size
        elif size > -9:
            at += 1 - size + int.from_bytes(raw[at + 1 : at + 1 - size], "little")
        else:
            raise ValueError(f"not a packed run: opcode {raw[at]:#04x} at {at}")
    return at


class Layout:
    """Where each value of a packed run of ``count`` lies in its bytes, read from its opcodes
    once (~0.1 us a value); ValueError when ``data`` is not a list that ``dump_values``
    could have made. ``bounds[k]``: where value ``k`` starts (after the ``e(`` between
    batches); ``bounds[count]``: where the last one ends."""

    __slots__ = ("bounds", "count")

    def __init__(self, data: Any, count: int) -> None:
        raw = bytes(data)  # indexing bytes is the fastest way to read them one by one
        if len(raw) < 6 or not _one_frame(raw):
            raise ValueError("not a packed run: not one frame")
        start = 11 if raw[2] == _FRAME else 2
        end = len(raw) - 2
        listed = raw[:2] == _PROTO and raw[start : start + 2] == _LIST and raw[end:] == _END
        if type(count) is not int or count < 2 or not listed:
            raise ValueError("not a packed run: no list of values")
        bounds: list[int] = []
        at = start + 2
        try:
            for first in range(0, count, _BATCH):
                if first:
                    if raw[at : at + 2] != _NEXT_BATCH:
                        raise ValueError(f"not a packed run: no new batch at {at}")
                    at += 2
                at = _read_batch(raw, at, min(_BATCH, count - first), bounds)
        except IndexError:
            raise ValueError("not a packed run: a value past its end") from None
        if at != end:
            raise ValueError(f"not a packed run of {count} values: {at} != {end}")
        bounds.append(at)
        self.bounds = bounds
        self.count = count

    def _end(self, k: int) -> int:
        """Where value ``k`` ends (before the ``e(`` of the next batch, if any)."""
        after = k + 1
        if after < self.count and not after % _BATCH:
            return self.bounds[after] - 2
        return self.bounds[after]

    def piece(self, data: Any, skip: int, count: int) -> Any:
        """Values ``skip`` .. ``skip + count`` as a packed run of their own (the whole run
        as it is): their opcodes as they are, ``e(`` between batches included (an APPENDS
        of its MARK's values, then a new MARK: still the one list)."""
        if not skip and count == self.count:
            return data
        view = memoryview(data)[self.bounds[skip] : self._end(skip + count - 1)]
        return b"".join((_PROTO, _LIST, view, _END))

    def apart(self, data: Any, skip: int, count: int) -> list[bytes]:
        """Inputs ``skip`` .. ``skip + count`` each as its own ``((x,), {})`` pickle, made
        of its value's opcodes, never unpickled."""
        view = memoryview(data)
        bounds = self.bounds
        return [
            b"".join((_PROTO, view[bounds[k] : self._end(k)], _AS_INPUT))
            for k in range(skip, skip + count)
        ]
