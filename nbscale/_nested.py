"""The client's side of calls made from inside a worker (``nbscale_runtime.nested``).

When a function body running on a worker calls another function (or itself), the
client connects over the worker's own link, as ``<worker id>:client``, to the very control
plane that runs the worker, instead of starting one of its own: the call uses the pools,
limits and call ids of the kernel or script whose call started the worker, records the
input it was made from (its parent), and the worker lends its slot while it blocks.

Functions travel inside other functions' pickles. So that a nested call finds the pool
its caller registered, a ``Function`` carries its function id in its pickle (re-pickling
it on the worker would give other bytes, hence another id); a function pickled inside its
own pickle (one that calls itself) is marked as such, and on a worker of that function it
is that worker's function.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from nbscale_runtime import nested
from nbscale_runtime.stream import StreamClosed, StreamLink
from nbscale_runtime.zmq_link import ZmqLink
from nbscale_server.channel import Channel

from . import _loop

_SELF = "<self>"  # the function id of a function pickled inside its own pickle
_pickling = threading.local()  # .stack: the functions being pickled now, innermost last


def host() -> nested.Host | None:
    """This process's worker, when this code runs on one."""
    return nested.host()


def parent() -> list[Any] | None:
    """[call id, index] of the worker input this code runs for, or None."""
    return nested.Host.parent() if nested.host() is not None else None


class LinkChannel:
    """A worker's Unix stream link driven by this process's loop, with the interface of a
    ``Channel``."""

    def __init__(self, link: StreamLink, on_message: Callable[[list[Any]], None]) -> None:
        self.link = link
        self.on_message = on_message
        self.loop = asyncio.get_running_loop()
        self._closed = False
        self.loop.add_reader(link.pollable, self.drain)

    def drain(self) -> None:
        if self._closed:
            return
        try:
            messages = self.link.receive()
        except (StreamClosed, OSError):
            messages = list(self.link.reader.messages)  # what came before it closed counts
            self.close()
        for frames in messages:
            self.on_message(frames)

    def send(self, frames: list[Any]) -> None:
        if not self._closed:
            with contextlib.suppress(OSError):
                self.link.send(frames)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.loop.remove_reader(self.link.pollable)
            self.link.close()


def open_channel(
    worker: nested.Host, on_message: Callable[[list[Any]], None]
) -> Channel | LinkChannel:
    """A connection to the worker's control plane, as its client, on the running loop."""
    link = worker.connect()
    if isinstance(link, ZmqLink):
        return Channel(link.sock, on_message)
    assert isinstance(link, StreamLink)
    return LinkChannel(link, on_message)


def lend_while_blocked(worker: nested.Host) -> None:
    """From now on, a blocking call that waits lends the worker's slot meanwhile."""
    _loop.on_block = worker.lend


# --- function ids across pickles -----------------------------------------------------------


@contextlib.contextmanager
def pickling(fn: Any) -> Iterator[None]:
    """``fn``'s own pickle is being made (functions pickled inside it may refer to it)."""
    stack = _pickling.__dict__.setdefault("stack", [])
    stack.append(fn)
    try:
        yield
    finally:
        stack.pop()


def id_to_send(fn: Any, compute: Callable[[], str]) -> str | None:
    """The function id that ``fn`` carries in a pickle: ``compute()``, or a mark when
    ``fn`` is inside its own pickle (None when inside that of a function it calls)."""
    stack = getattr(_pickling, "stack", [])
    if stack and stack[-1] is fn:
        return _SELF
    if any(f is fn for f in stack):
        return None
    return compute()


def id_received(sent: str | None) -> str | None:
    """The function id a ``Function`` unpickled here has, when its pickle said it."""
    if sent != _SELF:
        return sent
    worker = nested.host()
    return worker.function_id if worker is not None else None
