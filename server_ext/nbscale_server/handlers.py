"""The REST and WebSocket API under ``<base_url>/nbscale/api/`` (models in ``models.py``).

Every handler is authenticated by the Jupyter server (token or login) and authorized on the
``nbscale`` resource. Handlers only parse the request and call one admin method of the
control plane's API (``api.py``); ``_run`` is the one place where its refusals become HTTP
errors: 400 for bad input, 404 for an unknown id, 429 for a limit. A user mistake is never a
bare 500.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http.client import responses
from typing import TYPE_CHECKING, Any, TypeVar, cast

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web, websocket

from nbscale_runtime.protocol import ERROR_INVALID, ERROR_NOT_FOUND, ERROR_RESOURCE_EXHAUSTED

from .api import CALLS_PAGE, Api
from .errors import RequestError
from .models import ErrorModel, StatusModel

if TYPE_CHECKING:
    from .events import EventHub
    from .extension import NbScale

AUTH_RESOURCE = "nbscale"
API = "/nbscale/api"

# The control plane's refusals (RequestError.kind) as HTTP statuses; any other kind is 400.
_STATUS = {ERROR_INVALID: 400, ERROR_NOT_FOUND: 404, ERROR_RESOURCE_EXHAUSTED: 429}
_MAX_PAGE = 10_000  # inputs or log lines in one response
_MAX_INDEX = 2**53  # what JSON numbers hold exactly

T = TypeVar("T")


class _Handler(ExtensionHandlerMixin, APIHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def nbscale(self) -> NbScale:
        return cast("NbScale", self.extensionapp)

    def _run(self, method: Callable[..., T], *args: Any) -> T:
        """Call a control plane method, turning its refusals into HTTP errors."""
        try:
            return method(*args)
        except RequestError as exc:
            raise web.HTTPError(_STATUS.get(exc.kind, 400), "%s", str(exc)) from None

    @property
    def api(self) -> Api:
        plane = self.nbscale.control_plane
        if plane is None:
            why = self.nbscale.failure or "the nbscale control plane is not running"
            raise web.HTTPError(503, "%s", why)
        return plane.api

    def _int_argument(self, name: str, default: int, minimum: int, maximum: int) -> int:
        raw = self.get_query_argument(name, str(default))
        try:
            value = int(raw)
        except ValueError:
            raise web.HTTPError(400, "%s must be an integer, got %r", name, raw) from None
        if not minimum <= value <= maximum:
            raise web.HTTPError(400, "%s must be in %d..%d, got %d", name, minimum, maximum, value)
        return value

    def _reply(self, model: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(model, allow_nan=False))  # never NaN: not JSON

    def _json_body(self) -> Any:
        """The request's JSON body; 400 for anything else, NaN and Infinity included."""
        try:
            return json.loads(self.request.body or b"null", parse_constant=_refuse_constant)
        except ValueError as exc:
            raise web.HTTPError(400, "%s", f"the body is not valid JSON: {exc}") from None
        except RecursionError:
            raise web.HTTPError(400, "%s", "the body is JSON nested too deeply") from None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """An ``ErrorModel``, with the message formatted (Jupyter's own handler sends an
        ``HTTPError``'s message without its arguments)."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if not isinstance(exc, web.HTTPError) or not exc.log_message:
            super().write_error(status_code, **kwargs)
            return
        message = exc.log_message % exc.args if exc.args else exc.log_message
        error: ErrorModel = {"message": message, "reason": exc.reason or responses.get(status_code)}
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(error))


class StatusHandler(_Handler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        """The control plane's version and launcher, and why that launcher: ``StatusModel``."""
        info = self.api.connection_info()
        status: StatusModel = {
            "version": info["version"],
            "launcher": info["launcher"],
            "launcher_reason": info["launcher_reason"],
        }
        self._reply(status)


