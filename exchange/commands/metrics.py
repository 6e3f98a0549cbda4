"""``exchange metrics [--listen 127.0.0.1:PORT]``: serve the Prometheus endpoint of
:mod:`exchange.metrics` in the foreground, beside the daemon, until SIGTERM or SIGINT.
It only reads the ledger."""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from exchange import config as config_mod
from exchange.commands._common import add_command, config_dir, out
from exchange.errors import EXIT_CODES, UsageError
from exchange.ledger import Ledger
from exchange.metrics import MetricsServer
from exchange.service import clock_from_env, ledger_path

DEFAULT_LISTEN = "127.0.0.1:9464"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        subparsers,
        "metrics",
        "serve Prometheus metrics from the ledger on a loopback address (foreground)",
    )
    parser.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        type=_listen,
        metavar="ADDR:PORT",
        help=f"loopback address and port (default: {DEFAULT_LISTEN})",
    )
    parser.set_defaults(handler=run)


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--listen {text!r}: expected ADDR:PORT, e.g. {DEFAULT_LISTEN}")
    return host, int(port)


def run(args: argparse.Namespace) -> int:
    cfg = config_mod.load_config(config_dir(args))
    host, port = args.listen
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with Ledger.open(ledger_path(cfg)) as ledger:
        server = MetricsServer(ledger, clock_from_env(), host=host, port=port).start()
        out(f"serving metrics on http://{host}:{server.port}/metrics")
        try:
            stop.wait()
        finally:
            server.stop()
    return EXIT_CODES["ok"]
