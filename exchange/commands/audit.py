"""``exchange audit verify [--anchor LINE:HASH]... [--json]``, ``exchange audit sync``,
``exchange audit export --since DATE [--json]``: the tamper-evident audit log and the
information-governance record. Thin: parse, call :mod:`exchange.audit` /
:mod:`exchange.audit_export`, render."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, date, datetime
from pathlib import Path

from exchange import audit, audit_export
from exchange import config as config_mod
from exchange.commands._common import add_command, config_dir, out, out_json
from exchange.config import Config
from exchange.errors import EXIT_CODES, UsageError
from exchange.ledger import Ledger
from exchange.service import ledger_path

_ANCHOR = re.compile(r"([1-9][0-9]*):([0-9a-f]{64})")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        subparsers,
        "audit",
        "verify the hash-chained audit log, bring it up to date, or export what was shared",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser))
    actions.required = True
    verify = _action(actions, "verify", "check every line of the audit log; exit 1 if damaged")
    verify.add_argument(
        "--anchor",
        action="append",
        default=[],
        type=_anchor,
        metavar="LINE:HASH",
        help="a line number and hash from a copy kept elsewhere (detects a cut-off tail)",
    )
    verify.set_defaults(handler=run_verify)
    sync = _action(actions, "sync", "append ledger events not yet in the audit log")
    sync.set_defaults(handler=run_sync)
    export = _action(
        actions,
        "export",
        "what was shared with whom, when, under which agreement and legal basis, and why",
    )
    export.add_argument("--since", required=True, type=_since, metavar="DATE", help="YYYY-MM-DD")
    export.set_defaults(handler=run_export)


def _action(
    actions: argparse._SubParsersAction[argparse.ArgumentParser], name: str, text: str
) -> argparse.ArgumentParser:
    parser = actions.add_parser(name, help=text, description=text)
    # SUPPRESS: an action's default must not overwrite --config given before it.
    parser.add_argument(
        "--config",
        metavar="DIR",
        type=Path,
        default=argparse.SUPPRESS,
        help="configuration folder (default: $EXCHANGE_CONFIG, else ./config)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


def _anchor(text: str) -> tuple[int, str]:
    match = _ANCHOR.fullmatch(text)
    if match is None:
        raise UsageError(
            f"--anchor {text!r}: expected LINE:HASH (a line number, a colon, 64 hex digits)",
            hint="take both from 'exchange audit verify' output kept with the shipped copy",
        )
    return int(match.group(1)), match.group(2)


def _since(text: str) -> datetime:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--since {text!r}: expected a date as YYYY-MM-DD") from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _config(args: argparse.Namespace) -> Config:
    return config_mod.load_config(config_dir(args))


def _path(cfg: Config) -> Path:
    return cfg.folders.state / audit.AUDIT_FILE


def run_verify(args: argparse.Namespace) -> int:
    cfg = _config(args)
    report = audit.verify(_path(cfg), args.anchor)
    mismatches: list[audit.Mismatch] = []
    missing = None
    with Ledger.open(ledger_path(cfg)) as ledger:
        if report.ok:
            mismatches = audit.compare(ledger, _path(cfg))
            missing = (
                len(audit.ledger_entries(ledger))
                - report.lines
                + len([m for m in mismatches if m.what == "no longer in the ledger"])
            )
    if args.json:
        out_json(
            {
                "ok": report.ok,
                "lines": report.lines,
                "head": report.head,
                "problem": None
                if report.problem is None
                else {"line": report.problem.line, "what": report.problem.what},
                "ledger_records_not_logged": missing,
                "ledger_mismatches": [
                    {"line": m.line, "key": m.key, "what": m.what} for m in mismatches
                ],
            }
        )
    elif report.problem is None:
        out(f"audit log intact: {report.lines} lines; line {report.lines} hash {report.head}")
        if missing:
            out(f"{missing} ledger records are not in the log yet (run 'exchange audit sync')")
        for m in mismatches:
            out(f"ledger altered: {m.key} (audit line {m.line}) {m.what}")
    else:
        out(f"audit log damaged at line {report.problem.line}: {report.problem.what}")
        out(f"lines 1-{report.lines} are intact; line {report.lines} hash {report.head}")
    return EXIT_CODES["ok"] if report.ok and not mismatches else EXIT_CODES["attention"]


def run_sync(args: argparse.Namespace) -> int:
    cfg = _config(args)
    with Ledger.open(ledger_path(cfg)) as ledger:
        added = audit.sync(ledger, _path(cfg))
    if args.json:
        out_json({"added": added})
    else:
        out(f"{added} entries added to {_path(cfg)}")
    return EXIT_CODES["ok"]


def run_export(args: argparse.Namespace) -> int:
    cfg = _config(args)
    with Ledger.open(ledger_path(cfg)) as ledger:
        records = audit_export.export(cfg, ledger, args.since)
    if args.json:
        out_json([r.to_json() for r in records])
        return EXIT_CODES["ok"]
    for r in records:
        verb = "sent to" if r.direction == "sent" else "received from"
        who = f"{r.partner_name} ({r.partner})" if r.partner_name else f"{r.partner}"
        title = r.agreement_title or "no longer in the configuration"
        out(f"{r.at:%Y-%m-%d %H:%M}Z {verb} {who}: dataset {r.dataset} version {r.version}")
        if r.file_name is not None:
            out(f"  file: {r.file_name} ({r.size} bytes, sha256 {r.sha256})")
        out(f"  agreement: {r.agreement}: {title}")
        if r.legal_basis:
            out(f"  legal basis: {'; '.join(r.legal_basis)}")
        if r.classification:
            out(f"  classification: {r.classification}; data: {', '.join(r.data_categories)}")
        if r.purpose:
            out(f"  purpose: {r.purpose}")
        if r.kind != "regular" or r.reason:
            out(f"  {r.kind}: {r.reason}")
        if r.override_note:
            out(f"  consent overridden: {r.override_note}")
        if r.complaint_ref:
            out(f"  complaint: {r.complaint_ref}")
        acknowledged = (
            f", acknowledged {r.acknowledged_at:%Y-%m-%d %H:%M}Z" if r.acknowledged_at else ""
        )
        out(f"  state: {r.state}{acknowledged}")
    if not records:
        out(f"nothing shared since {args.since:%Y-%m-%d}")
    return EXIT_CODES["ok"]
