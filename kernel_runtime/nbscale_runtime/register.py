"""A worker's register: which inputs it is running right now, in a small file that the worker
maps into memory and the control plane reads.

The worker fills a slot when an input starts and clears it when the input ends: two stores
into shared memory (~150 ns for both), never a message or a system call, because inputs can
be a few microseconds each. Its outputs travel in batches every few milliseconds, so when a worker
dies only the register says which inputs it was running at that moment: exactly those are
blamed (they crashed it, or ran out of memory), the others it held go back untouched, and
the control plane knows how long a silent worker's input has run (``running``).

The control plane creates the file (``create``) in its private directory; process workers
map it there, containers through a read-write bind mount. Layout (little-endian):

    header: magic u32, slots u32, self_signal i32, pad u32
    slot:   state u8 (1 running), pad 3, attempt u32, index i64, started f64, call_id 32s

``started`` is the worker's ``time.monotonic()``: one clock for every process and container
of a Linux host. ``self_signal`` is a deadly signal the worker's own code sent to its own
process (``os.kill(os.getpid(), 9)``), recorded by an audit hook just before it is sent, so
that the control plane can tell an input that killed its worker from an outside kill.
"""

from __future__ import annotations

import functools
import mmap
import os
import signal
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_HEADER = struct.Struct("<IIiI")
_SLOT = struct.Struct("<B3xIqd32s")
_SLOT_HEAD = struct.Struct("<B3xIqd")  # a slot less its call id, written once per run
_CALL_ID_AT = _SLOT_HEAD.size
_MAGIC = 0x6E627331  # "nbs1"
_SELF_SIGNAL_AT = 8
_RUNNING = 1
_CALL_ID_MAX = 32
# Signals sent to the worker's own process that end it (the default action kills).
_DEADLY = frozenset(
    s.value
    for s in (
        signal.SIGKILL,
        signal.SIGTERM,
        signal.SIGINT,
        signal.SIGHUP,
        signal.SIGQUIT,
        signal.SIGABRT,
        signal.SIGSEGV,
        signal.SIGBUS,
        signal.SIGUSR2,
        signal.SIGALRM,
    )
)


def size(slots: int) -> int:
    return _HEADER.size + slots * _SLOT.size


def create(path: str, slots: int) -> None:
    """Make an empty register for a worker running up to ``slots`` inputs at once (0600)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, _HEADER.pack(_MAGIC, slots, 0, 0) + bytes(slots * _SLOT.size))
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class RunningInput:
    call_id: str
    index: int
    attempt: int
    started: float  # time.monotonic() on the worker's host

    @property
    def key(self) -> tuple[str, int]:
        return (self.call_id, self.index)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a register said when it was read."""

    running: tuple[RunningInput, ...]
    self_signal: int  # 0: the worker never signalled itself


def read(path: str) -> Snapshot | None:
    """The register at ``path``, or None when it cannot be read (gone, not made yet).

    Read twice until two reads agree: a live worker may be writing a slot meanwhile."""
    try:
        with open(path, "rb") as f:
            data = f.read()
            for _ in range(10):
                f.seek(0)
                again = f.read()
                if again == data:
                    break
                data = again
    except OSError:
        return None
    if len(data) < _HEADER.size:
        return None
    magic, slots, self_signal, _ = _HEADER.unpack_from(data)
    if magic != _MAGIC or len(data) < size(slots):
        return None
    running = []
    for n in range(slots):
        state, attempt, index, started, call_id = _SLOT.unpack_from(
            data, _HEADER.size + n * _SLOT.size
        )
        if state == _RUNNING:
            name = call_id.rstrip(b"\0").decode(errors="replace")
            running.append(RunningInput(name, index, attempt, started))
    return Snapshot(tuple(running), self_signal)


Start = Callable[[str, int, int, float], None]  # (call id, index, attempt, started)
RunStart = Callable[[int, float], None]  # (index, started) of one call's attempt
Finish = Callable[[], None]


def _nothing(*args: Any) -> None:
    return None


class RegisterWriter:
    """The worker's end. ``slot(n)`` gives slot ``n``'s two functions: ``start(call_id,
    index, attempt, started)`` when an input starts there, ``finish()`` when it ends. They
    are closures over the mapped file (about 150 ns a pair, against 320 for methods: they
    run for every input). Without a file (a worker that shares no file system with its
    control plane) they do nothing."""

    def __init__(self, path: str | None) -> None:
        self._map: mmap.mmap | None = None
        self.slots = 0
        self._names: list[list[str]] = []  # the call id each slot holds now
        if path:
            with open(path, "r+b") as f:
                self._map = mmap.mmap(f.fileno(), 0)
            magic, self.slots, _, _ = _HEADER.unpack_from(self._map)
            if magic != _MAGIC:
                raise ValueError(f"{path} is not a worker register")
            self._names = [[""] for _ in range(self.slots)]

    def slot(self, n: int) -> tuple[Start, Finish]:
        m = self._map
        if m is None or n >= self.slots:
            return _nothing, _nothing
        at = _HEADER.size + n * _SLOT.size
        pack = _SLOT_HEAD.pack_into
        last = self._names[n]

        def start(call_id: str, index: int, attempt: int, started: float) -> None:
            if call_id != last[0]:
                self._name(n, call_id)
            pack(m, at, _RUNNING, attempt, index, started)

        return start, functools.partial(m.__setitem__, at, 0)

    def run_start(self, n: int, call_id: str, attempt: int) -> RunStart:
        """Slot ``n``'s ``start`` for the inputs of one run of ``call_id``'s attempt: only
        ``(index, started)`` each (a C call, no Python frame: it runs for every input);
        ``slot(n)``'s ``finish`` ends each."""
        m = self._map
        if m is None or n >= self.slots:
            return _nothing
        self._name(n, call_id)
        return functools.partial(
            _SLOT_HEAD.pack_into, m, _HEADER.size + n * _SLOT.size, _RUNNING, attempt
        )

    def _name(self, n: int, call_id: str) -> None:
        """Slot ``n``'s call id: written when it changes (inputs come in runs of one call)."""
        last = self._names[n]
        if call_id != last[0] and self._map is not None:
            last[0] = call_id
            at = _HEADER.size + n * _SLOT.size + _CALL_ID_AT
            name = call_id.encode()[:_CALL_ID_MAX].ljust(_CALL_ID_MAX, b"\0")
            self._map[at : at + _CALL_ID_MAX] = name

    def watch_self_signals(self) -> None:
        """Record in the register any deadly signal this process's code sends to itself
        (``os.kill``, ``os.killpg``, ``signal.pthread_kill``), before it is sent. Audit hooks
        cost nothing on the paths inputs take unless they raise audit events, and most
        do not."""
        m = self._map
        if m is None:
            return
        me = os.getpid()
        group = os.getpgid(0)
        pack = struct.Struct("<i").pack_into

        def hook(event: str, args: tuple[Any, ...]) -> None:
            if event == "os.kill":
                target, signum = args
                hits = target in (me, 0) or target == -group
            elif event == "os.killpg":
                target, signum = args
                hits = target in (0, group)
            elif event == "signal.pthread_kill":
                _, signum = args
                hits = True
            else:
                return
            if hits and int(signum) in _DEADLY:
                pack(m, _SELF_SIGNAL_AT, int(signum))

        sys.addaudithook(hook)
