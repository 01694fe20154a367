"""Pickling of functions, inputs, results and exceptions for the wire.

Objects are pickled with cloudpickle, protocol 5. Buffers that support out-of-band pickling
(numpy arrays, ``pickle.PickleBuffer``) are not copied into the pickle: they travel as their
own ZeroMQ frames. Many small objects are packed into one ``blob`` frame; each is addressed
by ``(offset, length, nbufs)``.

Loading needs only :mod:`pickle`; cloudpickle is needed to dump, and tblib to send a
traceback.
"""

from __future__ import annotations

import io
import os
import pickle
import traceback
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

import cloudpickle
from tblib import Traceback

PICKLE_PROTOCOL = 5
_OUT_OF_BAND_MIN = 64 * 1024  # smaller buffers are cheaper to copy than to send apart
_NO_BUFFERS: list[Any] = []  # shared, never mutated: most objects have no buffers
MAX_FRAMES = 100  # frames of a remote traceback sent (the outermost and innermost halves)


class TooLarge(ValueError):
    """Raised when a pickled object is larger than allowed."""


class PayloadWriter:
    """Packs many objects into ``[blob, *buffers]`` frames, reusing one pickler."""

    __slots__ = ("_blob", "_buffers", "_pickler")

    def __init__(self) -> None:
        self._blob = io.BytesIO()
        self._buffers: list[Any] = []
        self._pickler: cloudpickle.CloudPickler | None = None  # made on first add()

    def _buffer_keeper(self) -> Callable[[pickle.PickleBuffer], bool]:
        # A closure over the list, not a bound method: the pickler would hold the writer in
        # a cycle, and the buffers it holds (a shared segment on a worker) would wait for
        # the garbage collector instead of going with the writer.
        buffers = self._buffers

        def keep(buf: pickle.PickleBuffer) -> bool:
            raw = buf.raw()
            if raw.nbytes < _OUT_OF_BAND_MIN:
                return True  # serialize in-band
            buffers.append(raw)
            return False

        return keep

    def add(self, obj: Any, limit: int | None = None) -> tuple[int, int, int]:
        """Pickle ``obj``; returns its (offset, length, nbufs). Raises what pickling raises,
        and ``TooLarge`` when its bytes (pickle and buffers) exceed ``limit``."""
        start = self._blob.tell()
        nbufs = len(self._buffers)
        if self._pickler is None:
            self._pickler = cloudpickle.CloudPickler(
                self._blob, protocol=PICKLE_PROTOCOL, buffer_callback=self._buffer_keeper()
            )
        try:
            self._pickler.dump(obj)
            if limit is not None:
                size = self._blob.tell() - start
                size += sum(memoryview(b).nbytes for b in self._buffers[nbufs:])
                if size > limit:
                    raise TooLarge(
                        f"it is {size / 2**20:,.1f} MiB pickled, over the limit of "
                        f"{limit >> 20} MiB (the max_input_mib setting)"
                    )
        except BaseException:
            self._blob.seek(start)
            self._blob.truncate()
            del self._buffers[nbufs:]
            raise
        finally:
            self._pickler.clear_memo()
        return start, self._blob.tell() - start, len(self._buffers) - nbufs

    def add_run(self, objs: Sequence[Any]) -> tuple[tuple[int, int, int], list[int]]:
        """Pickle ``objs`` one after the other, each on its own (nothing shared between
        them, as when added one by one), addressed as one: a *run*, read back by
        :func:`load_run`. Returns its (offset, length, nbufs) and each object's pickle
        length, by which the control plane cuts a run into its objects' bytes without
        unpickling them (:func:`cut_run`). Raises what pickling raises."""
        start = self._blob.tell()
        nbufs = len(self._buffers)
        if self._pickler is None:
            self._pickler = cloudpickle.CloudPickler(
                self._blob, protocol=PICKLE_PROTOCOL, buffer_callback=self._buffer_keeper()
            )
        pickler = self._pickler
        dump, clear = pickle.Pickler.dump, pickler.clear_memo  # the C loop, not cloudpickle's
        tell = self._blob.tell
        sizes = []
        at = start
        try:
            for obj in objs:
                dump(pickler, obj)
                clear()
                end = tell()
                sizes.append(end - at)
                at = end
        except BaseException:
            clear()
            self._blob.seek(start)
            self._blob.truncate()
            del self._buffers[nbufs:]
            raise
        return (start, at - start, len(self._buffers) - nbufs), sizes

    def drop_last(self, offset: int, nbufs: int) -> None:
        """Forget the last object added (at ``offset``, with ``nbufs`` buffers)."""
        self._blob.seek(offset)
        self._blob.truncate()
        del self._buffers[len(self._buffers) - nbufs :]

    def add_raw(
        self, data: bytes | memoryview, buffers: Sequence[Any] = ()
    ) -> tuple[int, int, int]:
        """Append an already pickled object (and its buffers) without looking inside."""
        start = self._blob.tell()
        self._blob.write(data)
        self._buffers.extend(buffers)
        return start, len(data), len(buffers)

    def __len__(self) -> int:
        return self._blob.tell()

    def frames(self) -> list[Any]:
        return [self._blob.getbuffer(), *self._buffers]


