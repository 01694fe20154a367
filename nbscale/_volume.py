"""``nbscale.Volume``: a named directory that persists, mounted in every worker of the
functions that ask for it (``volumes={"/data": vol}``), as Modal's ``modal.Volume``.

Its data lives in one directory on this machine (``nbscale_server.local_store``) that
process workers reach through a link at the mount path and Docker workers through a named
volume bound to it (``launchers/volumes.py``), so every worker sees every write at once:
``commit()`` and ``reload()`` have nothing to do and are accepted as no-ops.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from nbscale_server import local_store

from ._aio import aio_method
from ._owner import is_local
from .exceptions import InvalidError, NotFoundError


def _store_call(action: Any, *args: Any) -> Any:
    try:
        return action(*args)
    except local_store.StoreError as exc:
        raise (NotFoundError if exc.missing else InvalidError)(str(exc)) from None


class Volume:
    """A named, persistent directory shared by the workers that mount it."""

    def __init__(self, name: str) -> None:
        """Private: use ``Volume.from_name`` or ``Volume.ephemeral``."""
        self.name = name

    def __repr__(self) -> str:
        return f"<nbscale.Volume {self.name!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Volume) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("nbscale.Volume", self.name))

    @property
    def local_path(self) -> Path:
        """Where its data lives on this machine (nbscale's own name, not Modal's)."""
        return _store_call(local_store.volume_dir, self.name)

    @classmethod
    def from_name(
        cls,
        name: str,
        *,
        create_if_missing: bool = False,
        environment_name: str | None = None,
        version: Any = None,
    ) -> Volume:
        """The volume ``name``, made now when missing if ``create_if_missing`` (else
        ``NotFoundError``). On a worker it is only named: the control plane checks it."""
        if environment_name is not None:
            raise InvalidError(
                "Volume.from_name(environment_name=...): nbscale has no environments"
            )
        if not isinstance(create_if_missing, bool):
            raise InvalidError(
                f"create_if_missing must be True or False, got {create_if_missing!r}"
            )
        _store_call(local_store.check_name, "volume", name)
        if is_local():  # a worker's disk has no store: its control plane's has
            if create_if_missing:
                _store_call(local_store.create_volume, name)
            else:
                _store_call(local_store.require_volume, name)
        return cls(name)

    @classmethod
    @contextlib.contextmanager
    def ephemeral(cls) -> Iterator[Volume]:
        """``with nbscale.Volume.ephemeral() as vol:``: a volume deleted on leaving."""
        import uuid

        name = f"ephemeral-{uuid.uuid4().hex[:12]}"
        _store_call(local_store.create_volume, name)
        try:
            yield cls(name)
        finally:
            from nbscale_server.launchers.volumes import remove_docker_volume

            remove_docker_volume(name)
            _store_call(local_store.delete_volume, name)

    @aio_method
    async def commit(self) -> None:
        """A no-op: every worker writes to the same directory."""

    @aio_method
    async def reload(self) -> None:
        """A no-op: every worker reads the same directory."""


def check_volumes(volumes: object, where: str) -> tuple[tuple[str, str], ...]:
    """The ``volumes=`` setting, ``{mount path: nbscale.Volume}``, as (path, name) pairs."""
    if volumes is None:
        return ()
    if not isinstance(volumes, Mapping):
        raise InvalidError(
            f"{where}: volumes= takes a dict {{path: nbscale.Volume}}, got {volumes!r}"
        )
    pairs = []
    for path, volume in volumes.items():
        if not isinstance(path, (str, Path)) or not str(path).strip():
            raise InvalidError(f"{where}: a volume's mount path must be a path, got {path!r}")
        if not isinstance(volume, Volume):
            raise InvalidError(
                f"{where}: volumes= takes nbscale.Volume objects, got {volume!r} at {path}"
            )
        pairs.append((str(path), volume.name))
    return tuple(pairs)
