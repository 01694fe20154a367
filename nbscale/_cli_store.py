"""``nbscale secret create|list|delete`` and ``nbscale volume create|list|delete``: the named
secrets and volumes of this machine (``nbscale_server.local_store``), as Modal's ``modal
secret`` and ``modal volume``. A secret's values are never printed, only its keys' names."""

from __future__ import annotations

import argparse
from typing import Any

from nbscale_server import local_store

from .exceptions import InvalidError, NotFoundError


def add_parsers(sub: Any) -> None:
    secret = sub.add_parser("secret", help="create, list or delete named secrets")
    ops = secret.add_subparsers(dest="op", required=True, metavar="OP")
    create = ops.add_parser(
        "create",
        help="store KEY=VALUE pairs as the secret NAME (mode 0600), for "
        "nbscale.Secret.from_name(NAME)",
    )
    create.add_argument("name", metavar="NAME")
    create.add_argument("pairs", metavar="KEY=VALUE", nargs="*")
    create.add_argument(
        "--from-dotenv", metavar="PATH", help="take the pairs of a .env file too (before KEY=VALUE)"
    )
    create.add_argument("--force", action="store_true", help="replace a secret of that name")
    create.set_defaults(run=_create_secret)
    ops.add_parser("list", help="the names of the stored secrets").set_defaults(run=_list_secrets)
    delete = ops.add_parser("delete", help="delete the secret NAME")
    delete.add_argument("name", metavar="NAME")
    delete.set_defaults(run=_delete_secret)

    volume = sub.add_parser("volume", help="create, list or delete named volumes")
    vops = volume.add_subparsers(dest="op", required=True, metavar="OP")
    vcreate = vops.add_parser("create", help="make the volume NAME (empty)")
    vcreate.add_argument("name", metavar="NAME")
    vcreate.set_defaults(run=_create_volume)
    vops.add_parser("list", help="the names of the volumes").set_defaults(run=_list_volumes)
    vdelete = vops.add_parser("delete", help="delete the volume NAME and all its files")
    vdelete.add_argument("name", metavar="NAME")
    vdelete.set_defaults(run=_delete_volume)


def _store(action: Any, *args: Any) -> Any:
    try:
        return action(*args)
    except local_store.StoreError as exc:
        raise (NotFoundError if exc.missing else InvalidError)(str(exc)) from None


def _pairs(args: argparse.Namespace) -> dict[str, str]:
    env: dict[str, str] = {}
    if args.from_dotenv:
        from dotenv import dotenv_values

        try:
            with open(args.from_dotenv) as f:
                values = dotenv_values(stream=f)
        except OSError as exc:
            raise InvalidError(f"cannot read {args.from_dotenv}: {exc.strerror}") from None
        env.update({k: v for k, v in values.items() if v is not None})
    for pair in args.pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidError(f"{key!r} is not KEY=VALUE")  # no '=': no value to show
        env[key] = value
    return env


def _create_secret(args: argparse.Namespace) -> int:
    env = _pairs(args)
    _store(local_store.write_secret, args.name, env, args.force)
    print(f"secret {args.name!r} stored with {len(env)} key(s): {', '.join(sorted(env))}")
    return 0


def _list_secrets(args: argparse.Namespace) -> int:
    for name in local_store.secret_names():
        print(name)
    return 0


def _delete_secret(args: argparse.Namespace) -> int:
    _store(local_store.delete_secret, args.name)
    print(f"secret {args.name!r} deleted")
    return 0


def _create_volume(args: argparse.Namespace) -> int:
    path = _store(local_store.create_volume, args.name)
    print(f"volume {args.name!r} is {path}")
    return 0


def _list_volumes(args: argparse.Namespace) -> int:
    for name in local_store.volume_names():
        print(name)
    return 0


def _delete_volume(args: argparse.Namespace) -> int:
    from nbscale_server.launchers.volumes import docker_volume_name, remove_docker_volume

    _store(local_store.require_volume, args.name)
    in_use = remove_docker_volume(args.name)
    if in_use is not None:
        raise InvalidError(
            f"volume {args.name!r} is kept: Docker cannot remove "
            f"{docker_volume_name(args.name)} ({in_use}); stop the workers that use it first"
        )
    _store(local_store.delete_volume, args.name)
    print(f"volume {args.name!r} deleted")
    return 0
