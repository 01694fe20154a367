"""Turning one output from the wire into a value or the exception to raise.

This is the one place where output statuses map to exceptions. A user exception is rebuilt as
its own type with the remote frames as its traceback (source lines come from this process's
line cache, so a notebook cell's lines show), and a note saying where it ran.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import traceback
import types
from dataclasses import dataclass
from typing import Any

from tblib import Traceback

from nbscale_runtime import protocol
from nbscale_runtime.packed import cut_results, load_results
from nbscale_runtime.protocol import (
    OUT_ATTEMPT,
    OUT_COUNT,
    OUT_DURATION,
    OUT_INDEX,
    OUT_SIZES,
    OUT_STATUS,
    OUT_STDERR,
    OUT_STDOUT,
    OUT_WORKER_ID,
)
from nbscale_runtime.serialization import load

from ._tracebacks import format_text, install
from .exceptions import (
    CallCancelledError,
    FunctionTimeoutError,
    RemoteError,
    SerializationError,
    WorkerLostError,
    from_wire,
)

_DYNAMIC = "<dynamic-code>"  # cloudpickle's file name for code shipped by value


@dataclass(slots=True)
class Output:
    index: int
    ok: bool
    value: Any  # the result, or the exception when not ok
    stdout: str
    worker_id: str
    duration: float
    attempt: int
    stderr: str = ""


class Values:
    """The results of a run of inputs ``index`` .. ``index + count``: all returned, none
    printed anything (a map's fast path: no ``Output`` per input). They are unpickled where
    they are read (``load``, on the consumer's thread), not on the loop that received them,
    which also runs the embedded control plane."""

    __slots__ = ("count", "data", "function", "index", "item")

    def __init__(self, item: list[Any], data: Any, function: str) -> None:
        """A run's results have no out-of-band buffers (``Segment.rows`` sends a run only
        without them), and its row says nothing of a timeout: only its bytes are needed."""
        self.item, self.data, self.function = item, data, function
        self.index: int = item[OUT_INDEX]
        self.count: int = item[OUT_COUNT]

    def load(self) -> list[Any]:
        """The results as values; raises when one of them cannot be unpickled here
        (``outputs`` then says which)."""
        return load_results(self.data, self.item[OUT_SIZES], self.count)

    def outputs(self) -> list[Output]:
        """The results as one ``Output`` each, each unpickled on its own, so that one that
        cannot be fails alone."""
        return decode_run(self.item, self.data, self.function)


def decode_run(item: list[Any], data: Any, function: str) -> list[Output]:
    """A run's row, one ``Output`` per input (each result unpickled on its own, so that
    one that cannot be fails alone)."""
    first, count, attempt = item[OUT_INDEX], item[OUT_COUNT], item[OUT_ATTEMPT]
    worker_id, each = item[OUT_WORKER_ID], item[OUT_DURATION] / max(1, item[OUT_COUNT])
    try:
        values = load_results(data, item[OUT_SIZES], count)
    except Exception:  # one at a time, by their sizes, to find which cannot be
        outputs = []
        for k, cut in enumerate(cut_results(data, item[OUT_SIZES], count)):
            try:
                outputs.append(Output(first + k, True, load(cut), "", worker_id, each, attempt))
            except Exception as exc:
                value = _unloadable(function, first + k, exc)
                outputs.append(Output(first + k, False, value, "", worker_id, each, attempt))
        return outputs
    return [
        Output(first + k, True, value, "", worker_id, each, attempt)
        for k, value in enumerate(values)
    ]


def decode_rows(
    items: list[list[Any]], parts: list[tuple[Any, list[Any]]], function: str, timeout: float
) -> list[Output]:
    """Every output of ``items`` (runs expanded), in the order they came."""
    outputs = []
    for item, (data, bufs) in zip(items, parts, strict=False):
        if item[OUT_COUNT]:
            outputs.extend(decode_run(item, data, function))
        else:
            outputs.append(decode(item, data, bufs, function, timeout))
    return outputs


def _unloadable(function: str, index: int, exc: Exception) -> SerializationError:
    return SerializationError(
        f"{function}: the result of input {index} cannot be unpickled in the caller: {exc}"
    )


def print_output(out: Output, prefix: bool) -> None:
    """Show what an input printed remotely: its stdout here on stdout, its stderr on
    stderr (red in a notebook); each line begun by ``[index] `` when ``prefix``."""
    for text, stream in ((out.stdout, sys.stdout), (out.stderr, sys.stderr)):
        if not text:
            continue
        if prefix:
            text = "".join(f"[{out.index}] {line}" for line in text.splitlines(keepends=True))
        stream.write(text if text.endswith("\n") else text + "\n")


def decode(
    item: list[Any],
    data: Any,
    buffers: list[Any],
    function: str,
    timeout: float,
    code_files: dict[str, str] | None = None,
) -> Output:
    """``code_files`` maps function names to their source files, for remote frames of code
    that cloudpickle shipped by value (it renames their file to "<dynamic-code>")."""
    index, attempt, status = item[OUT_INDEX], item[OUT_ATTEMPT], item[OUT_STATUS]
    duration, worker_id, stdout = item[OUT_DURATION], item[OUT_WORKER_ID], item[OUT_STDOUT]
    stderr = item[OUT_STDERR]
    ok = status == protocol.STATUS_OK or status == protocol.STATUS_YIELD
    if ok:  # the hot path, kept short
        try:
            value = load(data, buffers)
            return Output(index, True, value, stdout, worker_id, duration, attempt, stderr)
        except Exception:
            pass  # fall through to the error below
    try:
        value = _value(
            status, data, buffers, index, attempt, worker_id, function, timeout, code_files or {}
        )
    except Exception as exc:  # a result that cannot be unpickled here
        ok, value = False, _unloadable(function, index, exc)
    return Output(index, ok, value, stdout, worker_id, duration, attempt, stderr)


# Statuses whose payload is a user exception, and where it was raised (None: in the input).
_RAISED = {
    protocol.STATUS_ERROR: None,
    protocol.STATUS_INIT_FAILED: "while loading the function",
    protocol.STATUS_ENTER_FAILED: "in @enter, on each of the last containers that started",
}


def _value(
    status: str,
    data: Any,
    buffers: list[Any],
    index: int,
    attempt: int,
    worker_id: str,
    function: str,
    timeout: float,
    code_files: dict[str, str],
) -> Any:
    if status == protocol.STATUS_OK or status == protocol.STATUS_YIELD:
        return load(data, buffers)
    if status in _RAISED:
        exc = rebuild_exception(bytes(data), code_files)
        where = _RAISED[status] or f"input {index}, attempt {attempt}"
        on = f" on worker {worker_id}" if worker_id else ""
        _note(exc, f"(raised remotely in {function}{on}, {where})")
        return exc
    if status == protocol.STATUS_TIMEOUT:
        return FunctionTimeoutError(
            f"{function}: input {index} ran longer than its timeout of {timeout:g} s "
            f"(attempt {attempt}); its worker {worker_id} was replaced"
        )
    if status == protocol.STATUS_SERIALIZATION:
        record = pickle.loads(bytes(data))
        return SerializationError(
            f"{function}: the result of input {index} cannot be pickled on the worker: "
            f"{record['message']}"
        )
    info = pickle.loads(bytes(data)) if len(data) else {}
    if status == protocol.STATUS_LOST:
        message = info.get("message", f"the worker running input {index} was lost")
        logs = info.get("logs", "")
        if logs.strip():
            message += "\nLast lines of the worker's output:\n" + logs.rstrip()
        return WorkerLostError(message, info.get("exit_code"), logs, index)
    if status == protocol.STATUS_REJECTED:
        kind = info.get("kind", protocol.ERROR_CONTROL_PLANE)
        return from_wire(kind, info.get("message", "rejected"))
    return RemoteError(f"{function}: input {index} ended with status {status!r}")


def rebuild_exception(
    record_bytes: bytes, code_files: dict[str, str] | None = None
) -> BaseException:
    record = pickle.loads(record_bytes)
    tb = None
    text = record["text"]
    if record["tb"]:
        _restore_filenames(record["tb"], code_files or {})
        try:
            tb = Traceback.from_dict(record["tb"]).as_traceback()
            # Formatted here, the frames get their source lines from this process's caches.
            text = "".join(traceback.format_tb(tb)) + f"{record['type']}: {record['message']}\n"
        except Exception:
            tb = None
    exc: BaseException | None = None
    if record["exc"] is not None:
        try:
            exc = pickle.loads(record["exc"])
        except Exception:
            exc = None
    if exc is None:
        exc = RemoteError(
            f"{record['type']}: {record['message']}\n\nRemote traceback:\n{text}",
            record["type"],
            text,
        )
    if tb is not None and record.get("frames_left_out"):
        _note(exc, f"({record['frames_left_out']} remote frames left out of the traceback)")
    return exc.with_traceback(tb) if tb is not None else exc


def _restore_filenames(tb: dict[str, Any] | None, code_files: dict[str, str]) -> None:
    while tb is not None:
        code = tb["tb_frame"]["f_code"]
        if code["co_filename"] == _DYNAMIC and code["co_name"] in code_files:
            code["co_filename"] = code_files[code["co_name"]]
        tb = tb["tb_next"]


def code_files_of(fn: Any) -> dict[str, str]:
    """Source files of ``fn`` and of the functions it uses, by function name; and of the
    code nested in them (comprehensions, lambdas) where their name says which file."""
    import inspect

    files: dict[str, str] = {}
    nested: dict[str, set[str]] = {}  # "<listcomp>" may be in many functions, many files
    todo = [fn]
    while todo:
        f = inspect.unwrap(todo.pop())
        code = getattr(f, "__code__", None)
        if code is None or code.co_name in files:
            continue
        files[code.co_name] = code.co_filename
        for inner in _nested_code(code):
            nested.setdefault(inner.co_name, set()).add(inner.co_filename)
        with contextlib.suppress(TypeError, ValueError):
            todo += [v for v in inspect.getclosurevars(f).globals.values() if callable(v)]
    for name, filenames in nested.items():
        if len(filenames) == 1:
            files.setdefault(name, filenames.pop())
    return files


def _nested_code(code: types.CodeType) -> list[types.CodeType]:
    inner = [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return inner + [deeper for c in inner for deeper in _nested_code(c)]


def _note(exc: BaseException, text: str) -> None:
    if hasattr(exc, "add_note"):
        exc.add_note(text)
        install()  # for a shell that does not show notes itself


def progress_outcome(out: Output) -> tuple[int, str, Any, str, int, float, str, str]:
    """An output as the progress model takes it: done, failed or cancelled (a call
    cancelled by someone else ends its inputs with ``CallCancelledError``: not failures)."""
    if out.ok:
        return (
            out.index,
            "done",
            out.value,
            out.worker_id,
            out.attempt,
            out.duration,
            out.stdout,
            "",
        )
    status = "cancelled" if isinstance(out.value, CallCancelledError) else "failed"
    text = format_text(out.value) if status == "failed" else ""  # its cells named as in IPython
    return (
        out.index,
        status,
        out.value,
        out.worker_id,
        out.attempt,
        out.duration,
        out.stdout,
        text,
    )
