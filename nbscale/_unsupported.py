"""What Modal has and nbscale does not: each raises ``InvalidError`` naming the feature and
saying why, so that a ported program stops at the line that uses it, rather than with an
``AttributeError`` or, worse, running without it.

nbscale runs functions on your own machines: there is no web ingress to serve endpoints, no
scheduler to start functions on a timetable, no cloud regions or Modal-hosted objects. A
keyword given at Modal's default (None, False, an empty collection) asks for nothing and is
accepted, so generic code that spells out every keyword still runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, NoReturn

from .exceptions import InvalidError

_OWN_MACHINES = "functions run on your own machines"
_NO_WEB = "there is no web ingress: serve your app with a web server of your own"
_NO_SCHEDULER = "there is no scheduler: start the script from cron or a systemd timer"
_NO_SANDBOX = "it runs functions, not sandboxes: use subprocess inside a function"
_USE_VOLUMES = "use volumes= with nbscale.Volume, a named directory every worker mounts"

# Modal keywords of @app.function (and App) that nbscale cannot honour, with why.
UNSUPPORTED_KEYWORDS: dict[str, str] = {
    "schedule": _NO_SCHEDULER,
    "region": f"{_OWN_MACHINES}, not in cloud regions",
    "routing_region": f"{_OWN_MACHINES}, not in cloud regions",
    "cloud": f"{_OWN_MACHINES}, not in a cloud",
    "proxy": f"{_OWN_MACHINES}: workers use your own network",
    "i6pn": f"{_OWN_MACHINES}: workers reach each other on your own network",
    "enable_memory_snapshot": "workers' memory is not snapshotted",
    "ephemeral_disk": "workers use the disk of the machine they run on",
    "block_network": "workers need the network to reach the control plane",
    "network_file_systems": f"no NetworkFileSystem: {_USE_VOLUMES}",
    "mounts": "Modal 1.0 removed Mount: use Image.add_local_dir or add_local_python_source",
    "startup_timeout": "a startup timeout is set for every worker: NBSCALE_STARTUP_TIMEOUT "
    "(or c.NbScale.startup_timeout in the Jupyter server)",
    "single_use_containers": "not yet: a worker runs many inputs",
    "is_generator": "a generator function is recognised as one (def with yield): drop it",
}

# Names Modal retired in 1.0, and what replaced them (Modal itself refuses them since 1.4).
RENAMED_KEYWORDS: dict[str, str] = {
    "keep_warm": "min_containers",
    "concurrency_limit": "max_containers",
    "container_idle_timeout": "scaledown_window",
    "allow_concurrent_inputs": "@nbscale.concurrent(max_inputs=...)",
    "max_inputs": "single_use_containers (not yet supported)",
}


def not_supported(feature: str, why: str) -> InvalidError:
    """``InvalidError: <feature> is not supported by nbscale: <why>``."""
    return InvalidError(f"{feature} is not supported by nbscale: {why}")


def _asks_for_nothing(value: object) -> bool:
    if value is None or value is False:
        return True
    return isinstance(value, (Mapping, list, tuple, set)) and not value


def check_keywords(given: Mapping[str, Any], where: str) -> None:
    """Refuse the Modal keywords in ``given`` (those ``where``, e.g. ``@app.function``, does
    not take itself): an ``InvalidError`` for one nbscale cannot honour or that Modal
    renamed, a ``TypeError`` (as Python's own) for one Modal does not have either."""
    for name in sorted(given):
        if name in RENAMED_KEYWORDS:
            raise InvalidError(
                f"{where}({name}=...) is Modal's old name: use {RENAMED_KEYWORDS[name]}"
            )
        if name in UNSUPPORTED_KEYWORDS:
            if _asks_for_nothing(given[name]):
                continue
            raise not_supported(f"{where}({name}=...)", UNSUPPORTED_KEYWORDS[name])
        raise TypeError(f"{where}() got an unexpected keyword argument {name!r}")


# --- Modal's top-level names for what nbscale does not have ----------------------------


def refuser(feature: str, why: str) -> Any:
    def refuse(*args: Any, **kwargs: Any) -> NoReturn:
        raise not_supported(feature, why)

    refuse.__doc__ = f"Not supported by nbscale: {why}."
    return refuse


web_endpoint = refuser("@modal.web_endpoint", _NO_WEB)
fastapi_endpoint = refuser("@modal.fastapi_endpoint", _NO_WEB)
asgi_app = refuser("@modal.asgi_app", _NO_WEB)
wsgi_app = refuser("@modal.wsgi_app", _NO_WEB)
web_server = refuser("@modal.web_server", _NO_WEB)
forward = refuser("modal.forward", _NO_WEB)
interact = refuser("modal.interact", "workers have no terminal to interact with")


def refusing_classmethod() -> Any:
    def refuse(cls: type[Unsupported], *args: Any, **kwargs: Any) -> NoReturn:
        raise not_supported(cls.feature, cls.why)

    return classmethod(refuse)


class Unsupported:
    """A Modal class nbscale does not have: making one, or calling its constructors, raises
    ``InvalidError`` with the reason."""

    feature: ClassVar[str]
    why: ClassVar[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise not_supported(self.feature, self.why)


class Sandbox(Unsupported):
    """Not supported by nbscale: it runs functions, not sandboxes."""

    feature, why = "modal.Sandbox", _NO_SANDBOX
    create = from_id = from_name = list = refusing_classmethod()


class Cron(Unsupported):
    """Not supported by nbscale: it has no scheduler."""

    feature, why = "modal.Cron", _NO_SCHEDULER


class Period(Unsupported):
    """Not supported by nbscale: it has no scheduler."""

    feature, why = "modal.Period", _NO_SCHEDULER


class NetworkFileSystem(Unsupported):
    """Not supported by nbscale: use ``nbscale.Volume``."""

    feature, why = "modal.NetworkFileSystem", _USE_VOLUMES
    from_name = ephemeral = refusing_classmethod()


class CloudBucketMount(Unsupported):
    """Not supported by nbscale: workers read buckets with your own client library."""

    feature = "modal.CloudBucketMount"
    why = f"{_OWN_MACHINES}: read the bucket with its client library inside the function"


class Mount(Unsupported):
    """Not supported by nbscale (Modal 1.0 removed it too)."""

    feature, why = "modal.Mount", UNSUPPORTED_KEYWORDS["mounts"]
    from_local_dir = from_local_file = from_local_python_packages = refusing_classmethod()


class Proxy(Unsupported):
    """Not supported by nbscale: workers use your own network."""

    feature, why = "modal.Proxy", UNSUPPORTED_KEYWORDS["proxy"]
    from_name = refusing_classmethod()


class Tunnel(Unsupported):
    """Not supported by nbscale: it has no web ingress."""

    feature, why = "modal.Tunnel", _NO_WEB
