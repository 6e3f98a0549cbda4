"""``exchange retention [--json]``: what the agreements' retention makes due for purging now.
Read-only: it lists, it never deletes (docs/operations.md, "Retention")."""

from __future__ import annotations

import argparse

from exchange import config as config_mod
from exchange import retention
from exchange.commands._common import add_command, config_dir, out, out_json
from exchange.errors import EXIT_CODES
from exchange.ledger import Ledger
from exchange.service import clock_from_env, ledger_path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        subparsers,
        "retention",
        "list what retention makes due for purging now (spool, quarantine, hub, filed); "
        "deletes nothing",
        json_option=True,
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_mod.load_config(config_dir(args))
    with Ledger.open(ledger_path(cfg)) as ledger:
        result = retention.plan(cfg, ledger, clock_from_env().now())
    if args.json:
        out_json(
            {
                "due": [
                    {
                        "kind": d.kind,
                        "key": d.key,
                        "agreement": d.agreement,
                        "path": d.path,
                        "due_at": d.due_at.isoformat(),
                        "reason": d.reason,
                    }
                    for d in result.due
                ],
                "unjudged": list(result.unjudged),
            }
        )
        return EXIT_CODES["ok"]
    for d in result.due:
        where = f" {d.path}" if d.path else ""
        out(f"{d.kind} {d.key}{where} (agreement {d.agreement}): due since "
            f"{d.due_at:%Y-%m-%d %H:%M}Z: {d.reason}")  # fmt: skip
    for agreement in result.unjudged:
        out(f"agreement {agreement}: not in the configuration; its records are kept")
    if not result.due:
        out("nothing is due for purging")
    return EXIT_CODES["ok"]
