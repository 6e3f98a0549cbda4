"""``exchange config check``: validate everything and summarise each agreement."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from exchange import ops
from exchange.commands._common import add_command, config_dir, out, out_json


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("config", help="validate and describe the configuration")
    group = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = add_command(
        group, "check", "validate config; errors name file and key", json_option=True
    )
    check.set_defaults(handler=run_check)


def run_check(args: argparse.Namespace) -> int:
    report = ops.check_config(config_dir(args), datetime.now(UTC))
    if args.json:
        out_json(report.to_json())
        return 0
    out(
        f"configuration valid: {report.organisation} ({report.organisation_name}), "
        f"{report.partners} partners, {len(report.agreements)} agreements, "
        f"keys {'ok' if report.keys_ok else 'NOT READY'}"
    )
    for a in report.agreements:
        when = a.next_run.strftime("%Y-%m-%d %H:%M %Z") if a.next_run else "never (expired)"
        out(f"  {a.id}: to {', '.join(a.recipients)}; {a.frequency}; next run {when}")
    for warning in report.warnings:
        out(f"warning: {warning}")
    return 0
