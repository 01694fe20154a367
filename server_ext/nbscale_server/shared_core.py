"""Named and ephemeral Dicts and Queues, as the control plane holds them: the decisions,
without I/O (``shared_objects.py`` answers the requests, keeps them in the store, and
times the waits out).

Keys and values are bytes pickled by the client; the control plane never unpickles them.
A Dict compares keys by their pickled bytes (Modal hashes them), so ``1`` and ``1.0`` are
different keys here. A Queue is a set of FIFO partitions, the default one being ``""``;
a ``get`` that finds its partition empty waits, first come first served, until a ``put``
serves it or its deadline passes.

Limits are Modal's: a Dict value up to 100 MiB; a Queue item up to 1 MiB, up to 5,000
items per partition and 100,000 partitions, partition keys of 1 to 64 bytes.
"""

from __future__ import annotations

import collections
import heapq
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DICT = "dict"
QUEUE = "queue"
KINDS = (DICT, QUEUE)
DICT_VALUE_MAX = 100 << 20
QUEUE_ITEM_MAX = 1 << 20
PARTITION_ITEMS_MAX = 5_000
PARTITIONS_MAX = 100_000
PARTITION_KEY_MAX = 64
PARTITION_TTL_MAX = 24 * 3600  # Modal's: a partition is cleared a day after its last put
NAME_MAX = 64
_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


class SharedError(Exception):
    """A request refused for its content: ``kind`` is ``protocol.ERROR_*``'s name."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def check_name(kind: str, name: str) -> None:
    """Modal's rule: letters, digits, ``-``, ``.`` and ``_``, up to 64 characters."""
    if not isinstance(name, str) or not name or len(name) > NAME_MAX or not _NAME.match(name):
        raise SharedError(
            "InvalidError",
            f"{name!r} is not a valid {kind} name: use up to {NAME_MAX} letters, digits, "
            "'-', '.' or '_'",
        )


def new_id(kind: str) -> str:
    return f"{'di' if kind == DICT else 'qu'}-{secrets.token_hex(8)}"


def mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


@dataclass(slots=True)
class SharedDict:
    object_id: str
    name: str | None  # None: ephemeral
    entries: dict[bytes, bytes] = field(default_factory=dict)
    owner: bytes = b""  # an ephemeral one's creator: deleted when it is gone

    def check_values(self, values: list[bytes]) -> None:
        for value in values:
            if len(value) > DICT_VALUE_MAX:
                raise SharedError(
                    "InvalidError",
                    f"a value of {mib(len(value))} is over the Dict limit of {mib(DICT_VALUE_MAX)}",
                )


@dataclass(slots=True)
class Getter:
    """A ``get`` waiting on an empty partition: ``reply`` takes the items it got."""

    partition: str
    n: int
    deadline: float | None
    reply: Callable[[list[Item]], None]
    caller: bytes
    rid: int
    done: bool = False


@dataclass(slots=True)
class Item:
    seq: int
    value: bytes


