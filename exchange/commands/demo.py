"""``exchange demo [--keep]``: the whole loop on one machine, on a hub it starts itself.

Needs root (the hub makes Unix logins and root-owned chroot folders) and OpenSSH's sshd.
Exit 0 when every step verified, 1 when a step failed, 9 when a prerequisite is missing.
"""

from __future__ import annotations

import argparse

from exchange.commands._common import add_command


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        subparsers, "demo", "the whole loop on one machine, on a hub it starts itself"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the workspaces, the hub folder and the logs afterwards, and say where",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from exchange import log
    from exchange.demo.run import run_demo

    # The demo narrates on stdout; log lines of the steps it runs in-process would interleave.
    log.configure("warning")
    return run_demo(keep=args.keep)
