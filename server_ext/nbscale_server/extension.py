"""The Jupyter server extension: the control plane lives in the Jupyter server.

Installed with the wheel, it is enabled by ``etc/jupyter/jupyter_server_config.d/nbscale.json``.
When the server's loop runs, it starts one control plane on that loop, publishes its
connection file for the kernels the server starts (``discovery.py``), and serves the REST and
WebSocket API (``handlers.py``). Kernels then share its pools and limits, and a kernel restart
loses nothing: pools, workers and spawned calls belong to the server. When the server stops,
so do the workers.

Settings are traits, read from ``jupyter_server_config.py`` or ``jupyter_nbscale_config.py``
as ``c.NbScale.<name>``; ``NbScale.class_print_help()`` lists them with their help. They are
made from the one settings table (``settings.py``): every setting the server reads, each
with its type, default, bounds and help.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import posixpath
import sqlite3
from typing import Any

import zmq
from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Enum, Float, Integer, TraitType, Unicode

from . import settings
from .control_plane import ControlPlane
from .discovery import Publication, announce_failure
from .events import EventHub
from .handlers import routes
from .launchers import LaunchFailed
from .models import OwnerModel
from .settings import ControlPlaneConfig, Setting
from .store_writer import StoreError


class NbScale(ExtensionApp):
    """Hosts the nbscale control plane in the Jupyter server."""

    name = "nbscale"
    description = "Modal-style .map() over autoscaled worker pools, hosted by this server."

    events_interval: float  # traits, like every setting: made from the table below
    store_path: str | None

    control_plane: ControlPlane | None = None
    failure: str | None = None  # why the control plane could not start, if it could not
    hub: EventHub | None = None
    publication: Publication | None = None
    _lookups: set[asyncio.Task[None]]  # notebook look-ups under way (owners.py)

    def control_plane_config(self) -> ControlPlaneConfig:
        """The traits, as the control plane's settings."""
        return settings.control_plane_config(lambda setting: getattr(self, setting.name))

    def initialize_handlers(self) -> None:
        self.handlers.extend(routes())

    def store_file(self, serverapp: Any) -> str:
        """Where spawned calls are kept: ``store_path``, or nbscale.db in the data dir."""
        return self.store_path or os.path.join(serverapp.data_dir, "nbscale.db")

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        """Start the control plane on the server's running loop, then tell kernels. When
        it cannot start or be published (a full disk, a store it cannot open), the server
        logs why and kernels are told (``discovery.announce_failure``): they raise that
        error rather than quietly running a control plane of their own."""
        config = self.control_plane_config()
        config.store_path = self.store_file(serverapp)
        plane = None
        try:
            plane = ControlPlane(config, ctx=zmq.Context())
            await plane.start()
            info = {**plane.connection_info(), "jupyter_server_url": serverapp.connection_url}
            self.publication = Publication(serverapp.runtime_dir, info)
        except (OSError, StoreError, sqlite3.Error, LaunchFailed) as exc:
            message = f"the Jupyter server's nbscale control plane could not start: {exc}"
            self.log.error("%s", message)
            self.failure = message
            announce_failure(f"{message} (see the server's log)")
            if plane is not None:
                await plane.stop()
                plane.ctx.term()
            return
        self._lookups = set()
        plane.api.resolve_owner = self._resolve_owner
        self.control_plane = plane
        # The server's own objects (modules, handlers, settings: a few hundred thousand) live
        # as long as it does; out of the collector's sight, each full collection no longer
        # walks them (spawned results read back: 32,000 -> 65,000 a second).
        gc.freeze()
        self.hub = EventHub(plane.api, self.events_interval)
        self.log.info(
            "nbscale control plane at %s (connection file %s); workers: %s (%s)",
            plane.client_endpoint,
            self.publication.path,
            plane.launcher.name,
            plane.launcher_choice.reason,
        )

    def _resolve_owner(self, owner: OwnerModel) -> None:
        """Fill in the notebook of a kernel's pools and calls, from the sessions (soon)."""
        if owner["kernel_id"] is not None:
            task = asyncio.ensure_future(self._find_notebook(owner))
            self._lookups.add(task)
            task.add_done_callback(self._lookups.discard)

    async def _find_notebook(self, owner: OwnerModel) -> None:
        if self.serverapp is None:
            return
        try:
            sessions = await self.serverapp.session_manager.list_sessions()
        except Exception as exc:  # the sessions database closed as the server stops
            self.log.debug("nbscale: no sessions to name %s: %s", owner["name"], exc)
            return
        for session in sessions:
            kernel = session.get("kernel") or {}
            if kernel.get("id") == owner["kernel_id"] and session.get("path"):
                owner["notebook"] = session["path"]
                owner["name"] = posixpath.basename(session["path"])
                return

    async def stop_extension(self) -> None:
        """Withdraw the connection file, then stop every worker and close the sockets."""
        if self.publication is not None:
            self.publication.withdraw()
            self.publication = None
        if self.hub is not None:
            self.hub.close()
            self.hub = None
        plane, self.control_plane = self.control_plane, None
        if plane is not None:
            await plane.stop()
            plane.ctx.term()


class FiniteFloat(Float):  # type: ignore[misc]
    """A float trait that refuses NaN and the infinities (which no setting means)."""

    def validate(self, obj: Any, value: Any) -> Any:
        value = super().validate(obj, value)
        if value is not None and not math.isfinite(value):
            self.error(obj, value)
        return value


def setting_trait(setting: Setting) -> TraitType[Any, Any]:
    """The trait of ``setting``: its type, bounds, server default and help."""
    default = setting.trait_default
    options: dict[str, Any] = {"help": setting.full_help, "allow_none": default is None}
    trait: TraitType[Any, Any]
    if setting.choices:
        trait = Enum(list(setting.choices), default_value=default, **options)
    elif setting.kind is bool:
        trait = Bool(default, **options)
    elif setting.kind is int:
        trait = Integer(default, min=setting.minimum, **options)
    elif setting.kind is float:
        trait = FiniteFloat(default, min=setting.minimum, **options)
    else:
        trait = Unicode(default, **options)
    return trait.tag(config=True)


def _add_setting_traits(app: type[NbScale]) -> None:
    for name, setting in settings.SERVER_SETTINGS.items():
        setattr(app, name, setting_trait(setting))
    app.setup_class(dict(vars(app)))  # what traitlets' metaclass does for a class body


_add_setting_traits(NbScale)
