"""``nbscale run FILE.py[::NAME] [ARGS]``: ``modal run`` for nbscale.

It runs the script's local entrypoint here (or one of its functions on a worker) inside
``app.run()``, with the entrypoint's parameters parsed from ``ARGS`` (``_entrypoint.py``).
A Jupyter server's control plane that runs on this machine is used (the sidebar then shows
the run's pools), else one embedded in this process. Leaving the run stops what it started,
unless ``--detach``: then its spawned calls keep running on the server's control plane, and
the command prints their ids. Without a server, ``--detach`` is refused.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import traceback
from typing import Any

from . import _config
from ._app_run import DETACH_NEEDS_SERVER
from ._discovery import server_connection_files
from ._entrypoint import parse_arguments
from ._script import ScriptError, choose, load, split_ref
from .exceptions import InvalidError

DESCRIPTION = """\
Run a script's @app.local_entrypoint() here, or one of its @app.function()s on a worker,
as `modal run` does. The entrypoint's parameters are its --flags:

  @app.local_entrypoint()
  def main(n: int = 10, name: str = "x", dry_run: bool = False): ...

  nbscale run sweep.py --n 100 --dry-run

A script with several entrypoints or functions needs ::NAME (nbscale run sweep.py::main);
a module of a package is named by its dotted name (nbscale run -m pkg.sweep::main).
The Jupyter server's control plane is used when one runs here (its sidebar shows the run),
else one in this process, which ends with it.
"""

EPILOG = """\
exit codes:
  0    the entrypoint returned
  1    it raised (its traceback is printed), or an nbscale error (one line)
  2    a bad command line, the entrypoint's --flags included
  130  interrupted (Ctrl-C): what the run started is stopped
  N    the script's own sys.exit(N)
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run a script's local entrypoint (or one of its functions), as `modal run`",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "-d",
        "--detach",
        action="store_true",
        help="keep the run's spawned calls running on the Jupyter server's control plane "
        "after the script ends (their ids are printed)",
    )
    p.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars, no lines of nbscale's"
    )
    p.add_argument(
        "-m",
        dest="module",
        action="store_true",
        help="the script is a module's dotted name (pkg.sweep::main), as `modal run -m`",
    )
    p.add_argument("ref", metavar="FILE.py[::NAME]", help="the script (or a module's name)")
    p.add_argument(
        "args",
        nargs=argparse.REMAINDER,
        metavar="ARGS",
        help="the entrypoint's own --flags (nbscale run FILE.py --help lists them)",
    )
    p.set_defaults(run=run, run_parser=p)


def _use_server(detach: bool) -> dict[str, Any] | None:
    """The Jupyter server's control plane that runs here, which this process then uses
    (through ``NBSCALE_CONNECTION_FILE``); None when none runs (refused for ``detach``)."""
    found = server_connection_files()
    if not found:
        if detach:
            raise InvalidError(f"--detach: {DETACH_NEEDS_SERVER}")
        return None
    os.environ["NBSCALE_CONNECTION_FILE"] = found[0].path
    return found[0].info


def run(args: argparse.Namespace) -> int:
    source, name = split_ref(args.ref)
    argv: list[str] = args.args
    if args.quiet:
        _config.config(progress="off")
    server = _use_server(args.detach)
    module = load(source, as_module=args.module)
    target = choose(module, name, source)
    if "--detach" in argv and "detach" not in inspect.signature(target.raw).parameters:
        args.run_parser.error(f"--detach goes before the script: nbscale run --detach {source}")
    prog = f"nbscale run {source}::{target.name}"
    sys.argv = [source, *argv]  # what the script sees, as under `python FILE.py ARGS`
    call_args, call_kwargs = parse_arguments(target.raw, prog, argv)
    with target.app.run(detach=args.detach):
        if not args.quiet:
            where = (
                f"the Jupyter server's control plane (pid {server['pid']})"
                if server
                else "a control plane in this process"
            )
            print(f"nbscale: running {target.name} ({target.kind}) on {where}", file=sys.stderr)
        try:
            target.call(*call_args, **call_kwargs)
        except Exception as exc:
            raise ScriptError(exc) from exc
    return 0


def refusal(error: ScriptError) -> InvalidError | None:
    """When nbscale refused what the script asked (an ``InvalidError``: a Modal feature it
    does not have, a bad setting), that refusal prefixed with the script's line that asked,
    to print in one line; None for any other exception, shown with its traceback."""
    exc = error.error
    if not isinstance(exc, InvalidError):
        return None
    own = os.path.dirname(os.path.abspath(__file__))
    where = None
    for frame, line in traceback.walk_tb(exc.__traceback__):
        filename = frame.f_code.co_filename
        if not _is_ours(filename, own):
            where = f"{os.path.relpath(filename)}:{line}"
    return InvalidError(f"{where}: {exc}") if where else exc


def print_script_error(error: ScriptError) -> None:
    """The script's own exception, with its traceback from the script's first frame on
    (nbscale run's frames left out), as ``python FILE.py`` would print it."""
    exc = error.error
    tb = exc.__traceback__
    own = os.path.dirname(os.path.abspath(__file__))
    while tb is not None and _is_ours(tb.tb_frame.f_code.co_filename, own):
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb or exc.__traceback__)


def _is_ours(filename: str, own: str) -> bool:
    return filename.startswith("<frozen ") or os.path.abspath(filename).startswith(own + os.sep)
