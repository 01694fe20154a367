"""The control plane's records of calls (state only, no I/O): ``CallState``, one per
``.map()``, ``.remote()`` or spawned call, and ``Outcomes``, which of a kept call's inputs
settled and how.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .models import OwnerModel
from .owners import unknown_owner


class Outcomes:
    """Which inputs of a spawned call have settled, and how: one byte per input (0: not
    yet; else its attempt + 1, the high bit set for a failure). A ``spawn_map`` of a million
    inputs costs a megabyte here; its results themselves are in the store."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes = b"") -> None:
        self.raw = bytearray(raw)

    def mark(self, index: int, ok: bool, attempt: int) -> None:
        raw = self.raw
        if index >= len(raw):
            raw.extend(bytes(index + 1 - len(raw)))
        raw[index] = (min(max(attempt, 0), 126) + 1) | (0 if ok else 0x80)

    def get(self, index: int) -> tuple[bool, int] | None:
        """(ok, attempt) of a settled input, None for one not settled."""
        if not 0 <= index < len(self.raw) or not self.raw[index]:
            return None
        byte = self.raw[index]
        return not byte & 0x80, (byte & 0x7F) - 1

    def all_settled(self, start: int, stop: int) -> bool:
        return stop <= len(self.raw) and self.raw.find(0, start, stop) < 0

    def settled_in(self, start: int, stop: int) -> bool:
        """Whether any input in ``start`` .. ``stop`` settled."""
        return any(self.raw[max(0, start) : stop])


Waiter = tuple[bytes, int, int, int | None, float | None]  # identity, rid, start, end, deadline


@dataclass(slots=True)
class CallState:
    call_id: str
    pool_id: str
    kind: str  # "map" | "remote" | "spawn"
    owner: bytes  # the client socket identity that receives pushed outputs
    # the pool's name when the call was made (cells rename their pool; a stored call may
    # outlive its pool)
    function: str = ""
    timeout: float = 0.0  # the function's timeout, for the errors its outputs become
    seq: int = 0  # when it was opened, in microseconds since the epoch: the listing's cursor
    owner_info: OwnerModel = field(default_factory=unknown_owner)  # who made it
    parent: tuple[str, int] | None = None  # the input whose code made it, on a worker
    # The three sequences below are an empty tuple until they hold something (``add_child``,
    # a waiter added as a new list): a call kept by the thousand is then one object for the
    # garbage collector to walk, not four.
    children: Sequence[str] = ()  # the calls its inputs made
    total: int | None = None  # known once the caller closed its inputs
    submitted: int = 0
    reported: int = 0
    failed: int = 0
    cancelled: bool = False
    progress: bool = False  # the owner wants ``progress`` messages
    # spawned calls: which inputs settled (their outputs are in the store until fetched)
    outcomes: Outcomes | None = None
    waiters: Sequence[Waiter] = ()  # get-outputs waiting for its outputs
    # detached (from the REST API): its outputs are stored from then on, as a spawned
    # call's; ``delivered`` are the [start, end) ranges whose results went to its caller
    detached: bool = False
    delivered: Sequence[tuple[int, int]] = ()
    # detached, and its caller has not yet said which results it returned: it stays open
    # (the results it gives back are still to be kept)
    detaching: bool = False
    # every input it sent so far was small (``limits.small_inputs``): a map's window holds more
    small: bool = True

    def add_child(self, call_id: str) -> None:
        """A call made by code of one of its inputs (its first makes the list)."""
        if isinstance(self.children, list):
            self.children.append(call_id)
        else:
            self.children = [*self.children, call_id]

    @property
    def keeps_outputs(self) -> bool:
        """Its outputs are stored for ``get-outputs`` (spawned, or detached since)."""
        return self.kind == "spawn" or self.detached

    def delivered_before(self, index: int) -> bool:
        """Input ``index``'s result went to the caller before the call was detached."""
        return any(start <= index < end for start, end in self.delivered)

    @property
    def in_flight(self) -> int:
        return self.submitted - self.reported

    @property
    def finished(self) -> bool:
        return self.cancelled or (self.total is not None and self.reported >= self.total)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.call_id,
            "pool_id": self.pool_id,
            "function": self.function,
            "kind": self.kind,
            "seq": self.seq,
            "created": self.seq / 1e6,
            "total": self.total,
            "submitted": self.submitted,
            "done": self.reported - self.failed,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "finished": self.finished,
            "detached": self.detached,
            "owner": dict(self.owner_info),
            "parent": _input_ref(self.parent),
            "children": list(self.children),
        }


# A finished call as one flat tuple of atomic values (see ``record``)
CallRecord = tuple[Any, ...]


def record(call: CallState) -> CallRecord:
    """``call`` as one flat tuple of atomic values (strings, numbers, bytes): how the
    embedded store keeps a finished call. The garbage collector stops tracking such a tuple
    at its first look (a nested one costs it a look per level), where a ``CallState`` with
    its lists and ``Outcomes`` was walked at every full collection: with a hundred thousand
    spawned calls kept in the caller's own process, those walks were most of a spawn's time.
    No waiters: a finished call's are answered at once."""
    owner = call.owner_info  # a dict would keep the tuple tracked: its values instead
    parent_call, parent_index = call.parent or (None, None)
    return (
        call.call_id,
        call.pool_id,
        call.kind,
        call.owner,
        call.function,
        call.timeout,
        call.seq,
        owner["kernel_id"],
        owner["notebook"],
        owner["name"],
        owner["pid"],
        owner["host"],
        owner.get("app"),
        parent_call,
        parent_index,
        tuple(call.children),  # most calls': the empty tuple, which is never tracked
        call.total,
        call.submitted,
        call.reported,
        call.failed,
        call.cancelled,
        call.progress,
        None if call.outcomes is None else bytes(call.outcomes.raw),
        call.detached,
        tuple(call.delivered),
        call.detaching,
    )


def record_seq(kept: CallRecord) -> int:
    """The ``seq`` of a ``record``."""
    return kept[6]  # type: ignore[no-any-return]


def from_record(kept: CallRecord) -> CallState:
    """The ``CallState`` of a ``record`` (a new one each time: a finished call is read only;
    ``kept`` may go on with fields of its keeper's)."""
    call_id, pool_id, kind, owner, function, timeout, seq = kept[:7]
    kernel_id, notebook, name, pid, host, app = kept[7:13]
    parent_call, parent_index, children = kept[13:16]
    total, submitted, reported, failed, cancelled, progress, outcomes = kept[16:23]
    detached, delivered, detaching = kept[23:26]
    return CallState(
        call_id,
        pool_id,
        kind,
        owner,
        function,
        timeout,
        seq,
        {
            "kernel_id": kernel_id,
            "notebook": notebook,
            "name": name,
            "pid": pid,
            "host": host,
            "app": app,
        },
        None if parent_call is None else (parent_call, parent_index),
        children,
        total,
        submitted,
        reported,
        failed,
        cancelled,
        progress,
        None if outcomes is None else Outcomes(outcomes),
        (),
        detached,
        delivered,
        detaching,
    )


def _input_ref(key: tuple[str, int] | None) -> dict[str, Any] | None:
    return None if key is None else {"call_id": key[0], "index": key[1]}
