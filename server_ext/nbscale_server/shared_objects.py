"""The room of Dicts and Queues (``nbscale.Dict``, ``nbscale.Queue``): the requests that
reach them, their waits and the store that keeps them; the decisions are in
``shared_core.py``.

Every caller of this control plane (kernels, scripts, code on its workers) sees the same
objects. Named ones are kept in the store: with the Jupyter server's SQLite file they
survive a restart, and a change is answered once it is written (a full disk refuses it,
with the file's path and the reason, and leaves the object as it was). Ephemeral ones live
in memory, until their context ends or their creator is gone. A ``get`` on an empty
partition is answered when an item comes or at its deadline (checked each tick), never by
the caller polling.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from nbscale_runtime import protocol
from nbscale_runtime.protocol import ERROR_CONTROL_PLANE, ERROR_INVALID, ERROR_NOT_FOUND

from .errors import RequestError
from .outbox import Outbox
from .shared_core import (
    DICT,
    KINDS,
    PARTITION_TTL_MAX,
    QUEUE,
    Getter,
    Item,
    PartitionExpiry,
    Registry,
    Shared,
    SharedDict,
    SharedError,
    SharedQueue,
    check_name,
    check_partition_ttl,
    kind_label,
    kind_of,
    ungot_items,
)
from .store import SpawnStore
from .store_writer import Step

Answer = tuple[Any, Any] | None


def _bytes(frame: Any) -> bytes:
    return bytes(frame.buffer if hasattr(frame, "buffer") else frame)


class SharedObjects:
    def __init__(self, outbox: Outbox, store: SpawnStore, clock: Callable[[], float]) -> None:
        self.outbox = outbox
        self.store = store
        self.clock = clock
        self.registry = Registry()
        self._waiting: set[SharedQueue] = set()  # queues with gets waiting
        self.expiry = PartitionExpiry()
        self._load()

    def _load(self) -> None:
        read = self.store.read
        for object_id, kind, name in read(
            "the named Dicts and Queues", "SELECT object_id, kind, name FROM shared_objects"
        ):
            self.registry.add(
                SharedDict(object_id, name) if kind == DICT else SharedQueue(object_id, name)
            )
        for object_id, key, value in read(
            "the Dicts' entries", "SELECT object_id, key, value FROM dict_entries ORDER BY rowid"
        ):
            obj = self.registry.objects.get(object_id)
            if isinstance(obj, SharedDict):
                obj.entries[bytes(key)] = bytes(value)
        for object_id, partition, seq, value in read(
            "the Queues' items",
            "SELECT object_id, partition, seq, value FROM queue_items ORDER BY object_id, seq",
        ):
            queue = self.registry.objects.get(object_id)
            if isinstance(queue, SharedQueue):
                queue.restore(partition, seq, bytes(value))
                # a partition's time is not kept: it starts again, at the longest
                self.expiry.touch(object_id, partition, self.clock() + PARTITION_TTL_MAX)

    # --- what the tick and the API call -------------------------------------------------

    def expire(self) -> None:
        """Answer the gets whose timeout passed: no item. Clear the partitions whose
        ``partition_ttl`` has passed since their last put."""
        now = self.clock()
        for q in list(self._waiting):
            for getter in q.expired(now):
                getter.reply([])
            if not q.getters:
                self._waiting.discard(q)
        for object_id, partition in self.expiry.due(now):
            queue = self.registry.objects.get(object_id)
            if isinstance(queue, SharedQueue) and partition in queue.partitions:
                self._clear_expired(queue, partition)

    def _clear_expired(self, q: SharedQueue, partition: str) -> None:
        held = list(q.partitions.pop(partition))
        if q.name is None:
            return

        def then(error: str | None) -> None:  # not kept: the items stay, until the next try
            if error is not None and partition not in q.partitions:
                q.put_back(partition, held)
                self.expiry.touch(q.object_id, partition, self.clock() + 60)

        step: Step = ("queue-clear-partition", (q.object_id, partition))
        self.store.keep([step], then, f"the expired partition of Queue {q.name!r}")

    def caller_gone(self, identity: bytes) -> None:
        """A caller is gone: its waits end, its ephemeral objects are deleted."""
        for q in self._waiting:
            q.drop_getters(lambda g: g.caller == identity)
        for obj in self.registry.ephemeral_of(identity):
            self.registry.remove(obj)

    # --- requests -----------------------------------------------------------------------

    def on_lookup(self, identity: bytes, msg: protocol.ObjectLookup, payload: list[Any]) -> Answer:
        kind = _kind(msg.kind)
        name = msg.name
        if name is None:  # ephemeral
            return {"id": self.registry.make(kind, None, owner=identity).object_id}, ()
        _check(lambda: check_name(kind, name))
        found = self.registry.named(kind, name)
        if found is not None:
            return {"id": found.object_id}, ()
        if not msg.create_if_missing:
            raise RequestError(
                ERROR_NOT_FOUND,
                f"{kind_label(kind)} {msg.name!r} not found: create it with "
                f"{kind_label(kind)}.from_name({msg.name!r}, create_if_missing=True)",
            )
        obj = self.registry.make(kind, msg.name)
        step: Step = ("object-add", (obj.object_id, kind, msg.name, time.time()))
        reply = self._replier(identity, msg.rid)
        self._keep(
            obj,
            [step],
            lambda: reply({"id": obj.object_id}),
            lambda: self.registry.remove(obj),
            identity,
            msg.rid,
        )
        return None

    def on_delete(self, identity: bytes, msg: protocol.ObjectDelete, payload: list[Any]) -> Answer:
        kind = _kind(msg.kind)
        if msg.object_id:
            label = msg.name or msg.object_id
            obj = _check(lambda: self.registry.get(kind, msg.object_id or "", label))
        else:
            _check(lambda: check_name(kind, msg.name or ""))
            found = self.registry.named(kind, msg.name or "")
            if found is None:
                raise RequestError(ERROR_NOT_FOUND, f"{kind_label(kind)} {msg.name!r} not found")
            obj = found
        self.registry.remove(obj)
        if isinstance(obj, SharedQueue):
            for getter in obj.drop_getters(lambda g: True):
                self.outbox.refuse(
                    getter.caller,
                    getter.rid,
                    RequestError(ERROR_NOT_FOUND, "the Queue was deleted"),
                )
        clear = "dict-clear" if kind == DICT else "queue-clear"
        steps: list[Step] = [("object-drop", (obj.object_id,)), (clear, (obj.object_id,))]
        reply = self._replier(identity, msg.rid)
        self._keep(
            obj,
            steps,
            lambda: reply({"deleted": True}),
            lambda: self.registry.add(obj),
            identity,
            msg.rid,
        )
        return None

    def on_dict(self, identity: bytes, msg: protocol.DictRequest, payload: list[Any]) -> Answer:
        label = msg.args.get("label", msg.object_id)
        d = _check(lambda: self.registry.get(DICT, msg.object_id, label))
        assert isinstance(d, SharedDict)
        frames = [_bytes(f) for f in payload]
        entries = d.entries
        action = msg.action
        if action in ("get", "contains"):
            value = entries.get(frames[0])
            found = value is not None
            return {"found": found}, ([value] if found and action == "get" else [])
        if action == "len":
            return {"len": len(entries)}, ()
        if action in ("keys", "values", "items"):
            out: list[bytes] = []
            for key, value in entries.items():
                out += [key, value] if action == "items" else [key if action == "keys" else value]
            return {"count": len(entries)}, out
        if action == "info":
            return {"name": d.name, "id": d.object_id}, ()
        reply = self._replier(identity, msg.rid)
        if action == "clear":
            before = dict(entries)
            entries.clear()
            self._keep(
                d,
                [("dict-clear", (d.object_id,))],
                lambda: reply({}),
                lambda: entries.update(before),
                identity,
                msg.rid,
            )
            return None
        if action == "pop":
            value = entries.pop(frames[0], None)
            if value is None:
                return {"found": False}, ()
            key, popped = frames[0], value
            steps: list[Step] = [("dict-unset", (d.object_id, key))]
            done = lambda: reply({"found": True}, [popped])  # noqa: E731
            self._keep(d, steps, done, lambda: entries.update({key: popped}), identity, msg.rid)
            return None
        if action not in ("put", "update"):
            raise RequestError(ERROR_INVALID, f"no Dict action {action!r}")
        pairs = list(zip(frames[::2], frames[1::2], strict=True))
        _check(lambda: d.check_values([v for _, v in pairs]))
        if action == "put" and msg.args.get("skip_if_exists") and pairs[0][0] in entries:
            return {"added": False}, ()
        old = {k: entries[k] for k, _ in pairs if k in entries}
        for key, value in pairs:
            entries[key] = value

        def undo() -> None:
            for key, _ in pairs:
                entries.pop(key, None)
            entries.update(old)

        steps = [("dict-set", (d.object_id, k, v)) for k, v in pairs]
        self._keep(d, steps, lambda: reply({"added": True}), undo, identity, msg.rid)
        return None

    def on_queue(self, identity: bytes, msg: protocol.QueueRequest, payload: list[Any]) -> Answer:
        label = msg.args.get("label", msg.object_id)
        q = _check(lambda: self.registry.get(QUEUE, msg.object_id, label))
        assert isinstance(q, SharedQueue)
        args = msg.args
        partition = args.get("partition") or ""
        action = msg.action
        if action == "len":
            return {"len": q.length(None if args.get("total") else partition)}, ()
        if action == "iterate":  # the items after ``after``, in place
            after = int(args.get("after", 0))
            part = q.partitions.get(partition, ())
            items = [i for i in part if i.seq > after][: int(args.get("limit", 100))]
            return {"last": items[-1].seq if items else after}, [i.value for i in items]
        if action == "cancel-get":
            q.drop_getters(lambda g: g.caller == identity and g.rid == args.get("rid"))
            return {}, ()
        reply = self._replier(identity, msg.rid)
        if action == "clear":
            held = {p: list(items) for p, items in q.partitions.items()}
            if args.get("all"):
                q.partitions.clear()
                step: Step = ("queue-clear", (q.object_id,))
            else:
                q.partitions.pop(partition, None)
                step = ("queue-clear-partition", (q.object_id, partition))

            def restore() -> None:
                for p, items in held.items():
                    if p not in q.partitions:
                        q.put_back(p, items)

            self._keep(q, [step], lambda: reply({}), restore, identity, msg.rid)
            return None
        if action == "put":
            values = [_bytes(f) for f in payload]
            ttl = _check(lambda: check_partition_ttl(args.get("partition_ttl")))
            if not _check(lambda: q.check_put(partition, values)):
                return {"full": True}, ()
            made, served = q.put(partition, values)
            self.expiry.touch(q.object_id, partition, self.clock() + ttl)
            answer = lambda: reply({"full": False})  # noqa: E731
            self._keep_added(q, partition, made, served, answer, identity, msg.rid)
            return None
        if action == "unget":  # a withdrawn get's items, come back after it was answered
            values = [_bytes(f) for f in payload]
            items = _check(lambda: ungot_items(q, partition, args.get("seqs"), values))
            served = q.unget(partition, items)
            self.expiry.ensure(q.object_id, partition, self.clock() + PARTITION_TTL_MAX)
            self._keep_added(q, partition, items, served, lambda: reply({}), identity, msg.rid)
            return None
        if action != "get":
            raise RequestError(ERROR_INVALID, f"no Queue action {action!r}")
        n = max(1, int(args.get("n", 1)))
        timeout = args.get("timeout")
        getter = Getter(partition, n, None, lambda got: None, identity, msg.rid)
        getter.reply = lambda got: self._give(q, getter, got, reply)
        taken = q.take(partition, n)
        if taken:
            getter.reply(taken)
        elif timeout is not None and timeout <= 0:
            reply({"count": 0})
        else:
            getter.deadline = None if timeout is None else self.clock() + float(timeout)
            q.getters.append(getter)
            self._waiting.add(q)
        return None

    # --- helpers ------------------------------------------------------------------------

    def _keep_added(
        self,
        q: SharedQueue,
        partition: str,
        added: list[Item],
        served: list[tuple[Getter, list[Item]]],
        answer: Callable[[], None],
        identity: bytes,
        rid: int,
    ) -> None:
        """Keep items put into ``partition``, then ``answer`` and hand the getters they serve
        their items; when they cannot be kept, take them out and refuse all of those."""
        steps: list[Step] = [("queue-put", (q.object_id, partition, i.seq, i.value)) for i in added]

        def done() -> None:
            answer()
            for getter, got in served:
                getter.reply(got)

        def undo() -> None:
            q.remove(partition, added)
            for getter, _ in served:
                self.outbox.refuse(
                    getter.caller,
                    getter.rid,
                    RequestError(ERROR_CONTROL_PLANE, "the item it was to get could not be kept"),
                )

        self._keep(q, steps, done, undo, identity, rid)

    def _give(
        self, q: SharedQueue, getter: Getter, got: list[Item], reply: Callable[..., None]
    ) -> None:
        """Answer a get with ``got`` once its taking is kept (none: its timeout passed). The
        answer names each item's sequence number, for an ``unget`` should the get have been
        withdrawn meanwhile."""
        if not got:
            reply({"count": 0})
            return
        steps: list[Step] = [("queue-take", (q.object_id, getter.partition, i.seq)) for i in got]
        answer = {"count": len(got), "seqs": [i.seq for i in got]}
        done = lambda: reply(answer, [i.value for i in got])  # noqa: E731
        self._keep(
            q, steps, done, lambda: q.put_back(getter.partition, got), getter.caller, getter.rid
        )

    def _replier(self, identity: bytes, rid: int) -> Callable[..., None]:
        def reply(value: Any, frames: Any = ()) -> None:
            self.outbox.reply(identity, rid, value, frames)

        return reply

    def _keep(
        self,
        obj: Shared,
        steps: list[Step],
        done: Callable[[], None],
        undo: Callable[[], Any],
        identity: bytes,
        rid: int,
    ) -> None:
        """Answer with ``done`` once ``steps`` are kept (an ephemeral object's, at once); when
        they cannot be, ``undo`` the change in memory and refuse the request."""
        if obj.name is None:
            done()
            return

        def then(error: str | None) -> None:
            if error is None:
                done()
                return
            undo()
            message = f"{error}; the {kind_label(kind_of(obj))} {obj.name!r} was left as it was"
            self.outbox.refuse(identity, rid, RequestError(ERROR_CONTROL_PLANE, message))

        self.store.keep(steps, then, f"{kind_label(kind_of(obj))} {obj.name!r}")


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise RequestError(ERROR_INVALID, f"no shared object kind {kind!r}")
    return kind


def _check(check: Callable[[], Any]) -> Any:
    try:
        return check()
    except SharedError as exc:
        raise RequestError(exc.kind, str(exc)) from None
