"""``exchange corrections [--json] [--all]``: every open correction, with the partners that
have and have not acknowledged the replacement and for how long they have had it; overdue
ones are logged as warnings and make the exit code 1, so monitoring can run it."""

from __future__ import annotations

import argparse
from datetime import timedelta

from exchange import config as config_mod
from exchange import corrections
from exchange.commands._common import add_command, config_dir, out, out_json
from exchange.errors import EXIT_CODES
from exchange.ledger import Ledger
from exchange.service import clock_from_env


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        subparsers,
        "corrections",
        "open corrections: who has and has not acknowledged the replacement, and for how "
        "long (exit 1 when one is overdue)",
        json_option=True,
    )
    parser.add_argument("--all", action="store_true", help="include complete corrections")
    parser.set_defaults(handler=run)


def _span(value: timedelta | None) -> str:
    if value is None:
        return "not yet on the hub"
    minutes = int(value.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    return f"{days}d {hours}h" if days else f"{hours}h {minutes}m"


def run(args: argparse.Namespace) -> int:
    cfg = config_mod.load_config(config_dir(args))
    cfg.folders.state.mkdir(mode=0o700, parents=True, exist_ok=True)
    with Ledger.open(corrections.ledger_file(cfg)) as ledger:
        items = corrections.open_corrections(
            cfg, ledger, clock_from_env().now(), include_complete=args.all
        )
    overdue = corrections.log_overdue(items)
    code = EXIT_CODES["attention"] if overdue else EXIT_CODES["ok"]
    if args.json:
        out_json({"corrections": corrections.corrections_json(items)})
        return code
    if not items:
        out("no open corrections")
        return code
    for item in items:
        facts = item.facts
        state = "complete" if item.complete else "OVERDUE" if item.overdue else "open"
        out(
            f"{facts.dataset} version {facts.version} (supersedes {facts.supersedes}) under "
            f"{facts.agreement}: {state}; complaint {facts.complaint}; made {_span(item.age)} ago"
        )
        for p in item.partners:
            if p.done:
                what = f"acknowledged ({p.receipt_status})"
            else:
                what = f"not acknowledged ({p.state.value})" + (" OVERDUE" if p.overdue else "")
            out(f"  {p.recipient}: {what}; has had it {_span(p.had_for)}")
    return code
