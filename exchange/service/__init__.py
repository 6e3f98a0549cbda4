"""The daemon and its commands' operations (layer 3, the imperative shell).

``daemon`` runs the loop and the lanes, ``lane`` delivers to one partner, ``deliver`` makes one
attempt, ``reconcile`` settles a partner's hub folder with the ledger, ``intake`` turns outbox candidates into ledger
versions, ``due`` decides what is due from the ledger, ``report`` answers ``status`` and
``send``, ``context`` holds the shared parts and the crash points.
"""

from exchange.service.context import CRASH_POINTS, Context, Settings, clock_from_env, crash_point
from exchange.service.daemon import Daemon, ledger_path, run_daemon
from exchange.service.report import Queued, StatusReport, send, status

__all__ = [
    "CRASH_POINTS",
    "Context",
    "Daemon",
    "Queued",
    "Settings",
    "StatusReport",
    "clock_from_env",
    "crash_point",
    "ledger_path",
    "run_daemon",
    "send",
    "status",
]
