"""``%%nbscale`` runs a cell on a worker; ``%nbscale`` manages pools (``%load_ext nbscale``).

The cell magic ships the names the cell reads, runs it through ``.remote`` (or ``.starmap``
with ``--map``, which shows the live widget), prints what it printed, binds back what it
assigned and returns its last expression, which IPython then displays as the cell's result.
The cell's text is cached under the kernel's own name for it, so a remote traceback reads
``Cell In[N], line L`` with the cell's lines, as a local error would.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any

from IPython.core import magic_arguments
from IPython.core.error import StdinNotImplementedError, UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import MagicArgumentParser
from IPython.display import display

from nbscale_server.options import DEFAULT_TIMEOUT

from . import _pools
from ._cells import CellOptions, cell_frames, cell_function, cell_name, cell_names, namespace_for
from ._client import status
from ._function import Function
from ._image import Image
from ._map_results import known_total
from ._owner import is_mine, this_owner
from ._tracebacks import hidden, show_cell_frames
from ._views import render
from .exceptions import InvalidError, NbscaleError, NotFoundError


def _line_parser() -> MagicArgumentParser:
    parser = MagicArgumentParser(
        "nbscale", description="Show and manage this kernel's nbscale pools."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status = sub.add_parser("status", help="the control plane in use and this kernel's pools")
    status.add_argument("--all", action="store_true", help="every kernel's pools")
    pools = sub.add_parser("pools", help="a table of this kernel's pools")
    pools.add_argument("--all", action="store_true", help="every kernel's pools")
    stop = sub.add_parser("stop", help="stop a pool (this kernel's pools without POOL)")
    stop.add_argument("pool", nargs="?", metavar="POOL", help="pool id or function name")
    stop.add_argument("--all", action="store_true", help="every kernel's pools (asks first)")
    stop.add_argument("--yes", action="store_true", help="with --all: do not ask")
    logs = sub.add_parser("logs", help="a container's (wk-...) or a call's (fc-...) logs")
    logs.add_argument("ref", metavar="CALL_OR_CONTAINER")
    logs.add_argument("--tail", type=int, default=200, help="lines per container")
    scale = sub.add_parser("scale", help="change a pool's autoscaler settings")
    scale.add_argument("pool", metavar="POOL", help="pool id or function name")
    scale.add_argument("--max", type=int, dest="max_containers", metavar="N")
    scale.add_argument("--min", type=int, dest="min_containers", metavar="N")
    scale.add_argument("--buffer", type=int, dest="buffer_containers", metavar="N")
    scale.add_argument("--scaledown-window", type=float, dest="scaledown_window", metavar="S")
    return parser


_LINE_PARSER = _line_parser()


def _usage_line(parser: MagicArgumentParser, magic: str = "%nbscale") -> str:
    """``usage: %nbscale logs [--tail TAIL] CALL_OR_CONTAINER``, on one line (``magic``
    replaces the parser's own first word)."""
    words = parser.format_usage().replace("::", "").split()
    return "usage: " + " ".join([magic, *words[1:]])


def _usage(line: str) -> str:
    """The usage line of the line magic's command in ``line`` (or of the line magic)."""
    words = line.split()
    for action in _LINE_PARSER._subparsers._group_actions if _LINE_PARSER._subparsers else ():
        choices = getattr(action, "choices", None) or {}
        if words and words[0] in choices:
            return _usage_line(choices[words[0]])
    return _usage_line(_LINE_PARSER)


def _unquote(value: Any) -> Any:
    """IPython splits a magic's line keeping quotes; here quotes only group, as in a shell
    (``--map "[1, 2]"``; a string literal is ``--map "'ab'"``)."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _parse(parser: MagicArgumentParser, line: str) -> argparse.Namespace:
    """Parse ``line``; a bad option is a UsageError that shows the usage line."""
    try:
        args = parser.parse_argstring(line)
    except UsageError as exc:
        usage = _usage(line) if parser is _LINE_PARSER else _usage_line(parser, "%%nbscale")
        raise UsageError(f"{exc}\n{usage}") from None
    return argparse.Namespace(**{k: _unquote(v) for k, v in vars(args).items()})


def _pull_names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


@magics_class
class NbScaleMagics(Magics):
    """The ``nbscale`` line and cell magics."""

    @magic_arguments.magic_arguments()
    @magic_arguments.argument("--gpu", metavar="T", help="GPU request: any, A100, H100:2, ...")
    @magic_arguments.argument(
        "--image", metavar="NAME", help="an nbscale.Image in the notebook, or a registry tag"
    )
    @magic_arguments.argument("--cpu", type=float, metavar="N", help="CPU cores per worker")
    @magic_arguments.argument("--memory", type=int, metavar="MB", help="memory per worker (MiB)")
    @magic_arguments.argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"seconds per run ({DEFAULT_TIMEOUT:g})",
    )
    @magic_arguments.argument(
        "--pull", metavar="A,B", help="names to bring back (default: all the cell assigns)"
    )
    @magic_arguments.argument("--no-pull", action="store_true", help="bring back no names")
    @magic_arguments.argument(
        "--map", dest="map_expr", metavar="ITERABLE", help="run the cell once per element"
    )
    @magic_arguments.argument("--as", dest="as_name", metavar="NAME", help="with --map: the name")
    @magic_arguments.argument(
        "--out", metavar="VAR", help="with --map: store the list of results in VAR"
    )
    @magic_arguments.argument("--max-containers", type=int, metavar="N", help="at most N workers")
    @line_cell_magic
    def nbscale(self, line: str, cell: str | None = None) -> Any:
        """%%nbscale runs the cell on a worker: the names it reads travel with it, what it
        prints shows here, the names it assigns come back (see --pull) and its last
        expression is the cell's result. With --map ITERABLE --as NAME it runs once per
        element, in parallel, and the list of last expressions is the result (or goes to
        --out VAR). The line magic: %nbscale status | pools | stop [POOL] |
        logs CALL_OR_CONTAINER | scale POOL --max N."""
        __tracebackhide__ = hidden()  # IPython leaves this frame out of tracebacks
        if cell is None:
            try:
                return self._line(line)
            except (InvalidError, NotFoundError) as exc:  # a bad argument: say which, and how
                raise UsageError(f"{exc}\n{_usage(line)}") from None
            except NbscaleError as exc:  # the message says it all: no frames of nbscale
                raise UsageError(str(exc)) from None
        args = _parse(self.nbscale.parser, line)  # type: ignore[attr-defined]
        return self._cell(line, args, cell)

    # --- %%nbscale ----------------------------------------------------------------------

    def _options(self, args: argparse.Namespace) -> CellOptions:
        image = None
        if args.image:
            found = self.shell.user_ns.get(args.image)  # type: ignore[union-attr]
            image = found if isinstance(found, Image) else Image.from_registry(args.image)
        return CellOptions(
            gpu=args.gpu,
            image=image,
            cpu=args.cpu,
            memory=args.memory,
            timeout=args.timeout,
            max_containers=args.max_containers,
        )

    def _cell(self, line: str, args: argparse.Namespace, cell: str) -> Any:
        __tracebackhide__ = hidden()
        shell = self.shell
        assert shell is not None
        problem = None
        if args.pull and args.no_pull:
            problem = "give --pull or --no-pull, not both"
        elif (args.map_expr is None) != (args.as_name is None):
            problem = "--map ITERABLE and --as NAME go together"
        elif args.out and args.map_expr is None:
            problem = "--out VAR goes with --map (a plain cell returns its last value)"
        if problem is not None:
            raise UsageError(f"{problem}\n{_usage_line(self.nbscale.parser, '%%nbscale')}")  # type: ignore[attr-defined]
        # The cell's text as the user wrote it, under the name tracebacks will show; the
        # code runs padded by one line, so that its line numbers are the cell's.
        text = f"%%nbscale {line}".rstrip() + "\n" + cell
        filename = shell.compile.cache(text, shell.execution_count, raw_code=text)
        source = "\n" + cell
        names = cell_names(source, filename)
        used = names.used - {args.as_name}
        namespace, unpicklable = namespace_for(shell.user_ns, used, shell.user_ns_hidden)
        if unpicklable:
            print(
                f"nbscale: not sent to the worker (they do not pickle): {', '.join(unpicklable)}",
                file=sys.stderr,
            )
        name = cell_name(this_owner()["name"], shell.execution_count)
        try:
            if args.map_expr is not None:
                fn = cell_function(self._options(args), namespace, name, per_element=True)
                return self._map(fn, args, source, filename, namespace)
            fn = cell_function(self._options(args), namespace, name)
            pull = [] if args.no_pull else sorted(names.assigned)
            if args.pull:
                pull = _pull_names(args.pull)
            result = fn.remote(source, filename, namespace, pull)
        except Exception as exc:
            # From the cell's first frame on, as if the cell had failed here; an error of
            # nbscale's own (a bad option, a lost worker) shows just its message.
            frames = cell_frames(exc.__traceback__, filename)
            show_cell_frames(exc, frames)
            raise exc.with_traceback(frames) from None
        shell.user_ns.update(result["names"])
        if result["unpicklable"]:
            print(
                "nbscale: not brought back (they do not pickle): "
                + ", ".join(result["unpicklable"]),
                file=sys.stderr,
            )
        return result["value"]

    def _map(
        self,
        fn: Function,
        args: argparse.Namespace,
        source: str,
        filename: str,
        namespace: dict[str, Any],
    ) -> list[Any] | None:
        shell = self.shell
        assert shell is not None
        try:
            iterable = eval(args.map_expr, shell.user_ns)
            total = known_total([iterable], None)
        except Exception as exc:
            raise UsageError(f"--map {args.map_expr}: {type(exc).__name__}: {exc}") from None
        inputs: Iterator[tuple[Any, ...]] = (
            (source, filename, namespace, (args.as_name, x)) for x in iterable
        )
        values = list(fn.starmap(inputs, total=total))
        if args.out:
            shell.user_ns[args.out] = values
            return None
        return values

    # --- %nbscale -----------------------------------------------------------------------

    def _line(self, line: str) -> None:
        args = _parse(_LINE_PARSER, line)
        if args.command == "status":
            info = status(all_pools=args.all)
            others = info["other_pools"]
            print(
                f"nbscale {info['mode']} control plane · launcher {info['launcher']} · "
                f"{len(info['pools'])} pools"
                + (f" (and {others} of other kernels: --all)" if others else "")
            )
            print(render.pools_text(info["pools"]))
        elif args.command == "pools":
            found = _pools.pools(all_pools=args.all)
            display(
                {"text/plain": render.pools_text(found), "text/html": render.pools_html(found)},
                raw=True,
            )
        elif args.command == "stop":
            self._stop(args)
        elif args.command == "logs":
            print(_pools.logs(args.ref, args.tail))
        else:
            changes = {
                "max_containers": args.max_containers,
                "min_containers": args.min_containers,
                "buffer_containers": args.buffer_containers,
                "scaledown_window": args.scaledown_window,
            }
            if all(v is None for v in changes.values()):
                raise UsageError(
                    "scale needs --max, --min, --buffer or --scaledown-window\n" + _usage("scale")
                )
            settings = _pools.scale(args.pool, **changes)
            print(", ".join(f"{k}={v}" for k, v in settings.items()))

    def _stop(self, args: argparse.Namespace) -> None:
        """``stop``: this kernel's pools; ``stop POOL``: one; ``stop --all``: every
        kernel's, once the user says yes (or with ``--yes``)."""
        if args.pool is not None and args.all:
            raise UsageError("give POOL or --all, not both\n" + _usage("stop"))
        if not args.all:
            stopped = _pools.stop(args.pool)
            if stopped:
                print(f"stopped {', '.join(stopped)}")
            else:
                others = _pools.pools(all_pools=True)
                print(
                    "no pools of this kernel to stop"
                    + (f" (other kernels': {_pools.owners_text(others)}; --all)" if others else "")
                )
            return
        found = _pools.pools(all_pools=True)
        if not found:
            print("no pools to stop")
            return
        others = [p for p in found if not is_mine(p["owner"])]
        if others and not args.yes:
            question = (
                f"Stop all {len(found)} pools, {len(others)} of them of other kernels "
                f"({_pools.owners_text(others)})? Their running calls are cancelled. [y/N] "
            )
            try:
                answer = input(question)
            except (StdinNotImplementedError, EOFError):
                raise UsageError(
                    "stop --all stops other kernels' pools and cannot ask here: add --yes"
                ) from None
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing stopped")
                return
        stopped = _pools.stop_pools([p["id"] for p in found])
        print(f"stopped {', '.join(stopped)}")
