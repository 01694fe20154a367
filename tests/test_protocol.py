"""The wire contract (encode/decode of every op) and payload serialization."""

from __future__ import annotations

import dataclasses
import itertools
import json
import pickle
import types
import typing
from typing import Any

import numpy as np
import pytest
import tblib

from nbscale._outcomes import rebuild_exception
from nbscale_runtime import protocol, service
from nbscale_runtime.serialization import (
    MAX_FRAMES,
    PayloadWriter,
    dump_exception,
    load,
    split_payload,
)

# --- sample messages ----------------------------------------------------------------------

_SAMPLES: dict[Any, Any] = {
    int: 7,
    str: "text-é",
    float: 2.5,
    bool: True,
    Any: {"nested": [1, "two", None, 3.5]},
}


def sample_value(hint: Any, name: str) -> Any:
    """A JSON-friendly value of ``hint``; raises for a type it does not know, so a new field
    type has to be taught here instead of slipping through untested."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        [inner] = [a for a in args if a is not type(None)]
        return sample_value(inner, name)
    if origin is list:
        return [sample_value(args[0], name), sample_value(args[0], name)]
    if origin is dict:
        assert args[0] is str, f"{name}: JSON object keys must be str"
        return {"k1": sample_value(args[1], name), "k2": sample_value(args[1], name)}
    if hint is str:
        return f"{name}-é"
    if hint in _SAMPLES:
        return _SAMPLES[hint]
    raise AssertionError(f"no sample for field {name!r} of type {hint!r}")


def sample_message(cls: type[protocol.Message]) -> protocol.Message:
    hints = typing.get_type_hints(cls)
    values = {f.name: sample_value(hints[f.name], f.name) for f in dataclasses.fields(cls)}
    return cls(**values)


ALL_OPS = sorted(protocol.ops())


def test_ops_are_registered_and_named_on_their_class() -> None:
    registry = protocol.ops()
    assert {"hello", "submit-inputs", "outputs", "run-inputs", "goodbye"} <= set(registry)
    for name, cls in registry.items():
        assert cls.op == name
        assert dataclasses.is_dataclass(cls)


def test_every_op_is_covered_by_the_round_trip() -> None:
    covered = {sample_message(cls).op for cls in protocol.ops().values()}
    assert covered == set(protocol.ops())
    assert covered == set(ALL_OPS)


@pytest.mark.parametrize("op_name", ALL_OPS)
def test_round_trip_every_op(op_name: str) -> None:
    cls = protocol.ops()[op_name]
    msg = sample_message(cls)
    payload = [b"blob-bytes", bytearray(b"\x00\x01"), memoryview(b"buffer")]

    frames = protocol.encode(msg, payload)
    assert len(frames) == 1 + len(payload)
    assert isinstance(frames[0], bytes)
    assert all(a is b for a, b in zip(frames[1:], payload, strict=True))

    decoded, rest = protocol.decode(frames)
    assert type(decoded) is cls
    assert decoded == msg
    assert all(a is b for a, b in zip(rest, payload, strict=True))


@pytest.mark.parametrize("op_name", ALL_OPS)
def test_round_trip_with_optional_fields_none_and_no_payload(op_name: str) -> None:
    cls = protocol.ops()[op_name]
    hints = typing.get_type_hints(cls)
    msg = sample_message(cls)
    nones = {
        f.name: None
        for f in dataclasses.fields(cls)
        if type(None) in typing.get_args(hints[f.name])
    }
    msg = dataclasses.replace(msg, **nones)
    decoded, rest = protocol.decode(protocol.encode(msg))
    assert decoded == msg
    assert rest == []


def test_header_is_a_json_array_of_op_and_fields_in_order() -> None:
    frames = protocol.encode(protocol.CancelCall(rid=3, call_id="c-1"))
    assert frames == [b'["cancel-call",3,"c-1"]']


@pytest.mark.parametrize("op_name", ALL_OPS)
def test_header_bytes_are_the_standard_json_of_the_op_and_its_fields(op_name: str) -> None:
    """The encoder made once writes what ``json.dumps`` does (non-ASCII escaped, floats,
    nested lists and dicts), so peers of either side read the same bytes."""
    msg = sample_message(protocol.ops()[op_name])
    fields = [getattr(msg, f.name) for f in dataclasses.fields(msg)]
    expected = json.dumps([msg.op, *fields], separators=(",", ":")).encode()
    assert protocol.encode(msg)[0] == expected


def test_a_header_that_json_cannot_write_is_refused() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        protocol.encode(protocol.CancelCall(rid=3, call_id=object()))  # type: ignore[arg-type]


def test_decode_accepts_frame_objects_and_defaults_missing_trailing_fields() -> None:
    class FakeFrame:
        def __init__(self, data: bytes) -> None:
            self.bytes = data

    payload = FakeFrame(b"payload")
    msg, rest = protocol.decode([FakeFrame(b'["hello",1,"3.11","3.0"]'), payload])
    assert msg == protocol.Hello(protocol_version=1, python="3.11", cloudpickle="3.0", rid=0)
    assert rest == [payload] and rest[0] is payload
    msg, _ = protocol.decode([memoryview(b'["shutdown","bye"]')])
    assert msg == protocol.Shutdown("bye")


@pytest.mark.parametrize(
    "frames",
    [
        [],
        [b""],
        [b"not json at all"],
        [b"\xff\xfe\x00garbage"],
        [b"{}"],
        [b"42"],
        [b"[]"],
        [b"null"],
        [b'["no-such-op", 1]'],
        [b"[null]"],
        [b'[["hello"]]'],
        [b'["hello"]'],  # missing required fields
        [b'["cancel-call", 1, "c", "extra"]'],  # too many fields
        [b'["cancel-call", 1, "c"', b"payload"],
        [b'["cancel-call", 1, "c"] ["x"]'],  # trailing data
        [b'["cancel-call", 1, "\xff"]'],  # not UTF-8
    ],
)
def test_decode_garbage_raises_protocol_error(frames: list[bytes]) -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(frames)


# --- batch rows and error kinds ------------------------------------------------------------


def test_output_rows_are_read_back_by_their_column_names() -> None:
    row = protocol.output_row(
        "fc-1", 7, 2, protocol.STATUS_ERROR, (10, 20, 1), 0.5, "wk-1", "hi", "oops"
    )
    assert row[protocol.OUT_CALL_ID] == "fc-1"
    assert row[protocol.OUT_INDEX] == 7
    assert row[protocol.OUT_ATTEMPT] == 2
    assert row[protocol.OUT_STATUS] == protocol.STATUS_ERROR
    assert row[protocol.OUT_WHERE] == [10, 20, 1]
    assert row[protocol.OUT_DURATION] == 0.5
    assert row[protocol.OUT_WORKER_ID] == "wk-1"
    assert row[protocol.OUT_STDOUT] == "hi"
    assert row[protocol.OUT_STDERR] == "oops"
    assert row[protocol.OUT_COUNT] == 0  # one input's row, not a run's
    assert row[protocol.OUT_SIZES] == []
    assert len(row) == protocol.OUT_SIZES + 1
    # a row is a plain list, as it travels: no per-row object on either side
    msg, _ = protocol.decode(protocol.encode(protocol.Outputs([row])))
    assert msg.items == [row]  # type: ignore[attr-defined]


def test_every_error_kind_becomes_the_client_exception_of_that_name() -> None:
    from nbscale.exceptions import _BY_NAME, NbscaleError, ResourceExhaustedError, from_wire

    assert set(_BY_NAME) == protocol.ERROR_KINDS
    for kind in protocol.ERROR_KINDS:
        exc = from_wire(kind, "what happened", {"limit": "max_pending_inputs"})
        assert isinstance(exc, NbscaleError)
        assert type(exc).__name__ == kind and str(exc) == "what happened"
    exhausted = from_wire(protocol.ERROR_RESOURCE_EXHAUSTED, "m", {"limit": "max_total_inputs"})
    assert isinstance(exhausted, ResourceExhaustedError)
    assert exhausted.limit == "max_total_inputs"


# --- payloads -----------------------------------------------------------------------------


def _square(x: int) -> int:
    return x * x


SMALL_OBJECTS: list[Any] = [
    0,
    -12345678901234567890,
    "hello",
    "",
    b"\x00bytes",
    None,
    3.25,
    (1, "a", None),
    {"key": [1, 2, {"deep": True}]},
    {1, 2, 3},
    np.arange(10, dtype=np.int32),
]


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return bool(type(a) is type(b) and a == b)


def test_many_small_objects_pack_into_one_blob() -> None:
    writer = PayloadWriter()
    addresses = [writer.add(obj) for obj in SMALL_OBJECTS]
    addresses.append(writer.add(lambda y: y + 1))  # cloudpickle: by value
    addresses.append(writer.add(_square))
    frames = writer.frames()

    assert len(frames) == 1  # all in band
    assert len(writer) == len(frames[0])
    assert all(nbufs == 0 for _, _, nbufs in addresses)
    assert addresses[0][0] == 0
    for (off, length, _), (next_off, _, _) in itertools.pairwise(addresses):
        assert off + length == next_off

    parts = split_payload(frames, addresses)
    assert len(parts) == len(addresses)
    loaded = [load(data, bufs) for data, bufs in parts]
    for original, got in zip(SMALL_OBJECTS, loaded, strict=False):
        assert _equal(original, got), (original, got)
    assert loaded[-2](41) == 42
    assert loaded[-1](9) == 81


def test_large_array_travels_as_an_out_of_band_buffer() -> None:
    big = np.arange(200_000, dtype=np.float64)  # 1.6 MB
    writer = PayloadWriter()
    addresses = [writer.add("before"), writer.add(big), writer.add({"after": 1})]
    frames = writer.frames()

    assert [a[2] for a in addresses] == [0, 1, 0]
    assert len(frames) == 2
    buf = frames[1]
    assert memoryview(buf).nbytes == big.nbytes
    assert np.shares_memory(np.frombuffer(buf, dtype=big.dtype), big)  # not a copy
    assert len(frames[0]) < 10_000  # the array's bytes are not in the blob

    parts = split_payload(frames, addresses)
    assert [len(bufs) for _, bufs in parts] == [0, 1, 0]
    before, got, after = (load(data, bufs) for data, bufs in parts)
    assert before == "before"
    assert after == {"after": 1}
    assert isinstance(got, np.ndarray)
    assert got.dtype == big.dtype
    np.testing.assert_array_equal(got, big)


def test_buffers_are_addressed_by_running_count() -> None:
    a = np.full(100_000, 1, dtype=np.int64)
    b = np.full(50_000, 2, dtype=np.int64)
    writer = PayloadWriter()
    addresses = [writer.add((a, b)), writer.add("small"), writer.add(b * 3)]
    frames = writer.frames()
    assert len(frames) == 4
    assert [n for _, _, n in addresses] == [2, 0, 1]

    (pair, s, c) = (load(d, bufs) for d, bufs in split_payload(frames, addresses))
    np.testing.assert_array_equal(pair[0], a)
    np.testing.assert_array_equal(pair[1], b)
    assert s == "small"
    np.testing.assert_array_equal(c, b * 3)


def test_failed_add_leaves_the_payload_unchanged() -> None:
    def gen() -> Any:
        yield 1

    big = np.zeros(100_000, dtype=np.uint8)
    writer = PayloadWriter()
    first = writer.add("first")
    size = len(writer)
    with pytest.raises(TypeError):
        writer.add((big, gen()))  # the buffer is taken, then pickling fails
    assert len(writer) == size
    last = writer.add("last")
    assert last[0] == size
    frames = writer.frames()
    assert len(frames) == 1
    assert [load(d, bufs) for d, bufs in split_payload(frames, [first, last])] == [
        "first",
        "last",
    ]


def test_split_payload_of_no_frames_is_empty() -> None:
    assert split_payload([], [(0, 1, 0)]) == []


# --- exceptions ---------------------------------------------------------------------------


def _outer() -> None:
    _inner(5)


def _inner(n: int) -> None:
    raise ValueError(f"bad value {n}")


def _tb_names(tb: Any) -> list[str]:
    names = []
    while tb is not None:
        names.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    return names


def _dict_names(node: dict[str, Any] | None) -> list[str]:
    names = []
    while node is not None:
        names.append(node["tb_frame"]["f_code"]["co_name"])
        node = node["tb_next"]
    return names


def test_dump_exception_record_for_nested_raise() -> None:
    with pytest.raises(ValueError) as info:
        _outer()
    record = pickle.loads(dump_exception(info.value))

    assert record["type"] == "builtins.ValueError"
    assert record["message"] == "bad value 5"
    assert "ValueError: bad value 5" in record["text"]
    assert "_inner" in record["text"] and "_outer" in record["text"]

    exc = pickle.loads(record["exc"])
    assert type(exc) is ValueError and exc.args == ("bad value 5",)

    tb_dict = record["tb"]
    assert _dict_names(tb_dict)[-2:] == ["_outer", "_inner"]
    assert tb_dict["tb_frame"]["f_code"]["co_filename"] == __file__

    tb = tblib.Traceback.from_dict(tb_dict).as_traceback()
    assert isinstance(tb, types.TracebackType)
    assert _tb_names(tb) == _dict_names(tb_dict)
    last = tb
    while last.tb_next is not None:
        last = last.tb_next
    assert last.tb_lineno == _inner.__code__.co_firstlineno + 1
    with pytest.raises(ValueError, match="bad value 5") as again:
        raise exc.with_traceback(tb)
    assert "_inner" in _tb_names(again.value.__traceback__)


def _descend(n: int) -> None:
    if n == 0:
        raise ValueError("at the bottom")
    _descend(n - 1)


def test_a_deep_traceback_keeps_its_outer_and_inner_frames() -> None:
    """A traceback deeper than the stack allows to nest (tblib's dicts nest per frame)."""
    with pytest.raises(ValueError) as info:
        _descend(800)
    record = pickle.loads(dump_exception(info.value))
    names = _dict_names(record["tb"])
    assert len(names) == MAX_FRAMES
    assert names[0] == "test_a_deep_traceback_keeps_its_outer_and_inner_frames"
    assert names[1:] == ["_descend"] * (MAX_FRAMES - 1)
    assert record["frames_left_out"] == 802 - MAX_FRAMES
    innermost = record["tb"]
    while innermost["tb_next"] is not None:
        innermost = innermost["tb_next"]
    assert innermost["tb_lineno"] == _descend.__code__.co_firstlineno + 2
    exc = rebuild_exception(dump_exception(info.value))
    assert type(exc) is ValueError and _tb_names(exc.__traceback__) == names
    assert exc.__notes__ == [f"({802 - MAX_FRAMES} remote frames left out of the traceback)"]


def test_dump_exception_leaves_out_the_workers_own_frames() -> None:
    with pytest.raises(ValueError) as info:
        service.call(_outer, (), {}, print)
    exc = info.value
    assert exc.__traceback__ is not None
    exc.__traceback__ = exc.__traceback__.tb_next  # from the runtime's frames down, as caught
    full = _dict_names(pickle.loads(dump_exception(exc))["tb"])
    assert full == ["call", "_outer", "_inner"]
    skipped = _dict_names(pickle.loads(dump_exception(exc, skip_runtime=True))["tb"])
    assert skipped == ["_outer", "_inner"]


class TwoArgError(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


def test_dump_exception_of_exception_needing_two_args_still_gives_a_record() -> None:
    def fail() -> None:
        raise TwoArgError(404, "missing")

    with pytest.raises(TwoArgError) as info:
        fail()
    record = pickle.loads(dump_exception(info.value))

    assert record["type"] == f"{__name__}.TwoArgError"
    assert record["message"] == "404: missing"
    assert "TwoArgError: 404: missing" in record["text"]
    if record["exc"] is not None:  # allowed only if it really loads back
        assert isinstance(pickle.loads(record["exc"]), TwoArgError)
    assert _dict_names(record["tb"])[-1] == "fail"
    assert isinstance(tblib.Traceback.from_dict(record["tb"]).as_traceback(), types.TracebackType)


def test_dump_exception_of_unpicklable_exception_still_gives_a_record() -> None:
    err = RuntimeError("holds a generator")
    err.gen = (i for i in range(3))  # type: ignore[attr-defined]
    record = pickle.loads(dump_exception(err))
    assert record["exc"] is None
    assert record["type"] == "builtins.RuntimeError"
    assert record["message"] == "holds a generator"
    assert record["tb"] is None  # never raised: no traceback
    assert "RuntimeError: holds a generator" in record["text"]
