"""Named secrets and volumes, kept on this machine under the Jupyter data directory
(``jupyter --data-dir``, ``$JUPYTER_DATA_DIR`` when set): ``nbscale/secrets/NAME.json``
(mode 0600, in a directory of mode 0700) and ``nbscale/volumes/NAME/`` (a directory every
worker of a function with ``volumes=`` sees: process workers through a symbolic link, Docker
workers through a named volume bound to it).

The control plane reads a named secret when a function that uses it registers, so that a
function called from a worker (whose file system has no store) finds it too. A secret's
values are read here and written to workers' 0600 config files, never elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .security import write_secret_json

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# What a process's environment takes as a variable's name (POSIX's portable set).
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class StoreError(Exception):
    """A name or value the store refuses, or an object it does not hold (``missing``)."""

    def __init__(self, message: str, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


def check_name(kind: str, name: object) -> str:
    """``name`` if it can name a ``kind`` ("secret", "volume"): letters, digits, ``.-_``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise StoreError(
            f"{kind} name {name!r} is not valid: use up to 64 letters, digits, '.', '-' "
            "or '_', starting with a letter or digit"
        )
    return name


def check_env(env: Mapping[Any, Any], where: str) -> dict[str, str]:
    """``env`` as environment variables: names a process takes, string values without NUL
    (the message names the key at fault, never a value)."""
    checked: dict[str, str] = {}
    for key, value in env.items():
        if not isinstance(key, str) or not _ENV_KEY.fullmatch(key):
            raise StoreError(
                f"{where}: {key!r} is not an environment variable name "
                "(letters, digits and '_', not starting with a digit)"
            )
        if not isinstance(value, str) or "\0" in value:
            raise StoreError(f"{where}: the value of {key} must be a string without NUL bytes")
        checked[key] = value
    return checked


def store_dir() -> Path:
    from jupyter_core.paths import jupyter_data_dir  # not needed on workers

    return Path(jupyter_data_dir()) / "nbscale"


def _private(path: Path) -> Path:
    """``path`` as a directory only this user may enter (made, or narrowed, to 0700)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


# --- secrets ---------------------------------------------------------------------------


def secret_path(name: str) -> Path:
    return store_dir() / "secrets" / f"{check_name('secret', name)}.json"


def write_secret(name: str, env: Mapping[str, str], force: bool = False) -> None:
    """Store ``env`` as the secret ``name`` (mode 0600), replacing one only if ``force``."""
    path = secret_path(name)
    values = check_env(env, f"secret {name!r}")
    if not values:
        raise StoreError(f"secret {name!r} needs at least one KEY=VALUE")
    _private(path.parent)
    if path.exists() and not force:
        raise StoreError(f"secret {name!r} exists already: use --force to replace it")
    # Written beside it and renamed: a reader never sees half a secret.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{name}.")
    os.close(fd)
    write_secret_json(tmp, values)
    os.replace(tmp, path)


def read_secret(name: str) -> dict[str, str]:
    path = secret_path(name)
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise StoreError(
            f"secret {name!r} not found in {path.parent}: create it with "
            f"`nbscale secret create {name} KEY=VALUE ...`",
            missing=True,
        ) from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"secret {name!r} cannot be read from {path}: {exc}") from None
    if not isinstance(data, dict):
        raise StoreError(f"secret {name!r} in {path} is not a JSON object of strings")
    return check_env(data, f"secret {name!r}")


def secret_names() -> list[str]:
    folder = store_dir() / "secrets"
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.json") if _NAME.fullmatch(p.stem))


def delete_secret(name: str) -> None:
    try:
        secret_path(name).unlink()
    except FileNotFoundError:
        raise StoreError(f"secret {name!r} not found", missing=True) from None


def resolve_env(sources: list[Any]) -> dict[str, str]:
    """The environment that a function's ``secrets=`` give its workers, the later ones
    overriding the earlier (as on Modal): each source is ``{"env": {...}}`` or
    ``{"name": NAME, "required_keys": [...]}`` (read from the store now)."""
    env: dict[str, str] = {}
    if not isinstance(sources, list):
        raise StoreError(f"secrets must be a list, got {type(sources).__name__}")
    for source in sources:
        if isinstance(source, dict) and isinstance(source.get("env"), dict):
            env.update(check_env(source["env"], "a secret"))
        elif isinstance(source, dict) and "name" in source:
            name = source["name"]
            values = read_secret(name)
            wanted = source.get("required_keys") or []
            absent = [k for k in wanted if k not in values]
            if absent:
                raise StoreError(
                    f"secret {name!r} lacks the required key(s) {', '.join(map(str, absent))}: "
                    f"recreate it with `nbscale secret create {name} ... --force`"
                )
            env.update(values)
        else:
            raise StoreError("a secret must be {'env': {...}} or {'name': ...}")
    return env


# --- volumes ---------------------------------------------------------------------------


def volume_dir(name: str) -> Path:
    return store_dir() / "volumes" / check_name("volume", name)


def volume_exists(name: str) -> bool:
    return volume_dir(name).is_dir()


def create_volume(name: str) -> Path:
    path = volume_dir(name)
    _private(path.parent)
    path.mkdir(exist_ok=True)
    return path


def require_volume(name: str) -> Path:
    """The volume's directory; a ``missing`` error when it does not exist."""
    path = volume_dir(name)
    if not path.is_dir():
        raise StoreError(
            f"volume {name!r} not found in {path.parent}: use "
            f"Volume.from_name({name!r}, create_if_missing=True)",
            missing=True,
        )
    return path


def volume_names() -> list[str]:
    folder = store_dir() / "volumes"
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and _NAME.fullmatch(p.name))


def delete_volume(name: str) -> None:
    """Remove the volume's directory and everything in it."""
    path = require_volume(name)
    shutil.rmtree(path)
