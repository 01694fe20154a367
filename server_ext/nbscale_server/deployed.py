"""Deployed apps: functions and classes registered under (app name, name) by
``app.deploy()`` or ``nbscale deploy``, found by ``Function.from_name`` and
``Cls.from_name`` from any kernel or script without their source.

A deployment keeps what a pool is made from (the pickle workers load, its options, its
``sys_path``); a caller that looks one up registers a pool from it as for its own functions.
Only a control plane whose store outlives it (the Jupyter server's SQLite file) takes
deployments: an embedded one would lose them with its process.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from nbscale_runtime import protocol
from nbscale_runtime.protocol import ERROR_CONTROL_PLANE, ERROR_INVALID, ERROR_NOT_FOUND

from .errors import RequestError
from .models import AppModel
from .outbox import Outbox
from .shared_core import SharedError, check_name
from .store import SpawnStore
from .store_writer import Step

Answer = tuple[Any, Any] | None
KINDS = ("function", "cls")


@dataclass(frozen=True, slots=True)
class Deployed:
    app: str
    name: str
    kind: str
    function_id: str
    function: bytes
    options: dict[str, Any]
    sys_path: list[str]
    client_versions: dict[str, str]
    deployed: float

    def wire(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "name": self.name,
            "kind": self.kind,
            "function_id": self.function_id,
            "options": self.options,
            "sys_path": self.sys_path,
            "deployed": self.deployed,
        }


class DeployedApps:
    def __init__(self, outbox: Outbox, store: SpawnStore) -> None:
        self.outbox = outbox
        self.store = store
        self.apps: dict[str, dict[str, Deployed]] = {}
        for row in store.read(
            "the deployed apps",
            "SELECT app, name, kind, function_id, function, options, sys_path, "
            "client_versions, deployed FROM deployed_functions",
        ):
            app, name, kind, function_id, function, options, sys_path, versions, at = row
            entry = Deployed(
                app,
                name,
                kind,
                function_id,
                bytes(function),
                json.loads(options),
                json.loads(sys_path),
                json.loads(versions),
                at,
            )
            self.apps.setdefault(app, {})[name] = entry

    def deploy(
        self,
        identity: bytes,
        msg: protocol.DeployApp,
        payload: list[Any],
        versions: dict[str, str],
    ) -> Answer:
        if not self.store.durable:
            raise RequestError(
                ERROR_INVALID,
                "deploying needs a control plane that outlives this process (the Jupyter "
                "server's, with nbscale's server extension): this one is embedded in this "
                "process, and what it deployed would be gone when the process exits",
            )
        try:
            check_name("app", msg.app)
        except SharedError as exc:
            raise RequestError(exc.kind, str(exc)) from None
        if len(payload) != len(msg.functions) or not msg.functions:
            raise RequestError(ERROR_INVALID, "deploy-app needs one pickle per function")
        now = time.time()
        entries = {}
        for spec, frame in zip(msg.functions, payload, strict=True):
            if spec.get("kind") not in KINDS:
                raise RequestError(ERROR_INVALID, f"cannot deploy a {spec.get('kind')!r}")
            pickle = bytes(frame.buffer if hasattr(frame, "buffer") else frame)
            entries[spec["name"]] = Deployed(
                msg.app,
                spec["name"],
                spec["kind"],
                spec["function_id"],
                pickle,
                spec["options"],
                spec["sys_path"],
                versions,
                now,
            )
        steps: list[Step] = [("app-drop", (msg.app,))]
        for e in entries.values():
            row = (e.app, e.name, e.kind, e.function_id, e.function, json.dumps(e.options))
            steps.append(
                ("app-function", (*row, json.dumps(e.sys_path), json.dumps(versions), now))
            )

        def then(error: str | None) -> None:
            if error is not None:
                failure = RequestError(ERROR_CONTROL_PLANE, f"{error}: {msg.app} not deployed")
                self.outbox.refuse(identity, msg.rid, failure)
                return
            self.apps[msg.app] = entries
            self.outbox.reply(identity, msg.rid, self.app_model(msg.app))
            self.outbox.emit("app-deployed", "", app=msg.app)  # the sidebar lists apps

        self.store.keep(steps, then, f"app {msg.app!r}")
        return None

    def lookup(self, app: str, name: str) -> Deployed:
        functions = self.apps.get(app)
        if functions is None:
            known = ", ".join(sorted(self.apps)) or "none"
            raise RequestError(
                ERROR_NOT_FOUND,
                f"no deployed app {app!r} (deployed apps: {known}); deploy it with "
                "`nbscale deploy FILE.py` or app.deploy()",
            )
        entry = functions.get(name)
        if entry is None:
            raise RequestError(
                ERROR_NOT_FOUND,
                f"app {app!r} has no function or class {name!r} (it has: "
                f"{', '.join(sorted(functions))})",
            )
        return entry

    def on_lookup(self, identity: bytes, msg: protocol.LookupDeployed, payload: Any) -> Answer:
        entry = self.lookup(msg.app, msg.name)
        return entry.wire(), [entry.function]

    def on_list(self, identity: bytes, msg: protocol.ListApps, payload: Any) -> Answer:
        return {"apps": self.list_apps()}, ()

    def app_model(self, app: str) -> AppModel:
        functions = self.apps[app]
        return {
            "name": app,
            "functions": sorted(n for n, e in functions.items() if e.kind == "function"),
            "classes": sorted(n for n, e in functions.items() if e.kind == "cls"),
            "deployed": max(e.deployed for e in functions.values()),
        }

    def list_apps(self) -> list[AppModel]:
        return [self.app_model(app) for app in sorted(self.apps)]

    def stop(self, identity: bytes, rid: int, app: str) -> list[str]:
        """Forget ``app`` (replied once kept); the names of its functions and classes."""
        functions = self.apps.pop(app, None)
        if functions is None:
            self.lookup(app, "")  # raises its NotFoundError
            return []

        def then(error: str | None) -> None:
            if error is not None:
                self.apps[app] = functions  # type: ignore[assignment]
                self.outbox.refuse(identity, rid, RequestError(ERROR_CONTROL_PLANE, error))
                return
            self.outbox.reply(identity, rid, {"stopped": app})
            self.outbox.emit("app-stopped", "", app=app)

        self.store.keep([("app-drop", (app,))], then, f"app {app!r}")
        return list(functions)


def pool_label(app: str, name: str) -> str:
    """The name of a deployed function's pools (a class's: followed by its parameters)."""
    return f"{app}/{name}"