def pack(
    parts: Sequence[tuple[Any, Sequence[Any]]],
) -> tuple[list[Any], list[tuple[int, int, int]]]:
    """Join already pickled objects ``(pickle bytes, buffers)`` into ``[blob, *buffers]``
    frames; returns the frames and each object's (offset, length, nbufs)."""
    addresses = []
    buffers: list[Any] = []
    offset = 0
    for data, bufs in parts:
        length = len(data)
        addresses.append((offset, length, len(bufs)))
        offset += length
        if bufs:
            buffers.extend(bufs)
    return [b"".join([data for data, _ in parts]), *buffers], addresses


def split_payload(
    frames: Sequence[Any], addresses: Iterable[Sequence[int]]
) -> list[tuple[memoryview, list[Any]]]:
    """Cut ``[blob, *buffers]`` into one ``(pickle bytes, buffers)`` pair per address."""
    if not frames:
        return []
    blob = _view(frames[0])
    buffers = frames[1:]
    parts = []
    next_buf = 0
    for offset, length, nbufs in addresses:
        if nbufs:
            parts.append(
                (blob[offset : offset + length], list(buffers[next_buf : next_buf + nbufs]))
            )
            next_buf += nbufs
        else:
            parts.append((blob[offset : offset + length], _NO_BUFFERS))
    return parts


def load(data: Any, buffers: Sequence[Any] = ()) -> Any:
    if not buffers:
        return pickle.loads(data)
    return pickle.loads(data, buffers=[_view(b) for b in buffers])


def load_run(data: Any, buffers: Sequence[Any], skip: int, count: int) -> list[Any]:
    """Objects ``skip`` .. ``skip + count`` of a run (see ``PayloadWriter.add_run``)."""
    unpickler = pickle.Unpickler(io.BytesIO(data), buffers=[_view(b) for b in buffers])
    load = unpickler.load
    for _ in range(skip):
        load()
    return [load() for _ in range(count)]


def cut_run(data: Any, sizes: Sequence[int], skip: int, count: int) -> list[bytes]:
    """The pickles of objects ``skip`` .. ``skip + count`` of a run without buffers
    (``sizes``: each object's length, from ``PayloadWriter.add_run``), each its own bytes:
    a run cut into its objects without unpickling any. Raises ValueError when ``sizes``
    does not describe ``data``."""
    view = memoryview(data).cast("B")
    if len(sizes) < skip + count or sum(sizes) != view.nbytes:
        raise ValueError(
            f"a run of {len(sizes)} objects in {view.nbytes} bytes has no objects "
            f"{skip} .. {skip + count}"
        )
    at = sum(sizes[:skip])
    cuts = []
    for size in sizes[skip : skip + count]:
        cuts.append(bytes(view[at : at + size]))
        at += size
    return cuts


def dumps(obj: Any) -> bytes:
    return cloudpickle.dumps(obj, protocol=PICKLE_PROTOCOL)


def _view(frame: Any) -> memoryview:
    if hasattr(frame, "buffer"):  # zmq.Frame
        return frame.buffer  # type: ignore[no-any-return]
    return memoryview(frame)


# --- exceptions ---------------------------------------------------------------------------


_RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def dump_exception(exc: BaseException, skip_runtime: bool = False) -> bytes:
    """Everything the caller needs to re-raise ``exc`` as its own type with remote frames.

    The exception object is pickled on its own so that an unpicklable exception still sends
    its type name, message and traceback text. The frames travel as tblib's plain dicts
    (``tblib.Traceback.from_dict`` rebuilds them), with no locals. ``skip_runtime``
    leaves out the worker's frames at the top.
    """
    try:
        exc_bytes: bytes | None = dumps(exc)
        pickle.loads(exc_bytes or b"")  # an exception whose __init__ rejects its args fails here
    except Exception:
        exc_bytes = None
    tb = exc.__traceback__
    while (  # the worker's own frames above the user's code say nothing to the user
        skip_runtime
        and tb is not None
        and tb.tb_next is not None
        and tb.tb_frame.f_code.co_filename.startswith(_RUNTIME_DIR)
    ):
        tb = tb.tb_next
    frames, left_out = traceback_record(tb)
    record = {
        "exc": exc_bytes,
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc),
        "text": "".join(traceback.format_exception(type(exc), exc, tb)),
        "tb": frames,
        "frames_left_out": left_out,
    }
    return pickle.dumps(record, protocol=PICKLE_PROTOCOL)


def traceback_record(tb: TracebackType | None) -> tuple[dict[str, Any] | None, int]:
    """``tb`` as tblib's plain dict, its middle left out past ``MAX_FRAMES`` frames; and
    how many frames were left out.

    tblib's dict nests one level per frame, and making it, pickling it and rebuilding it
    each recurse once per level: a RecursionError's thousand frames would overflow the
    stack while being sent (the worker died instead of reporting it). The frames kept are
    the outermost and the innermost, where the call started and where it failed.
    """
    if tb is None:
        return None, 0
    head = Traceback(tb)
    nodes = [head]
    while nodes[-1].tb_next is not None:
        nodes.append(nodes[-1].tb_next)
    left_out = max(0, len(nodes) - MAX_FRAMES)
    if left_out:
        nodes[MAX_FRAMES // 2 - 1].tb_next = nodes[-(MAX_FRAMES // 2)]
    return head.as_dict(), left_out
