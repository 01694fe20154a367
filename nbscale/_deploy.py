"""Deployed apps, the client's side: ``app.deploy()`` registers an app's functions and
classes with the Jupyter server's control plane (``nbscale_server/deployed.py``), and
``Function.from_name`` / ``Cls.from_name`` give handles on them from any kernel or script.

A deployed function travels as its workers load it (its pickle, made with its source by
value), so that a caller needs neither its source nor its packages: its handle registers a
pool from those bytes, named ``app/function``. A deployed class travels as the ``Cls``
itself, rebuilt in the caller (its methods' code by value; what they import must be
importable where it is looked up, as for any class passed to a function).
"""

from __future__ import annotations

import pickle
import sys
from typing import TYPE_CHECKING, Any

from nbscale_runtime import protocol
from nbscale_server.deployed import pool_label
from nbscale_server.options import FunctionOptions

from ._client import get_client
from ._function import Function
from ._loop import get_loop
from ._pickling import pickle_function
from .exceptions import InvalidError

if TYPE_CHECKING:
    from ._app import App
    from ._cls import Cls

NEEDS_SERVER = (
    "deploying needs the Jupyter server's control plane, which outlives this process: this "
    "process embeds its own, and what it deployed would be gone when it exits (start "
    "`jupyter lab` or `jupyter server` first: `nbscale deploy` finds it, and its kernels "
    "use it)"
)


async def deploy(app: App) -> dict[str, Any]:
    """Register ``app``'s functions and classes under its name; the deployed app's model
    (its name, functions, classes and when)."""
    client = await get_client()
    if client.mode == "embedded":
        raise InvalidError(NEEDS_SERVER)
    specs: list[dict[str, Any]] = []
    frames: list[bytes] = []
    for name, fn in app.registered_functions.items():
        data, function_id = fn._pickle()
        options = await fn._wire_options(client)
        kind = "generator" if fn.is_generator else "function"
        specs.append(_spec(name, kind, function_id, options))
        frames.append(data)
    for name, cls in app.registered_classes.items():
        fresh = type(cls)(cls.user_cls, cls.options, cls.image, cls.startup_timeout)
        data, function_id = pickle_function(fresh)  # without the objects made here
        specs.append(_spec(name, "cls", function_id, cls.options))
        frames.append(data)
    if not specs:
        raise InvalidError(f"app {app.name!r} has no function or class to deploy")
    value, _ = await client.request(protocol.DeployApp(0, app.name, specs), frames)
    return dict(value)


def _spec(name: str, kind: str, function_id: str, options: FunctionOptions) -> dict[str, Any]:
    path = [p for p in sys.path if p]
    return {
        "name": name,
        "kind": kind,
        "function_id": function_id,
        "options": options.to_wire(),
        "sys_path": path,
    }


async def _lookup(app: str, name: str) -> tuple[dict[str, Any], bytes]:
    client = await get_client()
    value, frames = await client.request(protocol.LookupDeployed(0, app, name))
    frame = frames[0]
    return value, bytes(frame.buffer if hasattr(frame, "buffer") else frame)


def _not_here(*args: Any, **kwargs: Any) -> Any:
    raise InvalidError("a deployed function's code is not in this process")


class DeployedFunction(Function):
    """A function of a deployed app, called by name: ``.remote``, ``.map``, ``.spawn``,
    ``.starmap``, ``.for_each`` (and ``.remote_gen`` for a generator) on its pool."""

    def __init__(self, entry: dict[str, Any], data: bytes) -> None:
        options = FunctionOptions.from_wire(entry["options"])
        super().__init__(_not_here, entry["name"], options)
        self.app_name = entry["app"]
        self.pool_label = pool_label(entry["app"], entry["name"])
        self.deployed_app = entry["app"]
        self.is_generator = entry["kind"] == "generator"
        self._entry = entry
        self._data = data
        self._code_files = {}

    def __repr__(self) -> str:
        return f"<nbscale.Function {self.app_name}/{self.name} (deployed)>"

    def __getstate__(self) -> dict[str, Any]:
        return {"entry": self._entry, "data": self._data}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["entry"], state["data"])  # type: ignore[misc]

    def _pickle(self) -> tuple[bytes, str]:
        return self._data, self._entry["function_id"]

    async def _wire_options(self, client: Any, on_build: Any = None) -> FunctionOptions:
        return self.options  # its image, if any, was built when it was deployed

    def local(self, *args: Any, **kwargs: Any) -> Any:
        raise InvalidError(
            f"{self.app_name}/{self.name} is a deployed function: its code is not here to run "
            "locally; call .remote() instead"
        )

    def get_raw_f(self) -> Any:
        raise InvalidError(
            f"{self.app_name}/{self.name} is a deployed function: its code is not here"
        )

    def _with_settings(self, settings: dict[str, Any], *, variant: bool = False) -> Function:
        raise InvalidError(
            f"{self.app_name}/{self.name} is a deployed function: set its options where it is "
            "defined, and deploy it again"
        )


def function_from_name(app: str, name: str) -> Function:
    entry, data = get_loop().run(_lookup(app, name))
    if entry["kind"] == "cls":
        raise InvalidError(f"{app}/{name} is a class: look it up with Cls.from_name")
    return DeployedFunction(entry, data)


def cls_from_name(app: str, name: str) -> Cls:
    from ._cls import Cls

    entry, data = get_loop().run(_lookup(app, name))
    if entry["kind"] != "cls":
        raise InvalidError(f"{app}/{name} is a function: look it up with Function.from_name")
    cls = pickle.loads(data)
    assert isinstance(cls, Cls)
    cls.name = pool_label(app, name)  # its pools are the deployed app's
    cls.deployed_app = app
    return cls
