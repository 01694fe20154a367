"""The control plane's side of issue 14's features, against fake workers (``fakes.py``):
an ``@enter`` that keeps failing breaks its pool after 3 starts, generator values are
forwarded without settling their input, and a retried input's earlier output is kept."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes import FakeWorker, Harness

from nbscale_runtime import protocol
from nbscale_runtime.protocol import STATUS_ERROR, STATUS_OK, STATUS_YIELD, output_row
from nbscale_runtime.serialization import PayloadWriter, dump_exception
from nbscale_server.options import FunctionOptions
from nbscale_server.queue import RetryPolicy
from nbscale_server.worker_events import MAX_ENTER_FAILURES


def echo(x: int) -> int:
    return x


@pytest.fixture
def manual() -> Iterator[Harness]:
    harness = Harness(auto=False)
    yield harness
    harness.close()


def report(worker: FakeWorker, *rows: tuple[str, object, str, str]) -> None:
    """Send outputs rows for the worker's first held input: (status, value, stdout, stderr)."""
    call_id, index, attempt, _, _ = worker.held[0]
    writer = PayloadWriter()
    items = []
    for status, value, stdout, stderr in rows:
        if status == STATUS_ERROR:
            where = writer.add_raw(dump_exception(value))  # type: ignore[arg-type]
        else:
            where = writer.add(value)
        row = output_row(call_id, index, attempt, status, where, 0.01, worker.worker_id)
        row[protocol.OUT_STDOUT], row[protocol.OUT_STDERR] = stdout, stderr
        items.append(row)
    worker.send(protocol.Outputs(items), writer.frames())


def test_an_enter_failing_on_every_start_breaks_the_pool_with_its_error(manual):
    h = manual
    pool = h.caller.register(echo, FunctionOptions(max_containers=1))
    call = h.caller.submit(pool, [1, 2])
    record = dump_exception(FileNotFoundError("weights.bin is missing"))
    for start in range(1, MAX_ENTER_FAILURES + 1):
        [worker] = [w for w in h.workers(pool) if w.exit_code is None]
        worker.register()
        assert h.caller.outputs[call] == []  # a failed start: another worker tries
        worker.goodbye("enter-failed", [record])
        worker.exit_code = 0
        h.tick(5.0)
        events = [e["message"] for e in h.pool(pool)["events"]]
        assert any(f"@enter raised ({start} of {MAX_ENTER_FAILURES}" in e for e in events)
    errors = h.caller.values(call)
    assert sorted(errors) == [0, 1]
    assert all(isinstance(e, FileNotFoundError) for e in errors.values())
    assert any("in @enter" in n for n in errors[0].__notes__)
    late = h.caller.submit(pool, [3])  # the pool stays broken
    assert isinstance(h.caller.values(late)[0], FileNotFoundError)


def test_a_started_worker_resets_the_count_of_failed_enters(manual):
    h = manual
    pool = h.caller.register(echo, FunctionOptions(max_containers=1))
    call = h.caller.submit(pool, [1])
    record = dump_exception(ValueError("flaky start"))
    for _ in range(MAX_ENTER_FAILURES - 1):
        [worker] = [w for w in h.workers(pool) if w.exit_code is None]
        worker.register()
        worker.goodbye("enter-failed", [record])
        worker.exit_code = 0
        h.tick(5.0)
    [worker] = [w for w in h.workers(pool) if w.exit_code is None]
    worker.register()
    worker.ask(1)  # it started: the failures before it are forgiven
    worker.finish()
    assert h.caller.values(call) == {0: 1}
    worker.die(0)
    h.tick(5.0)
    later = h.caller.submit(pool, [2])
    for _ in range(MAX_ENTER_FAILURES - 1):  # counted from zero again: not broken
        [worker] = [w for w in h.workers(pool) if w.exit_code is None]
        worker.register()
        worker.goodbye("enter-failed", [record])
        worker.exit_code = 0
        h.tick(5.0)
    assert h.caller.outputs[later] == []


def test_yielded_values_reach_the_caller_before_the_input_is_settled(manual):
    h = manual
    pool = h.caller.register(echo, FunctionOptions(max_containers=1))
    call = h.caller.submit(pool, [0], kind="remote")
    [worker] = h.workers(pool)
    worker.register()
    worker.ask(1)
    report(worker, (STATUS_YIELD, "a", "", ""), (STATUS_YIELD, "b", "", ""))
    assert [o.value for o in h.caller.outputs[call]] == ["a", "b"]
    assert h.pool(pool)["num_running_inputs"] == 1  # still running
    report(worker, (STATUS_YIELD, "c", "", ""), (STATUS_OK, None, "done\n", ""))
    assert [o.value for o in h.caller.outputs[call]] == ["a", "b", "c", None]
    assert h.caller.outputs[call][-1].stdout == "done\n"
    assert h.pool(pool)["num_running_inputs"] == 0


def test_a_retried_inputs_earlier_output_is_kept_with_its_attempt(manual):
    h = manual
    retries = RetryPolicy(max_retries=1, initial_delay=0.0)
    pool = h.caller.register(echo, FunctionOptions(max_containers=1, retries=retries))
    call = h.caller.submit(pool, [0], kind="remote")
    [worker] = h.workers(pool)
    worker.register()
    worker.ask(1)
    report(worker, (STATUS_ERROR, ValueError("first"), "try 1\n", "warn 1\n"))
    worker.held.pop(0)
    assert h.caller.outputs[call] == []
    worker.ask(1)
    h.tick()
    report(worker, (STATUS_OK, 7, "try 2\n", ""))
    [out] = h.caller.outputs[call]
    assert out.value == 7
    assert out.stdout == "[attempt 1] try 1\n[attempt 2] try 2\n"
    assert out.stderr == "[attempt 1] warn 1\n"
