"""``nbscale.Dict`` and ``nbscale.Queue`` shared by this process and real worker processes
of its (embedded) control plane; the Jupyter server's are in ``test_server_dict_queue.py``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import time

import pytest

import nbscale

app = nbscale.App("test-dict-queue")
shared = nbscale.Dict.from_name("test-dict-queue", create_if_missing=True)
jobs = nbscale.Queue.from_name("test-dict-queue", create_if_missing=True)


@app.function()
def write_and_read(key: str, value: int) -> object:
    shared[key] = value
    return shared.get("from-kernel")


@app.function()
def take_one(timeout: float) -> object:
    return jobs.get(timeout=timeout)


@app.function(max_containers=1)
def wait_for_a_job(timeout: float) -> tuple[int, object]:
    return os.getpid(), jobs.get(timeout=timeout, partition="one-slot")


@app.function()
def put_results(n: int) -> None:
    jobs.put_many([("result", i) for i in range(n)], partition="results")


tally = nbscale.Dict.from_name("test-dict-queue-tally", create_if_missing=True)


@app.function()
def count(key: str) -> int:
    tally[key] = tally.get(key, 0) + 1
    return tally[key]


def pools_of(function: str) -> list[str]:
    return [p["id"] for p in nbscale.status()["pools"] if p["function"] == function]


def test_using_a_named_dict_here_keeps_the_pool_of_the_functions_that_use_it():
    """The defect: the Dict's id, learnt when this process first used it, changed the
    pickle of every function that captures it, so their next call registered a second pool
    (cold workers, and a second 'image not built' line)."""
    assert count.remote("k") == 1
    before = pools_of("count")
    assert tally["k"] == 1  # this process looks the Dict up now
    assert list(count.map(["k", "k"])) in ([2, 3], [3, 2], [2, 2], [3, 3])
    assert pools_of("count") == before and len(before) == 1


def test_a_dict_is_shared_by_this_process_and_its_workers():
    shared.clear()
    shared["from-kernel"] = {"nested": [1, 2]}
    assert list(write_and_read.map(["a", "b"], [1, 2])) == [{"nested": [1, 2]}] * 2
    assert shared["a"] == 1 and shared.get("b") == 2
    assert sorted(shared.keys()) == ["a", "b", "from-kernel"]
    assert shared.len() == 3
    assert "a" in shared and shared.contains("zz") is False
    assert shared.put("a", 99, skip_if_exists=True) is False and shared["a"] == 1
    shared.update({"c": 3}, d=4)
    assert dict(shared.items())["d"] == 4
    assert shared.pop("c") == 3 and shared.pop("c", None) is None
    with pytest.raises(KeyError):
        shared["c"]
    del shared["d"]
    assert sorted(shared.values(), key=str) == [1, 2, {"nested": [1, 2]}]


def test_keys_are_compared_by_their_pickles():
    shared.clear()
    shared[1] = "int"
    shared[1.0] = "float"
    shared[(1, "a")] = "tuple"
    assert shared[1] == "int" and shared[1.0] == "float" and shared[(1, "a")] == "tuple"
    assert shared.len() == 3


def test_a_worker_blocked_on_get_takes_what_this_process_puts_then():
    jobs.clear(all=True)
    call = take_one.spawn(120)
    stats = take_one.get_current_stats()
    deadline = time.monotonic() + 60
    while stats.num_running_inputs < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
        stats = take_one.get_current_stats()
    jobs.put({"job": 7})
    assert call.get(timeout=60) == {"job": 7}
    assert jobs.len(total=True) == 0


def test_a_queue_carries_results_back_by_partition():
    jobs.clear(all=True)
    put_results.remote(5)
    assert jobs.len(partition="results") == 5 and jobs.len() == 0
    assert list(jobs.iterate(partition="results")) == [("result", i) for i in range(5)]
    assert jobs.get_many(3, partition="results") == [("result", i) for i in range(3)]
    assert jobs.get_many(10, partition="results") == [("result", 3), ("result", 4)]


def test_get_times_out_with_none_and_raises_empty_without_blocking():
    jobs.clear(all=True)
    started = time.monotonic()
    assert jobs.get(timeout=0.5) is None
    assert 0.45 <= time.monotonic() - started < 30
    assert jobs.get_many(2, timeout=0.2) == []
    with pytest.raises(queue.Empty):
        jobs.get(block=False)
    with pytest.raises(queue.Empty):
        jobs.get_many(3, block=False)


def test_a_dict_value_over_the_limit_is_refused_before_it_is_sent():
    with pytest.raises(nbscale.InvalidError, match=r"101.0 MiB: the limit is 100 MiB"):
        shared["big"] = b"x" * (101 << 20)
    assert "big" not in shared
    with pytest.raises(nbscale.InvalidError, match="limit is 1 MiB"):
        jobs.put(b"x" * (2 << 20))


def test_missing_named_objects_and_ended_ephemeral_ones_are_not_found():
    with pytest.raises(nbscale.NotFoundError, match="Dict 'no-such-dict' not found"):
        nbscale.Dict.from_name("no-such-dict").get("k")
    with nbscale.Queue.ephemeral() as q:
        q.put(1)
        assert q.get() == 1
    with pytest.raises(nbscale.NotFoundError, match="does not exist"):
        q.put(2)
    nbscale.Dict.from_name("to-delete", create_if_missing=True)["k"] = 1
    nbscale.Dict.delete("to-delete")
    with pytest.raises(nbscale.NotFoundError):
        nbscale.Dict.delete("to-delete")
    nbscale.Dict.delete("to-delete", allow_missing=True)
    with pytest.raises(nbscale.InvalidError, match="not a valid Dict name"):
        nbscale.Dict.from_name("no spaces")


def test_aio_twins_and_a_withdrawn_get_takes_nothing():
    async def main() -> list[object]:
        with nbscale.Dict.ephemeral() as d:
            await d.put.aio("k", 1)
            keys = [k async for k in d.keys.aio()]
            value = await d.get.aio("k")
        async with nbscale.Queue.ephemeral() as q:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(q.get.aio(), 0.5)  # cancelled: its wait is withdrawn
            await asyncio.sleep(0.2)
            await q.put.aio("after")
            left = await q.get.aio(block=False)  # not given to the withdrawn get
            items = [v async for v in q.iterate.aio()]
        return [keys, value, left, items]

    assert asyncio.run(main()) == [["k"], 1, "after", []]


def test_a_get_withdrawn_as_its_item_comes_gives_the_item_back():
    # each get is withdrawn just as the item put for it comes: the item is either returned
    # by the get, or given back to the queue in its place, never lost
    n = 150

    async def main() -> tuple[list[int], list[int]]:
        async with nbscale.Queue.ephemeral() as q:
            got = []
            for i in range(n):
                getter = asyncio.ensure_future(q.get.aio(timeout=30))
                await asyncio.sleep(0.002)  # the get waits on the control plane
                await q.put.aio(i)
                getter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    got.append(await getter)
            left: list[int] = []
            deadline = time.monotonic() + 20
            while len(got) + len(left) < n and time.monotonic() < deadline:
                with contextlib.suppress(queue.Empty):
                    left += await q.get_many.aio(n, block=False)
                await asyncio.sleep(0.05)
            return got, left

    got, left = asyncio.run(main())
    assert sorted(got + left) == list(range(n)), f"lost: {set(range(n)) - set(got + left)}"


def test_a_pop_withdrawn_as_its_value_comes_puts_the_value_back():
    n = 100

    async def main() -> tuple[list[int], list[int]]:
        async with nbscale.Dict.ephemeral() as d:
            got = []
            for i in range(n):
                await d.put.aio(i, i)
                popper = asyncio.ensure_future(d.pop.aio(i))
                await asyncio.sleep(0)
                popper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    got.append(await popper)
            deadline = time.monotonic() + 20
            while len(got) + await d.len.aio() < n and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return got, [k async for k in d.keys.aio()]

    got, left = asyncio.run(main())
    assert sorted(got + left) == list(range(n)), f"lost: {set(range(n)) - set(got + left)}"


def test_a_worker_waiting_on_a_queue_keeps_its_slot():
    # as on Modal, max_containers holds while inputs wait for items: the pool does not
    # start a second worker for the next input (a worker lends its slot only to calls)
    jobs.clear(partition="one-slot")
    calls = [wait_for_a_job.spawn(60) for _ in range(2)]
    time.sleep(3)  # the first input waits in get; a lent slot would start a second worker
    jobs.put_many(["first", "second"], partition="one-slot")
    results = [call.get(timeout=90) for call in calls]
    assert sorted(job for _, job in results) == ["first", "second"]
    assert len({pid for pid, _ in results}) == 1, f"more workers than max_containers: {results}"


def test_a_partition_is_cleared_partition_ttl_seconds_after_its_last_put():
    with nbscale.Queue.ephemeral() as q:
        q.put("brief", partition="brief", partition_ttl=1)
        q.put("default")  # Modal's default: a day
        assert q.len(partition="brief") == 1
        deadline = time.monotonic() + 20
        while q.len(partition="brief") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert q.len(partition="brief") == 0 and q.len() == 1
        with pytest.raises(nbscale.InvalidError, match="partition_ttl is seconds"):
            q.put("x", partition_ttl=7 * 86400)


def test_a_full_partition_makes_put_wait_then_raise_full():
    with nbscale.Queue.ephemeral() as q:
        q.put_many(range(5000), partition="p")
        with pytest.raises(queue.Full):
            q.put(1, block=False, partition="p")
        started = time.monotonic()
        with pytest.raises(queue.Full):
            q.put(1, timeout=0.3, partition="p")
        assert time.monotonic() - started >= 0.3
        q.put("other partition")  # partitions are independent
        assert q.get(partition="p") == 0
        q.put("fits again", partition="p")
        assert q.len(partition="p") == 5000 and q.len(total=True) == 5001
