"""Client settings: ``nbscale.config(key=...)`` at run time, over ``NBSCALE_<KEY>`` in the
environment, over the config file, over defaults.

The settings themselves (names, types, defaults, help) are the table in
``nbscale_server/settings.py``; this module reads the client's values of them. The config
file is ``$NBSCALE_CONFIG_FILE``, else ``~/.config/nbscale/config.json`` (a JSON object with
the same keys, lower case). A bad value is an ``InvalidError`` naming the key and its source.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from nbscale_server import settings as _table
from nbscale_server.settings import ControlPlaneConfig, Setting

from .exceptions import InvalidError

SETTINGS: dict[str, Setting] = _table.CLIENT_SETTINGS  # by the client's key

RUNTIME = "nbscale.config()"
DEFAULT = "default"


def config_file() -> str:
    return os.environ.get("NBSCALE_CONFIG_FILE") or os.path.expanduser(
        "~/.config/nbscale/config.json"
    )


# the file last read: its path, (mtime, size, inode) and values
_read: tuple[str, tuple[int, int, int], dict[str, Any]] | None = None


def _file_values(path: str) -> dict[str, Any]:
    """The file's settings, read again only when it changed (a setting may be read on every
    call, e.g. ``debug``)."""
    global _read
    try:
        st = os.stat(path)
    except OSError:
        return {}
    stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    if _read is not None and _read[:2] == (path, stamp):
        return _read[2]
    values = _parse_file(path)
    _read = (path, stamp, values)
    return values


def _parse_file(path: str) -> dict[str, Any]:
    with open(path) as f:
        try:
            values = json.load(f)
        except ValueError as exc:
            raise InvalidError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(values, dict):
        raise InvalidError(f"{path} must hold a JSON object of settings")
    return values


_runtime: dict[str, Any] = {}  # set with nbscale.config(...), over everything else


def resolve(key: str) -> tuple[Any, str]:
    """A setting's value now and where it comes from: ``nbscale.config()``, its variable's
    name, the config file's path, or ``default``."""
    setting = SETTINGS[key]
    if key in _runtime:
        return _runtime[key], RUNTIME
    env = os.environ.get(f"NBSCALE_{key.upper()}")
    if env is not None:
        raw, source = env, f"NBSCALE_{key.upper()}"
    else:
        path = config_file()
        values = _file_values(path)
        if key not in values:
            return setting.default, DEFAULT
        raw, source = values[key], path
    try:
        return setting.parse(raw), source
    except (TypeError, ValueError) as exc:
        raise InvalidError(f"bad value {raw!r} for {key} (from {source}): {exc}") from None


def get(key: str) -> Any:
    return resolve(key)[0]


_FRESH_S = 1.0  # how long a read of a per-call setting from the environment or file is reused
_fresh_reads: dict[str, tuple[float, Any]] = {}  # by key: when, and what


def fresh(key: str) -> Any:
    """A setting that every call reads (``debug``, ``busy_poll_us``): ``nbscale.config(...)``
    at once, the environment and the config file as they were within the last second (a
    stat of the file per call cost a spawn a third of its time)."""
    if key in _runtime:
        return _runtime[key]
    now = time.monotonic()
    read = _fresh_reads.get(key)
    if read is None or now - read[0] > _FRESH_S:
        read = _fresh_reads[key] = (now, get(key))
    return read[1]


def debug() -> bool:
    """The ``debug`` setting, which every call reads (for its frames' ``__tracebackhide__``)."""
    return bool(fresh("debug"))


def config(**settings: Any) -> dict[str, Any]:
    """Set client settings for this process, over the environment and the config file:
    ``nbscale.config(progress="text")``; ``None`` drops a setting back to its usual source.
    Returns every setting's value now. The embedded control plane's settings apply to the
    next one started (after ``nbscale.shutdown()``)."""
    for key, value in settings.items():
        setting = SETTINGS.get(key)
        if setting is None:
            raise InvalidError(f"no setting {key!r}; the settings are: {', '.join(SETTINGS)}")
        if value is None:
            _runtime.pop(key, None)
            continue
        try:
            _runtime[key] = setting.parse(value)
        except (TypeError, ValueError) as exc:
            raise InvalidError(f"bad value {value!r} for {key}: {exc}") from None
    return {key: get(key) for key in SETTINGS}


def control_plane_config() -> ControlPlaneConfig:
    """The embedded control plane's settings, from the client's."""
    return _table.control_plane_config(lambda setting: get(setting.key or setting.name))
