"""``nbscale.Secret``: environment variables given to a function's workers when they start,
never built into an image, as Modal's ``modal.Secret``.

A secret made here (``from_dict``, ``from_dotenv``, ``from_local_environ``) carries its
values; a named one (``from_name``, stored by ``nbscale secret create``) is read by the
control plane when the function registers, so it works from a worker too. The values reach
workers only through their 0600 config files (``local_store``, ``Fleet._launch``); a
secret's repr, the control plane's REST API, events and logs never show them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nbscale_server import local_store

from ._owner import is_local
from .exceptions import InvalidError, NotFoundError


def _checked(env: Mapping[Any, Any], where: str) -> dict[str, str]:
    try:
        return local_store.check_env(env, where)
    except local_store.StoreError as exc:
        raise InvalidError(str(exc)) from None


class Secret:
    """Environment variables for a function's workers: ``@app.function(secrets=[...])``.
    Later secrets in the list override earlier ones' keys."""

    def __init__(self, source: dict[str, Any], label: str) -> None:
        """Private: use the ``from_*`` constructors."""
        self._source = source
        self._label = label

    def __repr__(self) -> str:
        return f"<nbscale.Secret {self._label}>"  # never the values

    def to_wire(self) -> dict[str, Any]:
        """What ``register-function`` carries: the values, or the stored secret's name."""
        return self._source

    @classmethod
    def from_dict(cls, env_dict: Mapping[str, str | None] | None = None) -> Secret:
        """A secret of these variables (those whose value is None are left out)."""
        if env_dict is None:
            env_dict = {}
        if not isinstance(env_dict, Mapping):
            raise InvalidError(f"Secret.from_dict takes a dict of strings, got {env_dict!r}")
        env = _checked({k: v for k, v in env_dict.items() if v is not None}, "Secret.from_dict")
        return cls({"env": env}, f"from_dict(keys={sorted(env)})")

    @classmethod
    def from_local_environ(cls, env_keys: Sequence[str]) -> Secret:
        """A secret of these variables of this process's environment, as they are now."""
        if isinstance(env_keys, str) or not isinstance(env_keys, Iterable):
            raise InvalidError(f"env_keys must be a list of names, got {env_keys!r}")
        keys = list(env_keys)
        absent = [k for k in keys if k not in os.environ]
        if absent and is_local():  # a worker importing your module has no need to fail
            raise InvalidError(
                "Secret.from_local_environ: no local environment variable "
                + ", ".join(map(str, absent))
            )
        present = {k: os.environ[k] for k in keys if k in os.environ}
        env = _checked(present, "Secret.from_local_environ")
        return cls({"env": env}, f"from_local_environ(keys={sorted(env)})")

    @classmethod
    def from_dotenv(
        cls, path: str | os.PathLike[str] | None = None, *, filename: str = ".env"
    ) -> Secret:
        """A secret of the variables of a ``.env`` file, read now by python-dotenv: found
        in ``path`` (a directory, or a file whose directory to search; default: the working
        directory) or the nearest of its parents, as Modal finds it. ``Secret.from_dotenv(
        __file__)`` reads the one beside the script."""
        from dotenv import dotenv_values

        start = os.fspath(path) if path is not None else os.getcwd()
        if os.path.isfile(start):
            start = os.path.dirname(os.path.abspath(start))
        found = _find_upwards(start, filename)
        if found is None and not is_local():
            # A worker importing your module: its pool's environment was made from the
            # caller's file already.
            return cls({"env": {}}, f"from_dotenv({filename!r} not found on this worker)")
        if found is None:
            raise NotFoundError(f"Secret.from_dotenv: no {filename} file in {start} or its parents")
        env = _checked(
            {k: v for k, v in dotenv_values(found).items() if v is not None},
            f"Secret.from_dotenv({found!r})",
        )
        return cls({"env": env}, f"from_dotenv({found!r}, keys={sorted(env)})")

    @classmethod
    def from_name(
        cls,
        name: str,
        *,
        environment_name: str | None = None,
        required_keys: Sequence[str] = (),
    ) -> Secret:
        """The secret stored as ``name`` (``nbscale secret create NAME KEY=VALUE ...``),
        read by the control plane when a function that uses it first runs; that fails with
        ``NotFoundError`` when it does not exist, ``InvalidError`` when it lacks one of
        ``required_keys``."""
        if environment_name is not None:
            raise InvalidError(
                "Secret.from_name(environment_name=...): nbscale has no environments"
            )
        try:
            local_store.check_name("secret", name)
        except local_store.StoreError as exc:
            raise InvalidError(str(exc)) from None
        if isinstance(required_keys, str) or not all(isinstance(k, str) for k in required_keys):
            raise InvalidError(f"required_keys must be a list of names, got {required_keys!r}")
        source = {"name": name, "required_keys": list(required_keys)}
        return cls(source, f"from_name({name!r})")


def _find_upwards(start: str, filename: str) -> str | None:
    folder = os.path.abspath(start)
    while True:
        candidate = os.path.join(folder, filename)
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def check_secrets(secrets: object, where: str) -> tuple[Secret, ...]:
    """The ``secrets=`` setting: a list of ``nbscale.Secret``."""
    if secrets is None:
        return ()
    if isinstance(secrets, (str, Secret)) or not isinstance(secrets, Iterable):
        raise InvalidError(f"{where}: secrets= takes a list of nbscale.Secret, got {secrets!r}")
    found = tuple(secrets)
    for secret in found:
        if not isinstance(secret, Secret):
            hint = " (use nbscale.Secret.from_name(...))" if isinstance(secret, str) else ""
            raise InvalidError(
                f"{where}: secrets= takes nbscale.Secret objects, got {secret!r}{hint}"
            )
    return found


def secrets_setting(
    settings: dict[str, Any], current: tuple[Secret, ...], where: str
) -> tuple[Secret, ...]:
    """``with_options``'s ``secrets=`` (replacing the current ones, as Modal's does) and
    ``env=`` (one more, last), taken out of ``settings``."""
    secrets = current
    if "secrets" in settings:
        secrets = check_secrets(settings.pop("secrets"), where)
    env = settings.pop("env", None)
    return (*secrets, Secret.from_dict(env)) if env else secrets
