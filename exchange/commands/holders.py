"""``exchange holders DATASET [--json]``: which partner holds which version of a dataset now,
and whether a verified receipt confirms it (protocol §8: corrections go to every holder)."""

from __future__ import annotations

import argparse

from exchange import config as config_mod
from exchange import corrections
from exchange.commands._common import add_command, config_dir, out, out_json
from exchange.ledger import Ledger


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        subparsers,
        "holders",
        "which partner holds which version of a dataset now",
        json_option=True,
    )
    parser.add_argument(
        "dataset",
        metavar="DATASET",
        help="the dataset's id (ds-...), or the file name it was sent under",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_mod.load_config(config_dir(args))
    cfg.folders.state.mkdir(mode=0o700, parents=True, exist_ok=True)
    with Ledger.open(corrections.ledger_file(cfg)) as ledger:
        report = corrections.holders(ledger, args.dataset)
    if args.json:
        out_json(report.to_json())
        return 0
    latest = report.versions[-1]
    out(f"{report.dataset} under {report.agreement}: latest version {latest.number}")
    for version in report.versions:
        extra = ""
        if version.complaint_ref is not None:
            extra = f" (complaint {version.complaint_ref}: {version.reason})"
        out(f"  version {version.number}: {version.kind.value}, {version.sha256}{extra}")
    if not report.holders:
        out("  nobody holds it yet")
    for h in report.holders:
        how = "confirmed by receipt" if h.confirmed else f"{h.state.value}, not yet confirmed"
        stale = "" if h.version == latest.number else " (out of date)"
        out(f"  {h.recipient}: version {h.version}{stale}; {how}")
    return 0