class AppsHandler(_Handler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        """The deployed apps: ``list[AppModel]``."""
        self._reply(self.api.deployed.list_apps())


class PoolsHandler(_Handler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Every pool: ``list[PoolModel]``."""
        self._reply(self.api.list_pools())


class PoolHandler(_Handler):
    @web.authenticated
    @authorized
    async def get(self, pool_id: str) -> None:
        """One pool: ``PoolModel``."""
        self._reply(self._run(self.api.pool_info, pool_id))

    @web.authenticated
    @authorized
    async def patch(self, pool_id: str) -> None:
        """Change autoscaler settings (``AutoscalerChanges``); returns the ``PoolModel``."""
        changes = self._json_body()
        if not isinstance(changes, dict):
            raise web.HTTPError(400, "%s", "the body must be a JSON object of autoscaler settings")
        self._reply(self._run(self.api.update_autoscaler, pool_id, changes))

    @web.authenticated
    @authorized
    async def delete(self, pool_id: str) -> None:
        """Stop the pool: cancel its calls and stop its workers; returns the ``PoolModel``."""
        self._reply(self._run(self.api.stop_pool, pool_id))


class CallsHandler(_Handler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        """The newest calls: ``list[CallModel]`` (``?limit=500&before=<seq>`` pages on)."""
        limit = self._int_argument("limit", CALLS_PAGE, 1, _MAX_PAGE)
        before = None
        if self.get_query_argument("before", None) is not None:
            before = self._int_argument("before", 0, 0, _MAX_INDEX)
        self._reply(self._run(self.api.list_calls, limit, before))


class CallHandler(_Handler):
    @web.authenticated
    @authorized
    async def get(self, call_id: str) -> None:
        """One call with per-input status: ``CallDetailModel`` (``?start=&limit=``)."""
        start = self._int_argument("start", 0, 0, _MAX_INDEX)
        limit = self._int_argument("limit", 1000, 1, _MAX_PAGE)
        self._reply(self._run(self.api.call_info, call_id, start, limit))

    @web.authenticated
    @authorized
    async def delete(self, call_id: str) -> None:
        """Cancel the call; returns its ``CallModel``."""
        self._reply(self._run(self.api.cancel_call, call_id))


class DetachHandler(_Handler):
    @web.authenticated
    @authorized
    async def post(self, call_id: str) -> None:
        """Detach a running map from its caller (it stops waiting; the call runs on and
        keeps its results for ``FunctionCall.from_id``); returns its ``CallModel``."""
        self._reply(self._run(self.api.detach_call, call_id))


class LogsHandler(_Handler):
    @web.authenticated
    @authorized
    async def get(self, container_id: str) -> None:
        """The last lines a worker wrote, or those since a cursor: ``LogsModel``
        (``?tail=200&after=CURSOR``)."""
        tail = self._int_argument("tail", 200, 1, _MAX_PAGE)
        after = None
        if self.get_query_argument("after", None) is not None:
            after = self._int_argument("after", 0, 0, _MAX_INDEX)
        self._reply(self._run(self.api.worker_logs, container_id, tail, after))


class EventsHandler(
    ExtensionHandlerMixin, WebSocketMixin, websocket.WebSocketHandler, JupyterHandler
):
    """Pushes a ``SnapshotMessage``, then ``ChangesMessage``s (see ``events.py``)."""

    auth_resource = AUTH_RESOURCE

    @property
    def hub(self) -> EventHub | None:
        return cast("NbScale", self.extensionapp).hub

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        user = self.current_user
        allowed = await ensure_async(
            self.authorizer.is_authorized(self, user, "read", AUTH_RESOURCE)
        )
        if not allowed:
            raise web.HTTPError(403)
        if self.hub is None:
            raise web.HTTPError(503, "the nbscale control plane is not running")
        await super().get(*args, **kwargs)

    def open(self, *args: str, **kwargs: str) -> None:
        if self.hub is not None:
            self.hub.add(self)

    def on_message(self, message: str | bytes) -> None:
        """Clients only listen; what they send is ignored."""

    def on_close(self) -> None:
        if self.hub is not None:
            self.hub.remove(self)

    def send_text(self, text: str) -> None:
        try:
            self.write_message(text)
        except websocket.WebSocketClosedError:
            if self.hub is not None:
                self.hub.remove(self)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def routes() -> list[tuple[str, type[Any]]]:
    """The URL patterns, relative to the server's base URL."""
    return [
        (rf"{API}/status", StatusHandler),
        (rf"{API}/apps", AppsHandler),
        (rf"{API}/pools", PoolsHandler),
        (rf"{API}/pools/(?P<pool_id>[^/]+)", PoolHandler),
        (rf"{API}/calls", CallsHandler),
        (rf"{API}/calls/(?P<call_id>[^/]+)", CallHandler),
        (rf"{API}/calls/(?P<call_id>[^/]+)/detach", DetachHandler),
        (rf"{API}/containers/(?P<container_id>[^/]+)/logs", LogsHandler),
        (rf"{API}/events", EventsHandler),
    ]