@dataclass(slots=True, eq=False)  # by identity: a set holds those with gets waiting
class SharedQueue:
    object_id: str
    name: str | None
    partitions: dict[str, collections.deque[Item]] = field(default_factory=dict)
    getters: list[Getter] = field(default_factory=list)
    next_seq: int = 1
    owner: bytes = b""

    def check_put(self, partition: str, values: list[bytes]) -> bool:
        """Whether ``values`` fit (False: the partition is full); bad input raises."""
        check_partition(partition)
        for value in values:
            if len(value) > QUEUE_ITEM_MAX:
                raise SharedError(
                    "InvalidError",
                    f"an item of {mib(len(value))} is over the Queue limit of "
                    f"{mib(QUEUE_ITEM_MAX)}",
                )
        if len(values) > PARTITION_ITEMS_MAX:
            raise SharedError(
                "InvalidError",
                f"{len(values):,} items at once: a partition holds up to {PARTITION_ITEMS_MAX:,}",
            )
        if partition not in self.partitions and len(self.partitions) >= PARTITIONS_MAX:
            raise SharedError(
                "ResourceExhaustedError", f"the queue has {PARTITIONS_MAX:,} partitions already"
            )
        held = len(self.partitions.get(partition, ()))
        return held + len(values) <= PARTITION_ITEMS_MAX

    def put(
        self, partition: str, values: list[bytes]
    ) -> tuple[list[Item], list[tuple[Getter, list[Item]]]]:
        """Append ``values``; the items made, and the waiting getters now served, each with
        the items it took, oldest getter first."""
        part = self.partitions.setdefault(partition, collections.deque())
        made = []
        for value in values:
            item = Item(self.next_seq, value)
            self.next_seq += 1
            part.append(item)
            made.append(item)
        return made, self._serve(partition)

    def unget(self, partition: str, items: list[Item]) -> list[tuple[Getter, list[Item]]]:
        """Items a withdrawn get was given, back at the head of ``partition`` with their
        sequence numbers; the waiting getters now served, as :meth:`put`."""
        self.put_back(partition, items)
        self.next_seq = max([self.next_seq] + [i.seq + 1 for i in items])
        return self._serve(partition)

    def _serve(self, partition: str) -> list[tuple[Getter, list[Item]]]:
        part = self.partitions.get(partition, collections.deque())
        served = []
        for getter in self.getters:
            if getter.partition == partition and not getter.done and part:
                getter.done = True
                served.append((getter, self.take(partition, getter.n)))
                part = self.partitions.get(partition, collections.deque())
        self.getters = [g for g in self.getters if not g.done]
        return served

    def restore(self, partition: str, seq: int, value: bytes) -> None:
        """An item read back from the store, in order."""
        self.partitions.setdefault(partition, collections.deque()).append(Item(seq, value))
        self.next_seq = max(self.next_seq, seq + 1)

    def take(self, partition: str, n: int) -> list[Item]:
        part = self.partitions.get(partition)
        if not part:
            return []
        taken = [part.popleft() for _ in range(min(n, len(part)))]
        if not part:
            del self.partitions[partition]
        return taken

    def put_back(self, partition: str, items: list[Item]) -> None:
        """Undo a ``take`` (the store could not keep it)."""
        part = self.partitions.setdefault(partition, collections.deque())
        part.extendleft(reversed(items))

    def remove(self, partition: str, items: list[Item]) -> None:
        """Undo a ``put`` (the store could not keep it)."""
        part = self.partitions.get(partition)
        if part is not None:
            seqs = {i.seq for i in items}
            kept = [i for i in part if i.seq not in seqs]
            part.clear()
            part.extend(kept)
            if not part:
                del self.partitions[partition]

    def length(self, partition: str | None) -> int:
        """Items in ``partition``, or in every partition (None)."""
        if partition is None:
            return sum(len(p) for p in self.partitions.values())
        return len(self.partitions.get(partition, ()))

    def expired(self, now: float) -> list[Getter]:
        """Getters whose deadline passed, no longer waiting."""
        gone = [g for g in self.getters if g.deadline is not None and g.deadline <= now]
        for getter in gone:
            getter.done = True
        self.getters = [g for g in self.getters if not g.done]
        return gone

    def drop_getters(self, match: Callable[[Getter], bool]) -> list[Getter]:
        dropped = [g for g in self.getters if match(g)]
        for getter in dropped:
            getter.done = True
        self.getters = [g for g in self.getters if not g.done]
        return dropped


def check_partition_ttl(ttl: Any) -> float:
    """A ``partition_ttl`` given to a put, in seconds (None: Modal's default, a day)."""
    if ttl is None:
        return float(PARTITION_TTL_MAX)
    if type(ttl) not in (int, float) or not 0 < ttl <= PARTITION_TTL_MAX:
        raise SharedError(
            "InvalidError",
            f"partition_ttl is seconds, over 0 and at most {PARTITION_TTL_MAX:,}, not {ttl!r}",
        )
    return float(ttl)


