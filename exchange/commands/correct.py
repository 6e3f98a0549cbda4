"""``exchange correct DATASET FILE --complaint REF --reason TEXT``: a replacement dataset for
every partner that holds an earlier version (protocol §8). Thin: parse, call
:func:`exchange.corrections.correct`, render."""

from __future__ import annotations

import argparse
from pathlib import Path

from exchange import config as config_mod
from exchange import corrections
from exchange.commands._common import add_command, config_dir, out, out_json
from exchange.ledger import Ledger
from exchange.service import clock_from_env


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        subparsers,
        "correct",
        "send a corrected replacement of a dataset to every partner that holds an earlier "
        "version, after an accuracy complaint (protocol §8)",
        json_option=True,
    )
    parser.add_argument(
        "dataset",
        metavar="DATASET",
        help="the dataset's id (ds-...), or the file name it was sent under",
    )
    parser.add_argument("file", type=Path, metavar="FILE", help="the revised file (read only)")
    parser.add_argument(
        "--complaint", required=True, metavar="REF", help="the accuracy complaint's reference"
    )
    parser.add_argument(
        "--reason", required=True, metavar="TEXT", help="what was wrong with the earlier version"
    )
    parser.add_argument(
        "--supersedes",
        type=int,
        default=None,
        metavar="N",
        help="the version being corrected (default: the latest; only the latest is allowed)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_mod.load_config(config_dir(args))
    cfg.folders.state.mkdir(mode=0o700, parents=True, exist_ok=True)
    with Ledger.open(corrections.ledger_file(cfg)) as ledger:
        done = corrections.correct(
            cfg,
            ledger,
            args.dataset,
            args.file,
            complaint=args.complaint,
            reason=args.reason,
            now=clock_from_env().now(),
            supersedes=args.supersedes,
        )
    if args.json:
        out_json(done.to_json())
        return 0
    version = done.version
    when = (
        "the running daemon sends it at its next cycle"
        if done.timing == "immediate"
        else 'it goes at the agreement\'s next scheduled run (corrections = "next-run")'
    )
    who = ", ".join(done.recipients) if done.recipients else "nobody (no partner holds it)"
    out(
        f"correction recorded: {version.dataset} version {version.number} supersedes version "
        f"{done.superseded.number} (complaint {version.complaint_ref}); for {who}; {when}"
    )
    out(f"follow it with: exchange corrections (or exchange holders {version.dataset})")
    return 0
