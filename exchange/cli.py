"""The command line: the only place that prints errors and chooses exit codes.

Rule: commands raise :class:`~exchange.errors.ExchangeError` subclasses; ``main`` renders
``exchange: error: ...`` and ``exchange: hint: ...`` on stderr and returns the error's exit
code. No command prints a traceback for an error the user can fix.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence

from exchange import __version__, log
from exchange.errors import EXIT_CODES, ConfigError, ExchangeError, UsageError

#: Command modules under ``exchange.commands``, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "init",
    "keys",
    "config",
    "crypt",
    "hub",
    "run",
    "send",
    "status",
    "incidents",
    "audit",
    "metrics",
    "retention",
    "pull",
    "demo",
    "correct",
    "corrections",
    "holders",
)

PROG = "exchange"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises UsageError instead of exiting, so main renders it."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message, hint=f"run '{self.prog} --help' to see its usage")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Secure dataset exchange between partner organisations.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"exchange.commands.{name}")
        module.register(subparsers)
    return parser


def _render_error(error: ExchangeError) -> None:
    if isinstance(error, ConfigError):
        for problem in error.problems:
            sys.stderr.write(f"{PROG}: error: {problem}\n")
    else:
        sys.stderr.write(f"{PROG}: error: {error.message}\n")
    if error.hint:
        sys.stderr.write(f"{PROG}: hint: {error.hint}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code."""
    log.configure(os.environ.get("EXCHANGE_LOG_LEVEL", "info"))
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        code: int = args.handler(args)
        return code
    except ExchangeError as error:
        if error.show_traceback:
            traceback.print_exc()
        _render_error(error)
        return error.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return EXIT_CODES["interrupted"]
    except BrokenPipeError:
        # The reader went away (e.g. `exchange status | head`); nothing left to tell it.
        return EXIT_CODES["ok"]
