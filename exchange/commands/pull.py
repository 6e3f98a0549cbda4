"""``exchange pull [--json]``: fetch, verify, decrypt, file and acknowledge, once.

Run at a partner: logs in to the hub as ``[hub] login`` (its ``hub_folder``), receives what
is in its ``inbox/`` (:mod:`exchange.pull`), then collects the receipts the hub's owner left
in ``inbox/`` for datasets this partner sent from its ``outbox/`` (:mod:`exchange.receipts`).
Exit 0 when nothing needed attention, 1 when something was refused or rejected (each such
delivery is an incident in the ledger), other codes for errors.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from exchange import keys as keys_mod
from exchange import pull as pull_mod
from exchange import receipts as receipts_mod
from exchange.commands._common import add_command, config_dir, out, out_json
from exchange.config import Config, load_config
from exchange.errors import EXIT_CODES
from exchange.ledger import LEDGER_FILENAME, Ledger
from exchange.transport import SftpSettings, SftpTransport


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        subparsers,
        "pull",
        "partner side: fetch, verify, decrypt, file and acknowledge deliveries",
        json_option=True,
    )
    parser.set_defaults(handler=run)


def transport_for(cfg: Config) -> SftpTransport:
    """The hub connection of ``cfg``'s own login, with its pinned host keys."""
    paths = keys_mod.KeyPaths(cfg.folders.keys)
    return SftpTransport(
        SftpSettings(
            host=cfg.hub.host,
            port=cfg.hub.port,
            login=cfg.hub.login,
            key_path=keys_mod.check_ssh_key(paths),
            host_keys=cfg.hub.host_keys,
            connect_timeout=cfg.hub.connect_timeout,
        )
    )


def pull_once(cfg: Config, now: datetime) -> tuple[pull_mod.PullReport, receipts_mod.ReceiptReport]:
    """One pull: receive deliveries, then collect receipts for what we sent."""
    paths = keys_mod.KeyPaths(cfg.folders.keys)
    identities = keys_mod.load_identities(paths)
    signing_key = keys_mod.load_signing_key(paths)
    transport = transport_for(cfg)
    try:
        with Ledger.open(cfg.folders.state / LEDGER_FILENAME) as ledger:
            report = pull_mod.pull(
                cfg, ledger, transport, identities=identities, signing_key=signing_key, now=now
            )
            receipts = receipts_mod.collect_receipts(
                cfg,
                ledger,
                transport,
                now,
                identities=identities,
                routes=receipts_mod.partner_routes(),
            )
    finally:
        transport.close()
    return report, receipts


def run(args: argparse.Namespace) -> int:
    cfg = load_config(config_dir(args))
    report, receipts = pull_once(cfg, datetime.now(UTC))
    attention = bool(report.incidents or receipts.incidents)
    if args.json:
        out_json({"pull": report.to_json(), "receipts": receipts.to_json()})
    else:
        for o in report.outcomes:
            where = f" -> {o.path}" if o.path else ""
            why = f" ({o.reason.value})" if o.reason else ""
            who = f" from {o.sender} under {o.agreement}" if o.sender else ""
            ack = "; receipt sent" if o.receipt_sent else ""
            out(f"{o.result.value}: {o.delivery or o.stem}{who}{why}{where}{ack}")
        for name in report.unexpected:
            out(f"unexpected file on the hub: {name} (incident recorded)")
        for r in receipts.outcomes:
            why = f" ({r.reason})" if r.reason else ""
            out(f"receipt {r.result.value}: {r.delivery or r.name}{why}")
        out(
            f"{report.count(pull_mod.Result.FILED)} filed, "
            f"{report.count(pull_mod.Result.REJECTED)} rejected, "
            f"{report.count(pull_mod.Result.REFUSED)} refused, "
            f"{report.count(pull_mod.Result.DUPLICATE)} already received; "
            f"{len(report.incidents) + len(receipts.incidents)} incident(s)"
        )
    return EXIT_CODES["attention"] if attention else EXIT_CODES["ok"]
