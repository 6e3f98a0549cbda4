"""``exchange run``: the daemon ops put under systemd (docs/operations.md)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from exchange import config as config_mod
from exchange import keys as keys_mod
from exchange import log, pull, receipts
from exchange.commands._common import add_command, config_dir
from exchange.config import Config
from exchange.errors import ExchangeError
from exchange.service import Context, Daemon, Settings, clock_from_env, run_daemon
from exchange.transport import Transport

_DEFAULTS = Settings()


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        subparsers, "run", "run the daemon: watch outboxes, take files, deliver on schedule"
    )
    for flag, attribute, help_text in (
        ("--settle", "settle_seconds", "seconds a file must stay unchanged before it is taken"),
        ("--rescan", "rescan_seconds", "seconds between full rescans of the outboxes"),
        ("--tick", "tick_seconds", "seconds between delivery cycles when nothing wakes them"),
        ("--grace", "grace_seconds", "seconds an upload may take to finish after SIGTERM"),
        ("--retry-base", "retry_base_seconds", "first wait after a transient failure"),
        ("--retry-cap", "retry_cap_seconds", "longest wait between retries"),
        ("--park-probe", "park_probe_seconds", "first wait before a parked partner is probed"),
        (
            "--collect",
            "receipts_seconds",
            "seconds between hub collections: receipts, partners' datasets, overdue receipts",
        ),
    ):
        default = getattr(_DEFAULTS, attribute)
        parser.add_argument(
            flag,
            dest=attribute,
            type=float,
            default=default,
            metavar="SECONDS",
            help=f"{help_text} (default: {default:g})",
        )
    parser.add_argument(
        "--max-attempts",
        type=int,
        default=_DEFAULTS.max_attempts,
        metavar="N",
        help="attempts that die without an answer before a delivery is quarantined "
        f"(default: {_DEFAULTS.max_attempts})",
    )
    parser.set_defaults(handler=run)


def receipt_collector(cfg: Config) -> Callable[[Context, Transport], object]:
    """The daemon's periodic hub job, on its own hub connection (docs/hub.md, "Roles").

    As the hub's operator: receipts in every partner's ``receipts/`` (``exchange.receipts``)
    and the datasets partners sent us in their ``outbox/`` (``exchange.pull``), verified,
    filed and acknowledged. As a partner on another organisation's hub: the receipts in our
    own ``inbox/`` (datasets there are fetched with ``exchange pull``). Either way, deliveries
    whose receipt is overdue raise one incident each. One step failing on the hub does not
    skip the others."""
    identities = keys_mod.load_identities(keys_mod.KeyPaths(cfg.folders.keys))
    routes = receipts.partner_routes() if cfg.hub.is_partner else None

    def collect(ctx: Context, transport: Transport) -> object:
        steps: list[tuple[str, Callable[[], object]]] = [
            (
                "receipts",
                lambda: receipts.collect_receipts(
                    cfg, ctx.ledger, transport, ctx.now(), identities=identities, routes=routes
                ),
            ),
        ]
        if not cfg.hub.is_partner:
            steps.append(
                (
                    "inbound",
                    lambda: pull.collect_inbound(
                        cfg,
                        ctx.ledger,
                        transport,
                        identities=identities,
                        signing_key=ctx.signing_key,
                        now=ctx.now(),
                    ),
                )
            )
        for name, step in steps:
            try:
                step()
            except ExchangeError as error:
                log.get_logger().warning(
                    "collect.failed", reason=name, error=error.message, hint=error.hint
                )
        return receipts.raise_overdue(cfg, ctx.ledger, ctx.now())

    return collect


def run(args: argparse.Namespace) -> int:
    cfg = config_mod.load_config(config_dir(args))
    log.configure(cfg.logging.level, cfg.logging.format)
    settings = Settings(
        settle_seconds=args.settle_seconds,
        rescan_seconds=args.rescan_seconds,
        tick_seconds=args.tick_seconds,
        grace_seconds=args.grace_seconds,
        retry_base_seconds=args.retry_base_seconds,
        retry_cap_seconds=args.retry_cap_seconds,
        park_probe_seconds=args.park_probe_seconds,
        receipts_seconds=args.receipts_seconds,
        max_attempts=args.max_attempts,
    )
    daemon = Daemon(
        cfg,
        clock=clock_from_env(),
        settings=settings,
        receipt_collector=receipt_collector(cfg),
    )
    return run_daemon(daemon)
