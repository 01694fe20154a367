"""The connection from this process to a control plane.

``get_client()`` returns the process's one client. It connects to the control plane named
by ``NBSCALE_CONNECTION_FILE`` (the Jupyter server extension exports it to kernels), and
otherwise starts one embedded in this process, on the background loop, with workers as local
subprocesses. Requests are answered by ``Reply`` messages matched by request id; outputs are
pushed as they finish and routed to the call that is waiting for them.

A server's control plane can die (the Jupyter server killed) or freeze. While it has
requests or calls outstanding, the client pings it every second and watches its process:
when the process is gone, or nothing has come back for ``connect_timeout`` seconds, every
waiting call ends with ``ConnectionLostError``. The next call connects again, to the
restarted server's control plane if there is one (``_discovery.py``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import itertools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import cloudpickle
import zmq

# The client's messages, which ``protocol`` loads at their first use (a worker needs none):
# a caller needs them all, loaded with it rather than on its first call's path.
import nbscale_runtime.client_messages  # noqa: F401
from nbscale_runtime import protocol
from nbscale_runtime.protocol import OUT_CALL_ID
from nbscale_server.callers import ProcessWatch
from nbscale_server.channel import Channel, unbounded
from nbscale_server.launchers import LaunchFailed

from . import _config, _nested, _prestart
from ._discovery import ServerFile, find_server
from ._loop import get_loop
from ._owner import is_mine, this_owner
from .exceptions import (
    ConnectionLostError,
    ControlPlaneError,
    LaunchError,
    VersionMismatchError,
    from_wire,
)

log = logging.getLogger("nbscale")

OutputHandler = Callable[[list[list[Any]], list[Any]], None]
ChannelOpener = Callable[[Callable[[list[Any]], None]], "Channel | _nested.LinkChannel"]
PING_INTERVAL = 1.0  # seconds between pings while requests or calls are outstanding


class Client:
    """Talks to a control plane over ZeroMQ, or, when it is embedded in this process, through
    a direct link that hands message objects over on the same loop."""

    def __init__(
        self,
        ctx: zmq.Context[Any],
        endpoint: str,
        control_plane: Any = None,
        server: ServerFile | None = None,
        opener: ChannelOpener | None = None,
    ) -> None:
        """``opener``: opens the connection (code on a worker: over the worker's link)."""
        self.ctx = ctx
        self.endpoint = endpoint
        self.control_plane = control_plane
        self.server = server  # the Jupyter server's connection file, when it is theirs
        self.mode = "embedded" if control_plane is not None else "server"
        self.channel: Channel | _nested.LinkChannel | None = None
        if control_plane is not None:
            self._send = control_plane.connect_local(self._on_decoded)
        elif opener is not None:
            self.mode = "worker"
            self.channel = opener(self._on_message)
            linked = self.channel
            self._send = lambda msg, payload: linked.send(protocol.encode(msg, payload))
        else:
            sock = unbounded(ctx.socket(zmq.DEALER))
            sock.connect(endpoint)
            self.channel = Channel(sock, self._on_message)
            channel = self.channel
            self._send = lambda msg, payload: channel.send(protocol.encode(msg, payload))
        self._rids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[tuple[Any, list[Any]]]] = {}
        self.handlers: dict[str, OutputHandler] = {}
        self.progress_handlers: dict[str, Callable[[protocol.Progress], None]] = {}
        self.detach_handlers: dict[str, Callable[[protocol.Detach], None]] = {}
        # calls waiting for outputs: told when the connection is lost
        self.lost_handlers: dict[str, Callable[[BaseException], None]] = {}
        self.server_info: dict[str, Any] = {}
        self.lost: ConnectionLostError | None = None
        self._received = 0  # messages from the control plane, for the watch
        self._watch_task: asyncio.Task[None] | None = None

    async def hello(self) -> None:
        msg = protocol.Hello(
            protocol.PROTOCOL_VERSION,
            ".".join(map(str, sys.version_info[:3])),
            cloudpickle.__version__,
            owner=this_owner(),
        )
        self.server_info, _ = await self.request(msg)
        if self.channel is not None:  # a control plane in another process can be lost
            self._watch_task = asyncio.ensure_future(self._watch())

    def describe(self) -> str:
        """ "the control plane at ipc://... (Jupyter server http://...)" """
        if self.server is not None:
            return self.server.describe()
        return f"the control plane at {self.endpoint}"

    async def request(
        self, msg: protocol.Message, payload: list[Any] | tuple[Any, ...] = ()
    ) -> tuple[Any, list[Any]]:
        return await self.send_request(msg, payload)

    def send_request(
        self, msg: protocol.Message, payload: list[Any] | tuple[Any, ...] = ()
    ) -> asyncio.Future[tuple[Any, list[Any]]]:
        """Send a request now; its reply (value, payload frames) comes in the future."""
        if self.lost is not None:
            raise self.lost
        rid = next(self._rids)
        msg = _with_rid(msg, rid)
        future: asyncio.Future[tuple[Any, list[Any]]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            self._send(msg, list(payload))
        except BaseException:
            self._pending.pop(rid, None)
            raise
        if future.done():  # answered within the send (a control plane embedded here)
            self._pending.pop(rid, None)
        else:  # no callback scheduled for it: no loop turn (nor wake-up) per request
            future.add_done_callback(lambda _: self._pending.pop(rid, None))  # or cancelled
        return future

    def _on_message(self, frames: list[Any]) -> None:
        try:
            msg, payload = protocol.decode(frames)
        except protocol.ProtocolError as exc:
            log.warning("nbscale: dropping a message: %s", exc)
            return
        self._on_decoded(msg, payload)

    def _on_decoded(self, msg: protocol.Message, payload: list[Any]) -> None:
        self._received += 1
        if isinstance(msg, protocol.Reply):
            future = self._pending.get(msg.rid)
            if future is None or future.done():
                return
            if msg.error:
                kind, message, details = msg.error
                future.set_exception(from_wire(kind, message, details))
            else:
                future.set_result((msg.value, payload))
        elif isinstance(msg, protocol.Outputs):
            self._route_outputs(msg.items, payload)
        elif isinstance(msg, protocol.Progress):
            on_progress = self.progress_handlers.get(msg.call_id)
            if on_progress is not None:
                on_progress(msg)
        elif isinstance(msg, protocol.Detach):
            on_detach = self.detach_handlers.get(msg.call_id)
            if on_detach is not None:
                on_detach(msg)

    def _route_outputs(self, items: list[list[Any]], payload: list[Any]) -> None:
        first = items[0][OUT_CALL_ID]
        if len(items) == 1 or all(item[OUT_CALL_ID] == first for item in items):
            groups = {first: items}
        else:
            groups = {}
            for item in items:
                groups.setdefault(item[OUT_CALL_ID], []).append(item)
        for call_id, group in groups.items():
            handler = self.handlers.get(call_id)
            if handler is not None:
                try:
                    handler(group, payload)
                except Exception:
                    log.exception("nbscale: error handling outputs of %s", call_id)

    # --- is the control plane still there? ----------------------------------------------

    def _busy(self) -> bool:
        return bool(self._pending or self.handlers or self.lost_handlers)

    async def _watch(self) -> None:
        """While something is outstanding, ping every second; lose the connection when the
        control plane's process is gone or nothing came back for ``connect_timeout`` s."""
        loop = asyncio.get_running_loop()
        pid = self.server_info.get("pid")
        local = self.endpoint.startswith("ipc://")
        process = ProcessWatch(pid) if local and isinstance(pid, int) else None
        timeout = float(_config.get("connect_timeout"))
        heard, quiet_since = self._received, loop.time()
        while self.lost is None:
            await asyncio.sleep(PING_INTERVAL)
            if self.channel is not None:
                self.channel.drain()  # what arrived while this loop was held up counts
            now = loop.time()
            if self._received != heard or not self._busy():
                heard, quiet_since = self._received, now
            if not self._busy():
                continue
            if process is not None and process.gone():
                self.lose(f"its process (pid {pid}) is gone")
            elif now - quiet_since > timeout:
                self.lose(f"it has not answered for {now - quiet_since:.0f} s")
            elif self.channel is not None:
                self.channel.send(protocol.encode(protocol.Ping(0)))  # answered: reply 0

    def lose(self, reason: str) -> None:
        """The connection is lost: every request and call waiting on it ends with
        ``ConnectionLostError``; later requests raise it at once."""
        if self.lost is not None:
            return
        self.lost = ConnectionLostError(
            f"lost the connection to {self.describe()}: {reason}. Calls in flight are lost "
            "with it (spawned calls may be found again with FunctionCall.from_id once the "
            "server is back); new calls connect again.",
            endpoint=self.endpoint,
            server_url=self.server.url if self.server is not None else None,
        )
        log.warning("nbscale: %s", self.lost)
        for future in list(self._pending.values()):
            if not future.done():
                future.set_exception(self.lost)
        for on_lost in list(self.lost_handlers.values()):
            on_lost(self.lost)
        if self.channel is not None:
            self.channel.close()

    async def close(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
        if self.channel is not None:
            self.channel.close()
        if self.control_plane is not None:
            await self.control_plane.stop()
        self.ctx.term()


def _with_rid(msg: protocol.Message, rid: int) -> protocol.Message:
    # The message was made by the caller for this request only: stamping its id in place
    # is safe, and much cheaper than dataclasses.replace on this hot path.
    object.__setattr__(msg, "rid", rid)
    return msg


_client: Client | None = None
_client_pid: int | None = None
_connecting: asyncio.Lock | None = None


async def get_client() -> Client:
    """The process's client, connecting (or starting a control plane) on first use, and
    again after its connection was lost."""
    global _client, _client_pid, _connecting
    client = _client
    if client is not None and _client_pid == os.getpid() and client.lost is None:
        return client
    if _connecting is None:
        _connecting = asyncio.Lock()
    async with _connecting:
        if _client is None or _client_pid != os.getpid() or _client.lost is not None:
            previous = _client if _client_pid == os.getpid() else None
            _client = None
            if previous is not None:
                await previous.close()
            _client = await _connect(previous)
            _client_pid = os.getpid()
    return _client


async def _connect(previous: Client | None = None) -> Client:
    """Connect to the control plane of the worker this code runs on, or to the Jupyter
    server's (after a lost connection: the same server's, restarted), or start one
    embedded in this process."""
    known_url = previous.server.url if previous and previous.server else None
    server = find_server(os.environ.get("NBSCALE_CONNECTION_FILE"), known_url)
    ctx: zmq.Context[Any] = zmq.Context()
    failure = os.environ.get("NBSCALE_CONNECTION_ERROR")
    worker = _nested.host()
    if worker is not None:  # code on a worker: its worker's control plane, over its link
        opener = functools.partial(_nested.open_channel, worker)
        client = Client(ctx, worker.endpoint, opener=opener)
        _nested.lend_while_blocked(worker)
    elif server is not None:
        client = Client(ctx, server.info["client_endpoint"], server=server)
    elif failure:  # the Jupyter server meant to host it and could not: say so, loudly
        ctx.term()
        raise ControlPlaneError(
            f"{failure}. Fix that and restart the server, or unset NBSCALE_CONNECTION_ERROR "
            "to run a control plane in this process"
        )
    else:
        ahead = None
        try:
            cfg = _config.control_plane_config()
            # The zygote started at import, or now while the control plane's modules load.
            ahead = _prestart.take(cfg.launcher, cfg.python or sys.executable, cfg.process_zygote)
            from nbscale_server.control_plane import ControlPlane

            cp = ControlPlane(cfg, ctx=ctx, head_start=ahead)
        except BaseException as exc:  # a bad setting, a full disk: nothing left behind
            ctx.term()
            if ahead is not None:
                ahead.discard()
            if isinstance(exc, LaunchFailed):  # e.g. launcher=docker and no engine answers
                raise LaunchError(str(exc)) from None
            raise
        await cp.start()
        client = Client(ctx, cp.client_endpoint, control_plane=cp)
        atexit.register(_shutdown_at_exit)
    try:
        await asyncio.wait_for(client.hello(), timeout=_config.get("connect_timeout"))
    except TimeoutError:
        await client.close()
        raise ControlPlaneError(
            f"no answer from the control plane at {client.endpoint} within "
            f"{_config.get('connect_timeout')} s"
        ) from None
    except VersionMismatchError:
        await client.close()
        raise
    return client


async def hello(info: dict[str, Any], timeout: float) -> dict[str, Any]:
    """What the control plane of a connection file's ``info`` says of itself (version,
    launcher and why), asked over its socket without staying connected; raises
    ``ControlPlaneError`` when it does not answer within ``timeout`` seconds."""
    client = Client(zmq.Context(), info["client_endpoint"])
    try:
        await asyncio.wait_for(client.hello(), timeout)
    except TimeoutError:
        raise ControlPlaneError(
            f"no answer from the control plane at {client.endpoint} within {timeout:g} s"
        ) from None
    finally:
        await client.close()
    return client.server_info


def is_current(client: Client) -> bool:
    """Whether ``client`` is still this process's connection (not shut down since)."""
    return client is _client and _client_pid == os.getpid()


async def _shutdown() -> None:
    global _client
    client, _client = _client, None
    if client is not None:
        await client.close()


async def _status(all_pools: bool = False) -> dict[str, Any]:
    client = await get_client()
    info = dict(client.server_info)
    stats, _ = await client.request(protocol.GetStats(0, None))
    info["mode"] = client.mode
    pools = stats["pools"]
    info["pools"] = pools if all_pools else [p for p in pools if is_mine(p["owner"])]
    info["other_pools"] = len(pools) - len(info["pools"])
    info["spares"] = stats.get("spares", [])  # a control plane before them sends none
    return info


def status(all_pools: bool = False) -> dict[str, Any]:
    """Which control plane this process uses (embedded or the Jupyter server's), its
    endpoints and launcher, and the state of this kernel's (or process's) pools, or of every
    pool with ``all_pools=True``; ``other_pools`` counts those left out; ``spares`` names
    the launcher's warm spare containers."""
    return get_loop().run(_status(all_pools))


def shutdown() -> None:
    """Stop this process's embedded control plane and its workers (or disconnect)."""
    if _client is not None and _client_pid == os.getpid():
        get_loop().run(_shutdown())


def _shutdown_at_exit() -> None:
    client = _client
    if client is None or _client_pid != os.getpid():
        return
    cp = client.control_plane
    # an embedded control plane stops its workers within their grace (a class's @exit's)
    grace = 5.0 if cp is None else cp.config.stop_grace + cp.config.exit_grace
    try:
        get_loop().submit(_shutdown()).result(timeout=grace + 5)
    except Exception:
        if cp is not None:
            with contextlib.suppress(Exception):
                cp.stop_workers_now()
