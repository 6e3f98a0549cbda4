"""``exchange status [--json]``: what is due, sent, failing and quarantined; exit 1 when
something needs attention, so monitoring can run it."""

from __future__ import annotations

import argparse

from exchange import config as config_mod
from exchange.commands._common import add_command, config_dir, out, out_json
from exchange.errors import EXIT_CODES
from exchange.ledger import Ledger
from exchange.service import clock_from_env, ledger_path, status


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        subparsers,
        "status",
        "per agreement the next run and pending datasets; deliveries, failures, quarantine, "
        "incidents (exit 1 when something needs attention)",
        json_option=True,
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_mod.load_config(config_dir(args))
    cfg.folders.state.mkdir(mode=0o700, parents=True, exist_ok=True)
    with Ledger.open(ledger_path(cfg)) as ledger:
        report = status(cfg, ledger, clock_from_env().now())
    code = EXIT_CODES["attention"] if report.needs_attention else EXIT_CODES["ok"]
    if args.json:
        out_json(report.to_json())
        return code
    for a in report.agreements:
        out(
            f"agreement {a['id']}: {a['schedule']}; next run {a['next_run'] or 'never'}; "
            f"{a['pending_datasets']} datasets pending ({a['pending_deliveries']} deliveries)"
        )
    for p in report.partners:
        last = p["last_delivery"]
        when = f"last delivery {last['sent_at']}" if last else "nothing delivered yet"
        states = ", ".join(f"{n} {s}" for s, n in sorted(p["states"].items())) or "no deliveries"
        out(f"partner {p['id']}: {when}; {states}")
    for f in report.failures:
        out(
            f"failing: delivery {f['delivery']} to {f['recipient']} ({f['state']}, "
            f"{f['attempts']} attempts): {f['reason']}"
        )
    for q in report.quarantined:
        out(f"quarantined: {q['path']} ({q['reason']}): {q['detail']}")
    for i in report.incidents:
        out(f"incident {i['id']}: {i['reason']} (seen {i['occurrences']} times)")
    for c in report.corrections:
        out(
            f"correction {c['dataset']} version {c['version']}"
            f"{' OVERDUE' if c['overdue'] else ''}: replaced by "
            f"{', '.join(c['acknowledged']) or 'nobody yet'}; waiting for "
            f"{', '.join(c['outstanding'])} (exchange corrections)"
        )
    out("needs attention" if report.needs_attention else "ok")
    return code
