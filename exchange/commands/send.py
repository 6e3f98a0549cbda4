"""``exchange send FILE --agreement ID --reason TEXT``: an out-of-schedule send (protocol §3)."""

from __future__ import annotations

import argparse
from pathlib import Path

from exchange import config as config_mod
from exchange.commands._common import add_command, config_dir, out, out_json
from exchange.ledger import Ledger
from exchange.service import clock_from_env, ledger_path, send


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        subparsers,
        "send",
        "queue a dataset to go now, outside the agreement's schedule, with a recorded reason",
        json_option=True,
    )
    parser.add_argument("file", type=Path, help="the dataset file (read, never moved)")
    parser.add_argument("--agreement", required=True, metavar="ID", help="the agreement")
    parser.add_argument(
        "--reason", required=True, metavar="TEXT", help="why it goes out of schedule (recorded)"
    )
    parser.add_argument(
        "--override-consent",
        metavar="NOTE",
        default=None,
        help="a note recording why consent was overridden (recorded with the version)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_mod.load_config(config_dir(args))
    cfg.folders.state.mkdir(mode=0o700, parents=True, exist_ok=True)
    with Ledger.open(ledger_path(cfg)) as ledger:
        queued = send(
            cfg,
            ledger,
            args.file,
            agreement_id=args.agreement,
            reason=args.reason,
            override_note=args.override_consent,
            now=clock_from_env().now(),
        )
    version = queued.version
    if args.json:
        out_json(
            {
                "dataset": version.dataset.value,
                "version": version.number,
                "sha256": version.sha256.hex,
                "size": version.size,
                "kind": version.kind.value,
                "reason": version.reason,
                "override_note": version.override_note,
                "recipients": list(queued.recipients),
            }
        )
        return 0
    out(
        f"queued {version.dataset} version {version.number} ({version.size} bytes) for "
        f"{', '.join(queued.recipients)}; the running daemon sends it at its next cycle"
    )
    return 0
