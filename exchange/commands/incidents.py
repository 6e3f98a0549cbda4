"""``exchange incidents [--json] [--all]``, ``exchange incidents show ID [--json]``,
``exchange incidents close ID --note TEXT [--json]``: the security and delivery incidents the
ledger holds (protocol §5, §10). Thin: parse, call :mod:`exchange.incidents`, render."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import cast

from exchange import config as config_mod
from exchange import incidents as ops
from exchange.commands._common import add_command, config_dir, out, out_json
from exchange.errors import EXIT_CODES, UsageError
from exchange.ledger import Ledger
from exchange.service import clock_from_env, ledger_path

COMMON_CONFIG_HELP = "configuration folder (default: $EXCHANGE_CONFIG, else ./config)"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        subparsers,
        "incidents",
        "list open incidents (--all: closed ones too); show one; close one with a note",
        json_option=True,
    )
    parser.add_argument("--all", action="store_true", help="include closed incidents")
    parser.set_defaults(handler=run_list)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser))
    show = actions.add_parser(
        "show", help="one incident in full", description="one incident in full"
    )
    show.add_argument("id", type=_incident_id, metavar="ID")
    _sub_options(show)
    show.set_defaults(handler=run_show)
    close = actions.add_parser(
        "close",
        help="close an open incident, saying what was done",
        description="close an open incident, saying what was done",
    )
    close.add_argument("id", type=_incident_id, metavar="ID")
    close.add_argument("--note", required=True, help="what was found and done (kept for audit)")
    _sub_options(close)
    close.set_defaults(handler=run_close)


def _sub_options(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: a sub-command's default must not overwrite --config/--json given before it
    # ("exchange incidents --json show 3").
    parser.add_argument(
        "--config", metavar="DIR", type=Path, default=argparse.SUPPRESS, help=COMMON_CONFIG_HELP
    )
    parser.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON instead of text"
    )


def _incident_id(text: str) -> int:
    value = text.removeprefix("#")
    if not value.isdigit() or int(value) < 1:
        raise UsageError(
            f"incident id {text!r}: expected a positive number",
            hint="run 'exchange incidents --all' to see the ids",
        )
    return int(value)


def _open_ledger(args: argparse.Namespace) -> Ledger:
    cfg = config_mod.load_config(config_dir(args))
    return Ledger.open(ledger_path(cfg))


def run_list(args: argparse.Namespace) -> int:
    with _open_ledger(args) as ledger:
        found = ops.list_incidents(ledger, include_closed=args.all)
    if args.json:
        out_json([ops.incident_json(i) for i in found])
        return EXIT_CODES["ok"]
    for incident in found:
        out(ops.describe(incident))
    if not found:
        out("no incidents" if args.all else "no open incidents")
    return EXIT_CODES["ok"]


def _render(incident_json: dict[str, object]) -> None:
    for key in ("id", "state", "reason", "agreement", "partner", "occurrences"):
        out(f"{key}: {incident_json[key]}")
    for key in ("opened_at", "last_seen_at", "closed_at", "close_note"):
        if incident_json[key] is not None:
            out(f"{key}: {incident_json[key]}")
    context = cast(dict[str, object], incident_json["context"])
    for key, value in sorted(context.items()):
        out(f"context.{key}: {value}")


def run_show(args: argparse.Namespace) -> int:
    with _open_ledger(args) as ledger:
        incident = ops.show_incident(ledger, args.id)
    if args.json:
        out_json(ops.incident_json(incident))
    else:
        _render(ops.incident_json(incident))
    return EXIT_CODES["ok"]


def run_close(args: argparse.Namespace) -> int:
    with _open_ledger(args) as ledger:
        incident = ops.close_incident(ledger, args.id, args.note, clock_from_env().now())
    if args.json:
        out_json(ops.incident_json(incident))
    else:
        out(f"incident {incident.id} closed")
    return EXIT_CODES["ok"]
