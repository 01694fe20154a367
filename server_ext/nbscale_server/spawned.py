"""Calls whose outputs are kept (spawned calls, and maps detached from their caller): their
inputs and outputs in the store, and the callers who fetch them.

``.spawn()`` and ``.spawn_map()`` return once their inputs are kept (durable, with the
Jupyter server's store), and their outputs are kept until fetched and beyond, for the
store's retention time; a detached map's from when it was detached (its inputs not
settled by then are kept too). This room is what the delivery room calls for them: it hands the
store new inputs, settled outputs and finished calls, answers ``get-outputs`` (now, or when
the outputs asked for are in, or at its timeout), finds calls that left memory in the
store, and, at start, resumes the calls a crashed control plane left unfinished.

It keeps only counts in memory (``CallState`` and its ``Outcomes``); the bytes are the
store's (``store.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from nbscale_runtime import protocol
from nbscale_runtime.protocol import (
    ERROR_CONTROL_PLANE,
    ERROR_INVALID,
    ERROR_NOT_FOUND,
    OUT_ATTEMPT,
    OUT_INDEX,
    OUT_STATUS,
    STATUS_OK,
    STATUS_REJECTED,
)

from .calls import CallState, Outcomes
from .errors import RequestError, rejection
from .input_record import apart as apart_inputs
from .options import FunctionOptions
from .outbox import Outbox
from .outputs import Entry, apart, outputs_message
from .pool import Pool, Records
from .queue import InputRecord
from .store import Durable, SpawnStore, Unfinished
from .values import is_count, is_number

log = logging.getLogger("nbscale.control_plane")

_HOUSEKEEPING_PERIOD = 60.0  # seconds between two retention sweeps


class SpawnedCalls:
    def __init__(
        self,
        calls: dict[str, CallState],
        outbox: Outbox,
        store: SpawnStore,
        clock: Callable[[], float],
    ) -> None:
        self.calls = calls  # the delivery's registry of running calls, shared
        self.outbox = outbox
        self.store = store
        self.clock = clock
        self._waiting: set[str] = set()  # calls with get-outputs waiting for a deadline
        self._swept = 0.0

    # --- what the delivery hands over ---------------------------------------------------

    def submitted(
        self, pool: Pool, call: CallState, records: list[InputRecord], then: Durable
    ) -> None:
        """New inputs of ``call`` (not counted in ``call.submitted`` yet), to keep (a
        run's input by input)."""
        records = apart_inputs(records)
        top = call.submitted + len(records)
        for r in records:  # kept by index: a wild one must not get in
            if type(r.index) is not int or not 0 <= r.index < top:
                message = f"spawned call {call.call_id}: input index {r.index!r} out of range"
                raise RequestError(ERROR_INVALID, message)
        if call.outcomes is None:
            call.outcomes = Outcomes()
        self.store.submitted(pool, call, records, then)

    def detached(self, pool: Pool, call: CallState) -> None:
        """A map detached from its caller: kept from now on as a spawned call, with its
        inputs not settled yet (so that they, too, run again after a crash)."""
        call.outcomes = Outcomes()
        pending, held = pool.queue.inputs_of(call.call_id)

        def then(error: str | None) -> None:
            if error is not None:
                log.error("detached call %s: its inputs could not be kept: %s", call.call_id, error)

        self.store.submitted(pool, call, apart_inputs(pending + held), then)

    def returned(
        self, call: CallState, delivered: list[tuple[int, int]], given_back: list[Entry]
    ) -> None:
        """A detached map's caller says which results it returned (``delivered``: ranges,
        never stored) and gives back those it held but had not returned."""
        call.delivered = delivered
        call.detaching = False
        self.store.delivered(call)
        for entry in given_back:
            for item, data, bufs in apart(entry):  # a run the caller held: some returned
                if not call.delivered_before(item[OUT_INDEX]):
                    self._keep(call, item, data, bufs)
        self.answer_waiters(call)

    def settled(self, call: CallState, item: list[Any], data: Any, bufs: Any) -> None:
        """An input's final output (``item``: its outputs row; a run's: theirs), kept for
        who fetches it."""
        for one in apart((item, data, bufs)):
            self._keep(call, *one)
        self.answer_waiters(call)

    def _keep(self, call: CallState, item: list[Any], data: Any, bufs: Any) -> None:
        index = item[OUT_INDEX]
        if call.outcomes is None:  # a spawn's: made here, not with the call, which costs
            call.outcomes = Outcomes()  # the garbage collector an object less meanwhile
        call.outcomes.mark(index, item[OUT_STATUS] == STATUS_OK, int(item[OUT_ATTEMPT]))
        self.store.settled(call, index, item, data, bufs)

    def closed(self, call: CallState) -> None:
        self.store.closed(call)

    def lookup(self, call_id: str) -> CallState:
        """A spawned call that left memory, from the store; NotFoundError if none."""
        call = self.store.finished_call(call_id)
        if call is None:
            raise RequestError(ERROR_NOT_FOUND, self.store.why_missing(call_id))
        return call

    def housekeep(self, now: float) -> None:
        """Drop what outlived its retention time, once a minute (``now``: the clock's)."""
        if now - self._swept >= _HOUSEKEEPING_PERIOD:
            self._swept = now
            self.store.housekeep(time.time())

    # --- get-outputs --------------------------------------------------------------------

    def wait_for_outputs(self, identity: bytes, msg: protocol.GetOutputs, call: CallState) -> None:
        """Answer ``get-outputs`` once the outputs asked for are stored (or at its timeout)."""
        start, end = msg.start, msg.end
        if not is_count(start) or not (end is None or (is_count(end) and end >= start)):
            raise RequestError(
                ERROR_INVALID,
                f"inputs are asked for by index, an int >= 0 (and an end >= it), got "
                f"{start!r} and {end!r}",
            )
        if _beyond(call, start, end):
            raise RequestError(ERROR_INVALID, _no_input(call, start))
        if msg.end == msg.start + 1 and call.delivered_before(msg.start):
            raise RequestError(
                ERROR_INVALID,
                f"the result of input {msg.start} of {call.call_id} went to its caller "
                "before the call was detached",
            )
        timeout = msg.timeout
        if timeout is not None and (not is_number(timeout) or timeout < 0):
            raise RequestError(
                ERROR_INVALID, f"timeout must be a finite number of seconds >= 0, got {timeout}"
            )
        deadline = None if timeout is None else self.clock() + timeout
        call.waiters = [*call.waiters, (identity, msg.rid, msg.start, msg.end, deadline)]
        self.answer_waiters(call)
        if call.waiters:
            self._waiting.add(call.call_id)

    def answer_waiting(self) -> None:
        """Answer the waiters whose deadline passed (the housekeeping tick)."""
        for call_id in list(self._waiting):
            call = self.calls.get(call_id)
            if call is not None:
                self.answer_waiters(call)
            if call is None or not call.waiters:
                self._waiting.discard(call_id)

    def answer_waiters(self, call: CallState, force: bool = False) -> None:
        if not call.waiters:
            return
        now = self.clock()
        keep = []
        outcomes = call.outcomes or Outcomes()
        for identity, rid, start, end, deadline in call.waiters:
            if _beyond(call, start, end):  # its total came since: that input never will
                refusal = RequestError(ERROR_INVALID, _no_input(call, start))
                self.outbox.refuse(identity, rid, refusal)
                continue
            stop = end if end is not None else call.total
            if stop is not None and call.total is not None:
                stop = min(stop, call.total)  # no wait for inputs the call will never have
            ready = call.finished or (stop is not None and all_settled(call, outcomes, start, stop))
            expired = deadline is not None and now >= deadline
            if not (ready or expired or force):
                keep.append((identity, rid, start, end, deadline))
                continue
            try:
                entries = self.store.outputs(call.call_id, start, stop)
            except RequestError as exc:
                self.outbox.refuse(identity, rid, exc)
                continue
            message, frames = outputs_message(entries)
            value = {"items": message.items, **call.as_dict(), "timeout": call.timeout}
            self.outbox.reply(identity, rid, value, frames)
        call.waiters = keep or ()

    # --- after a crash ------------------------------------------------------------------

    def resume(self, records: Records, total_cap: int) -> list[Pool]:
        """Take back the calls a crashed control plane left unfinished: their pools made
        again, their unsettled inputs queued (run again: at least once). Returns the pools
        that got inputs."""
        grown: dict[str, Pool] = {}
        for unfinished in self.store.unfinished():
            call = unfinished.call
            if call.total is None:  # its caller's connection died with the server: no more
                call.total = call.submitted
            if call.finished:  # all of it settled, only its closing was lost
                self.store.closed(call)
                continue
            pool = records.pools.get(call.pool_id) or self._pool_of(unfinished, total_cap)
            if pool is None:
                continue
            records.pools[pool.pool_id] = pool
            call.pool_id = pool.pool_id  # the same, unless a new version names pools anew
            self.calls[call.call_id] = call
            if unfinished.inputs:
                pool.queue.submit(unfinished.inputs)
                grown[pool.pool_id] = pool
            log.info(
                "spawned call %s of %s: %d inputs to run again after a restart",
                call.call_id,
                pool.name,
                len(unfinished.inputs),
            )
        for pool in grown.values():
            pool.note("inputs of spawned calls taken back after a restart", time.time())
        return list(grown.values())

    def _pool_of(self, unfinished: Unfinished, total_cap: int) -> Pool | None:
        stored = unfinished.pool
        try:
            options = FunctionOptions.from_wire(stored.options)
        except (TypeError, ValueError) as exc:
            self._abandon(unfinished, f"its function's options cannot be read any more: {exc}")
            return None
        return Pool.create(
            stored.function_id,
            stored.name,
            stored.function,
            options,
            stored.sys_path,
            stored.client_versions,
            total_cap,
            stored.owner,
        )

    def _abandon(self, unfinished: Unfinished, why: str) -> None:
        """Fail the unsettled inputs of a call that cannot run again, saying why."""
        call = unfinished.call
        payload = rejection(ERROR_CONTROL_PLANE, f"spawned call {call.call_id}: {why}")
        outcomes = call.outcomes = call.outcomes or Outcomes()
        for record in unfinished.inputs:
            row = protocol.output_row(call.call_id, record.index, 0, STATUS_REJECTED, (0, 0, 0))
            outcomes.mark(record.index, False, 0)
            self.store.settled(call, record.index, row, payload, [])
            call.reported += 1
            call.failed += 1
        if call.total is None:
            call.total = call.submitted
        log.error("spawned call %s: %s", call.call_id, why)
        self.store.closed(call)


def _beyond(call: CallState, start: int, end: int | None) -> bool:
    """One input asked for (``FunctionCall.get``) that the call does not have."""
    return end == start + 1 and call.total is not None and start >= call.total


def _no_input(call: CallState, start: int) -> str:
    n = call.total or 0
    return f"{call.call_id} has {n:,} input{'' if n == 1 else 's'}: there is no input {start}"


def all_settled(call: CallState, outcomes: Outcomes, start: int, stop: int) -> bool:
    """Inputs ``start`` .. ``stop`` settled (or, for a detached map, went to its caller
    before it was detached)."""
    if not call.delivered:
        return outcomes.all_settled(start, stop)
    return all(outcomes.get(i) is not None or call.delivered_before(i) for i in range(start, stop))
