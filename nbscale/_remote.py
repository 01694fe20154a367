"""A single call's lane: ``f.remote(...)`` without the map engine.

A call of one input needs none of an ``Invocation``'s machinery (its feeder, in-flight
window, limits, output queue and reordering): it sends its input with its total, and
waits for its one output, which the control plane sends once it is final (retries happen
there). What a ``.remote()`` promises holds here as on a map: the call ends with
``ConnectionLostError`` when the connection is lost, and a cancelled wait (Ctrl-C, a
cancelled ``.aio``) cancels the call on the control plane.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from nbscale_runtime import protocol
from nbscale_runtime.protocol import OUT_WHERE
from nbscale_runtime.serialization import PayloadWriter, split_payload

from . import _config, _nested
from ._call_ids import new_call_id
from ._chunks import check_input_sizes
from ._loop import Blocked, BusyPolling
from ._outcomes import Output, decode, print_output
from ._pickling import add_input
from .exceptions import CallCancelledError, NbscaleError

if TYPE_CHECKING:
    from ._client import Client


class SingleCall:
    """One call of one input: its output, awaited."""

    __slots__ = (
        "answered",
        "blocked",
        "call_id",
        "client",
        "code_files",
        "function",
        "output",
        "pool_id",
        "timeout",
    )

    def __init__(
        self,
        client: Client,
        pool_id: str,
        function: str,
        timeout: float,
        code_files: dict[str, str] | None = None,
        blocked: Blocked | None = None,
    ) -> None:
        """``blocked``: the thread blocked on this call, answered as soon as its output
        comes (then ``answered``), without waiting for the coroutine to resume."""
        self.client = client
        self.pool_id = pool_id
        self.function = function
        self.timeout = timeout
        self.code_files = code_files
        self.call_id = new_call_id()
        self.output: asyncio.Future[Output] = asyncio.get_running_loop().create_future()
        self.blocked = blocked
        self.answered = False

    async def run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Output:
        """Send the input, and return its output once it is final."""
        # first: a bad setting is refused before anything of this call is kept
        polling = BusyPolling(_config.fresh("busy_poll_us") if self.blocked else 0)
        writer = PayloadWriter()
        where = add_input(writer, 0, args, kwargs)
        items: list[list[Any]] = [[0, *where, 0, []]]  # a SUBMIT_* row
        frames = writer.frames()
        max_mib = self.client.server_info.get("max_input_mib")
        if max_mib is not None:
            check_input_sizes(items, frames, int(max_mib) << 20, self.function)
        msg = protocol.SubmitInputs(
            0,
            self.call_id,
            self.pool_id,
            "remote",
            items,
            1,
            False,
            parent=_nested.parent(),  # on a worker: the input whose code makes this call
        )
        client, call_id = self.client, self.call_id
        client.handlers[call_id] = self._on_outputs
        client.lost_handlers[call_id] = self._on_lost
        sent = False
        try:
            reply = client.send_request(msg, frames)
            sent = True
            with polling:  # for a blocked thread, the reply is polled for
                value, _ = await reply
                if value.get("cancelled"):  # someone else (the REST API, a sidebar) did
                    raise CallCancelledError(f"{self.function}: the call was cancelled")
                return await self.output
        except asyncio.CancelledError:
            self._forget()
            # (cancelling this task cancelled the output's future too, unless it came)
            came = self.output.done() and not self.output.cancelled()
            if sent and not came:  # the control plane may still run it: stop it
                with contextlib.suppress(NbscaleError):
                    await client.request(protocol.CancelCall(0, call_id))
            raise
        finally:
            self._forget()

    def _forget(self) -> None:
        self.client.handlers.pop(self.call_id, None)
        self.client.lost_handlers.pop(self.call_id, None)

    def _on_outputs(self, items: list[list[Any]], payload: list[Any]) -> None:
        item = items[0]  # one input: its final output, the only one that comes
        [(data, bufs)] = split_payload(payload, [item[OUT_WHERE]])
        out = decode(item, data, bufs, self.function, self.timeout, self.code_files)
        self._forget()
        if self.output.done():
            return
        if self.blocked is None:
            self.output.set_result(out)
            return
        try:
            print_output(out, prefix=False)
        finally:  # a failed print (logged by the client) holds up no result
            self.blocked.answer(out.ok, out.value)
            self.answered = True
            self.output.set_result(out)

    def _on_lost(self, error: BaseException) -> None:
        """The connection to the control plane is lost: the call ends with ``error``."""
        self._forget()
        if not self.output.done():
            self.output.set_exception(error)
