"""Registering a function (``register-function``): the pool its code and options make,
for its owner (the caller's kernel or script, or the deployed app a ``from_name`` handle
came from), found again when the same function is registered again.

A pool's id is its code, what shapes its workers and its owner (``FunctionOptions.pool_id``,
``owners.owner_key``); its secrets enter it only as a keyed digest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable
from typing import Any

from nbscale_runtime import protocol
from nbscale_runtime.protocol import ERROR_INVALID, ERROR_NOT_FOUND

from . import local_store
from .callers import Callers
from .deployed import DeployedApps
from .errors import RequestError
from .fleet import Fleet
from .launchers.base import CONTAINER_LAUNCHERS
from .models import OwnerModel
from .nesting import Nesting
from .options import FunctionOptions
from .outbox import Outbox
from .owners import app_owner, owner_key, unknown_owner
from .pool import Pool, Records

Answer = tuple[Any, Any]
ApplySettings = Callable[[Pool, dict[str, Any], str], None]


class Registration:
    def __init__(
        self,
        records: Records,
        outbox: Outbox,
        fleet: Fleet,
        nesting: Nesting,
        deployed: DeployedApps,
        callers: Callers,
        apply: ApplySettings,
        resolve: Callable[[OwnerModel], None],
    ) -> None:
        self.records = records
        self.outbox = outbox
        self.fleet = fleet
        self.nesting = nesting
        self.deployed = deployed
        self.callers = callers
        self._apply = apply
        self._resolve = resolve
        # Keys the digest of a function's secrets (``FunctionOptions.secrets``, in its pool's
        # id): the same secrets share a pool, and no digest can be tested against guesses.
        self._secrets_key = os.urandom(32)

    def register(
        self, identity: bytes, msg: protocol.RegisterFunction, payload: list[Any]
    ) -> Answer:
        versions = self.callers.versions(identity)
        if versions is None:
            raise RequestError(ERROR_INVALID, "say hello first")
        try:
            options = FunctionOptions.from_wire(msg.options)
        except (TypeError, ValueError) as exc:
            raise RequestError(ERROR_INVALID, str(exc)) from None
        options, env = self._secrets_and_volumes(msg, options)
        in_containers = self.fleet.launcher.name in CONTAINER_LAUNCHERS
        options = self.nesting.options_for(identity, options, in_containers)
        if msg.app:
            owner = self._deployed_owner(msg.app, msg.name)
        else:
            owner = self.records.owners.get(identity) or unknown_owner()
        pool_id = options.pool_id(msg.function_id, owner_key(owner))
        pool = self.records.pools.get(pool_id)
        if pool is None:
            function = payload[0]
            pool = Pool.create(
                msg.function_id,
                msg.name,
                bytes(function.buffer if hasattr(function, "buffer") else function),
                options,
                msg.sys_path,
                versions,
                self.fleet.total_cap(),
                owner,
            )
            pool.env = env
            self.records.pools[pool_id] = pool
            settings = _describe(options.explicit_autoscaler()) or "the default settings"
            pool.note(f"registered with {settings}", time.time())
            self.outbox.emit("pool-added", pool_id)
        else:
            pool.broken = None  # a caller trying again gets a fresh chance
            pool.autoscaler.reset_launch_failures()
            # A deployed app's settings come from its deployment: another caller of the same
            # one keeps what update_autoscaler set meanwhile (as on Modal, until a redeploy).
            explicit = options.explicit_autoscaler()
            redeployed = explicit != pool.options.explicit_autoscaler()
            pool.options = options
            pool.name = msg.name  # a cell's pool takes the name of the cell run last
            pool.owner = owner  # the same kernel, maybe restarted (a new pid)
            self._resolve(owner)  # the notebook may have been renamed since
            # The latest explicit setting wins, whoever made it (this, the sidebar, ...).
            if not msg.app or redeployed:
                self._apply(pool, explicit, "registering the function again")
        return {"pool_id": pool_id, "launcher": self.fleet.launcher.name}, ()

    def _deployed_owner(self, app: str, label: str) -> OwnerModel:
        """The owner of the pool of a deployed app's function or class (``label``: its
        ``app/name``, a class's followed by its parameters), once its app is still there."""
        prefix = f"{app}/"
        if not label.startswith(prefix):
            raise RequestError(ERROR_INVALID, f"{label!r} is not a function of app {app!r}")
        self.deployed.lookup(app, label[len(prefix) :].split("(", 1)[0])  # or NotFoundError
        return app_owner(app)

    def _secrets_and_volumes(
        self, msg: protocol.RegisterFunction, options: FunctionOptions
    ) -> tuple[FunctionOptions, dict[str, str]]:
        """The environment a function's secrets give its workers (named ones read from the
        store now) with its digest in the options; its volumes checked to exist."""
        try:
            env = local_store.resolve_env(msg.secrets)
            for _, name in options.volumes:
                local_store.require_volume(name)
        except local_store.StoreError as exc:
            kind = ERROR_NOT_FOUND if exc.missing else ERROR_INVALID
            raise RequestError(kind, str(exc)) from None
        digest = None
        if env:
            said = json.dumps(sorted(env.items())).encode()
            digest = hmac.new(self._secrets_key, said, hashlib.sha256).hexdigest()[:24]
        return dataclasses.replace(options, secrets=digest), env


def _describe(settings: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value}" for name, value in settings.items())
