"""``nbscale deploy FILE.py`` and ``nbscale apps list|stop``: deployed apps on the Jupyter
server's control plane that runs on this machine (``_deploy.py``)."""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from typing import Any

from nbscale_runtime import protocol

from ._client import get_client
from ._deploy import NEEDS_SERVER
from ._discovery import server_connection_files
from ._loop import get_loop
from ._script import apps_of, load
from .exceptions import InvalidError


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "deploy",
        help="register a script's app (its functions and classes) with the Jupyter server's "
        "control plane, for Function.from_name and Cls.from_name",
    )
    p.add_argument("source", metavar="FILE.py", help="the script (or a module's dotted name)")
    p.add_argument("--name", help="deploy under this name rather than the app's own")
    p.set_defaults(run=_deploy)
    p_apps = sub.add_parser("apps", help="list or stop deployed apps")
    apps = p_apps.add_subparsers(dest="apps_command", required=True, metavar="COMMAND")
    apps.add_parser("list", help="the deployed apps, their functions and classes").set_defaults(
        run=_list
    )
    p_stop = apps.add_parser("stop", help="remove a deployed app and stop its pools")
    p_stop.add_argument("name", help="the app's name")
    p_stop.set_defaults(run=_stop)


# `apps list` and `apps stop` without a server: nothing was deployed anywhere to act on
NO_APPS_HERE = (
    "deployed apps live on the Jupyter server's control plane, and no Jupyter server with "
    "nbscale runs here (start `jupyter lab` or `jupyter server` first)"
)


def _use_server(needs: str = NEEDS_SERVER) -> None:
    """This process talks to the Jupyter server's control plane running here; else
    InvalidError(``needs``)."""
    if os.environ.get("NBSCALE_CONNECTION_FILE"):
        return
    found = server_connection_files()
    if not found:
        raise InvalidError(needs)
    os.environ["NBSCALE_CONNECTION_FILE"] = found[0].path


def _deploy(args: argparse.Namespace) -> int:
    _use_server()
    module = load(args.source)
    apps = list(apps_of(module).values())
    if len(apps) != 1:
        found = "no app" if not apps else f"{len(apps)} apps"
        raise InvalidError(f"{args.source}: {found}; deploy one nbscale.App per script")
    app = apps[0].deploy(name=args.name)
    model = app.deployed or {}
    print(f"nbscale: deployed app {model['name']!r}: {_members(model)}")
    print(f"call them with nbscale.Function.from_name({model['name']!r}, NAME)")
    return 0


def _members(model: dict[str, Any]) -> str:
    parts = []
    if model["functions"]:
        parts.append("functions " + ", ".join(model["functions"]))
    if model["classes"]:
        parts.append("classes " + ", ".join(model["classes"]))
    return "; ".join(parts)


async def _request(msg: protocol.Message) -> Any:
    client = await get_client()
    value, _ = await client.request(msg)
    return value


def _list(args: argparse.Namespace) -> int:
    _use_server(NO_APPS_HERE)
    apps = get_loop().run(_request(protocol.ListApps(0)))["apps"]
    if not apps:
        print("no deployed apps")
    for app in apps:
        when = datetime.datetime.fromtimestamp(app["deployed"]).strftime("%Y-%m-%d %H:%M:%S")
        print(f"{app['name']}\tdeployed {when}\t{_members(app)}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    _use_server(NO_APPS_HERE)
    get_loop().run(_request(protocol.StopApp(0, args.name)))
    print(f"nbscale: stopped app {args.name!r}", file=sys.stderr)
    return 0
