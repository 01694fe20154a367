"""A run's results as one pickled list: *packed*.

A run's results usually travel as pickles back to back, one per result (``PayloadWriter.
add_run``), which the caller unpickles one by one: ~0.15 us each, most of a map of trivial
results' cost in the caller. When every result is of an exact type that pickles to one
opcode and unpickles in any process (``PACKABLE``: ints, floats, strings, bytes, bools,
None), the worker pickles them as one list instead, which the caller unpickles in one go.
Such a result can never fail to unpickle on its own, so one failing alone is kept; and where
the control plane keeps outputs one by one (spawned calls, detached maps), ``cut_packed``
cuts the list into each result's own pickle by reading its opcodes, never unpickling.

A packed run's outputs row has ``count`` > 0 and no ``sizes``.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

from .serialization import PICKLE_PROTOCOL, cut_run, load_run

PACKABLE = frozenset({int, float, str, bytes, bool, type(None)})

_PROTO = b"\x80\x05"
_STOP = b"."
_FRAME, _EMPTY_LIST, _MARK, _APPENDS, _APPEND = 0x95, ord("]"), ord("("), ord("e"), ord("a")
_MEMOIZE, _BINGET, _LONG_BINGET = 0x94, ord("h"), ord("j")
# Each packable value's opcodes: a fixed-length argument, or a length (of these many bytes,
# little-endian) then that many bytes.
_FIXED = {ord("N"): 0, 0x88: 0, 0x89: 0, ord("K"): 1, ord("M"): 2, ord("J"): 4, ord("G"): 8}
_SIZED = {  # LONG1, LONG4, SHORT_BINUNICODE, BINUNICODE, BINUNICODE8, SHORT_BINBYTES, ...
    0x8A: 1,
    0x8B: 4,
    0x8C: 1,
    ord("X"): 4,
    0x8D: 8,
    ord("C"): 1,
    ord("B"): 4,
    0x8E: 8,
}


def dump_packed(values: list[Any]) -> bytes | None:
    """``values`` pickled as one list, or None when one of them is not ``PACKABLE``."""
    if not set(map(type, values)) <= PACKABLE:
        return None
    return pickle.dumps(values, protocol=PICKLE_PROTOCOL)


def is_packed(count: int, sizes: Sequence[int]) -> bool:
    """Whether an outputs row of ``count`` and ``sizes`` holds a packed run."""
    return count > 0 and not sizes


def load_results(data: Any, sizes: Sequence[int], count: int) -> list[Any]:
    """The ``count`` results of a run's outputs row, packed or back to back."""
    if not is_packed(count, sizes):
        return load_run(data, (), 0, count)
    values = pickle.loads(data)
    if type(values) is not list or len(values) != count:
        raise ValueError(f"a packed run of {count} results holds {type(values).__name__}")
    return values


def cut_results(data: Any, sizes: Sequence[int], count: int) -> list[bytes]:
    """Each of the ``count`` results of a run's outputs row as its own pickle, never
    unpickled; ValueError when the bytes are not what the row says."""
    if is_packed(count, sizes):
        return cut_packed(data, count)
    return cut_run(data, sizes, 0, count)


def cut_packed(data: Any, count: int) -> list[bytes]:
    """The pickle of each of the ``count`` values of a packed list (``dump_packed``), read
    from its opcodes; ValueError for anything else. A string or bytes object that recurs
    is pickled once and then named by its memo index: its cut is its first one's."""
    view = memoryview(data).cast("B")
    end = view.nbytes - 1  # the STOP opcode
    if view[:2] != _PROTO or end < 3 or view[end] != _STOP[0]:
        raise ValueError("not a packed run: no protocol 5 pickle")
    cuts: list[bytes] = []
    memo: list[bytes | None] = []  # by memo index; None: the list itself
    at, listed, marked = 2, False, False
    while at < end:
        code = view[at]
        if code in _FIXED:
            stop = at + 1 + _FIXED[code]
        elif code in _SIZED:
            width = _SIZED[code]
            stop = at + 1 + width + int.from_bytes(view[at + 1 : at + 1 + width], "little")
        elif code in (_BINGET, _LONG_BINGET) and listed:
            width = 1 if code == _BINGET else 4
            index = int.from_bytes(view[at + 1 : at + 1 + width], "little")
            found = memo[index] if index < len(memo) else None
            if found is None:  # none such, or the list itself
                raise ValueError(f"not a packed run: memo {index} at {at}")
            cuts.append(found)
            at += 1 + width
            continue
        elif code == _MEMOIZE and listed:
            memo.append(cuts[-1] if memo and cuts else None)
            at += 1
            continue
        elif code == _FRAME:
            at += 9
            continue
        elif code == _EMPTY_LIST and not listed:
            listed, at = True, at + 1
            continue
        elif code == _MARK and listed and not marked:
            marked, at = True, at + 1
            continue
        elif code == _APPENDS and marked:
            marked, at = False, at + 1
            continue
        elif code == _APPEND and listed and not marked:
            at += 1
            continue
        else:
            raise ValueError(f"not a packed run: opcode {code:#04x} at {at}")
        if not listed or stop > end:
            raise ValueError(f"not a packed run: a value out of place at {at}")
        cuts.append(_PROTO + view[at:stop].tobytes() + _STOP)
        at = stop
    if at != end or marked:
        raise ValueError("not a packed run: its list is not closed")
    if len(cuts) != count:
        raise ValueError(f"a packed run of {count} results holds {len(cuts)}")
    return cuts
