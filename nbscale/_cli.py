"""The ``nbscale`` command: ``run``, ``deploy``, ``apps``, ``demo``, ``doctor``, ``status``,
``images``, ``config``, ``k8s``, ``secret`` and ``volume``.

An nbscale error ends a command with one line on stderr that says what went wrong and what
to do, never a traceback (``--debug`` adds it). The exit codes are ``EXIT_CODES``.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from typing import Any

import nbscale

from . import (
    _cli_config,
    _cli_demo,
    _cli_deploy,
    _cli_doctor,
    _cli_images,
    _cli_k8s,
    _cli_run,
    _cli_store,
)
from ._script import ScriptError
from .exceptions import NbscaleError

EXIT_OK = 0
EXIT_ERROR = 1  # an nbscale error (or, for doctor, a problem found)
EXIT_USAGE = 2  # a bad command line (argparse's own)
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT

EPILOG = """\
exit codes:
  0    done
  1    an nbscale error, printed in one line with what to do (--debug adds the
       traceback); for doctor: a problem found; for run: the script raised
  2    a bad command line
  130  interrupted (Ctrl-C)
"""


def error_text(exc: BaseException) -> str:
    """``nbscale: error: <what went wrong: what to do>``; the lines a message carries after
    its first (a failed build's last output lines) follow, indented."""
    first, *rest = (str(exc) or type(exc).__name__).splitlines()
    return "\n".join([f"nbscale: error: {first}", *(f"  {line}" for line in rest)])


def _status(args: argparse.Namespace) -> int:
    status: dict[str, Any] = nbscale.status()
    json.dump(status, sys.stdout, indent=2)
    print()
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="nbscale",
        description="Modal-style .map() over an autoscaled pool of workers on your machines.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"nbscale {nbscale.__version__}")
    top.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _cli_run.add_parser(sub)
    _cli_deploy.add_parser(sub)
    _cli_demo.add_parser(sub)
    _cli_doctor.add_parser(sub)
    sub.add_parser(
        "status", help="print this process's control plane and pools as JSON"
    ).set_defaults(run=_status)
    _cli_images.add_parser(sub)
    _cli_config.add_parser(sub)
    _cli_k8s.add_parser(sub)
    _cli_store.add_parsers(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)  # a bad command line exits with EXIT_USAGE
    try:
        code: int = args.run(args)
    except ScriptError as exc:  # the user's own code raised: its traceback, as Python shows it
        refused = None if args.debug else _cli_run.refusal(exc)
        if refused is not None:  # what nbscale refused is said in one line
            print(error_text(refused), file=sys.stderr)
        else:
            _cli_run.print_script_error(exc)
        return EXIT_ERROR
    except NbscaleError as exc:
        if args.debug:
            traceback.print_exc()
        print(error_text(exc), file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("\nnbscale: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code