class PartitionExpiry:
    """When each Queue partition is due to be cleared: ``partition_ttl`` seconds after its
    last put. A heap holds one entry per partition (more only after a put shortened its
    time); a put that moves the time later updates only the dict, and the heap's entry,
    found early, is pushed back to the new time."""

    def __init__(self) -> None:
        self._due: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, str, str]] = []

    def touch(self, object_id: str, partition: str, at: float) -> None:
        key = (object_id, partition)
        if key not in self._due or at < self._due[key]:
            heapq.heappush(self._heap, (at, object_id, partition))
        self._due[key] = at

    def ensure(self, object_id: str, partition: str, at: float) -> None:
        """``touch``, unless the partition has a time already."""
        if (object_id, partition) not in self._due:
            self.touch(object_id, partition, at)

    def due(self, now: float) -> list[tuple[str, str]]:
        """The (object id, partition) pairs whose time has come, now forgotten."""
        found = []
        while self._heap and self._heap[0][0] <= now:
            at, object_id, partition = heapq.heappop(self._heap)
            key = (object_id, partition)
            current = self._due.get(key)
            if current is None or current < at:  # forgotten, or an older entry
                continue
            if current > at:  # put since: wait for the new time
                heapq.heappush(self._heap, (current, object_id, partition))
                continue
            del self._due[key]
            found.append(key)
        return found


def ungot_items(q: SharedQueue, partition: str, seqs: Any, values: list[bytes]) -> list[Item]:
    """The items of an ``unget``: each value with the sequence number its get was given,
    one that is no longer in the partition and was issued by this queue."""
    if not isinstance(seqs, list) or len(seqs) != len(values):
        raise SharedError("InvalidError", "unget: one sequence number per item")
    held = {i.seq for i in q.partitions.get(partition, ())}
    for seq in seqs:
        if type(seq) is not int or not 0 < seq < q.next_seq or seq in held:
            raise SharedError("InvalidError", f"unget: item {seq!r} was not taken from here")
    q.check_put(partition, values)
    return [Item(seq, value) for seq, value in zip(seqs, values, strict=True)]


def check_partition(partition: Any) -> None:
    if not isinstance(partition, str):
        raise SharedError("InvalidError", f"a partition key is a string, not {partition!r}")
    if len(partition.encode()) > PARTITION_KEY_MAX:
        raise SharedError(
            "InvalidError",
            f"partition key {partition[:80]!r} is over {PARTITION_KEY_MAX} bytes",
        )


Shared = SharedDict | SharedQueue


class Registry:
    """Every Dict and Queue, by id; the named ones also by (kind, name)."""

    def __init__(self) -> None:
        self.objects: dict[str, Shared] = {}
        self.names: dict[tuple[str, str], str] = {}

    def add(self, obj: Shared) -> None:
        self.objects[obj.object_id] = obj
        if obj.name is not None:
            self.names[(kind_of(obj), obj.name)] = obj.object_id

    def named(self, kind: str, name: str) -> Shared | None:
        object_id = self.names.get((kind, name))
        return self.objects.get(object_id) if object_id is not None else None

    def make(self, kind: str, name: str | None, owner: bytes = b"") -> Shared:
        object_id = new_id(kind)
        obj: Shared
        if kind == DICT:
            obj = SharedDict(object_id, name, owner=owner)
        else:
            obj = SharedQueue(object_id, name, owner=owner)
        self.add(obj)
        return obj

    def remove(self, obj: Shared) -> None:
        self.objects.pop(obj.object_id, None)
        if obj.name is not None:
            self.names.pop((kind_of(obj), obj.name), None)

    def get(self, kind: str, object_id: str, label: str) -> Shared:
        """The object of ``object_id``, or a NotFoundError naming ``label``."""
        obj = self.objects.get(object_id)
        if obj is None or kind_of(obj) != kind:
            raise SharedError(
                "NotFoundError",
                f"{kind_label(kind)} {label} does not exist (deleted, or an ephemeral one "
                "whose context ended)",
            )
        return obj

    def ephemeral_of(self, owner: bytes) -> list[Shared]:
        return [o for o in self.objects.values() if o.name is None and o.owner == owner]


def kind_of(obj: Shared) -> str:
    return DICT if isinstance(obj, SharedDict) else QUEUE


def kind_label(kind: str) -> str:
    return "Dict" if kind == DICT else "Queue"
