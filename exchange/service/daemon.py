"""The daemon: watch the outboxes, take files, record runs, and run a delivery lane per partner.

Rules:

1. **Start-up reconciles before anything new happens**: our temporaries in the spool and
   quarantine are removed, quarantined entries the ledger lacks are recorded, and each lane
   reconciles its partner's hub folder (deliveries left ``uploading``, leftover ``.part``
   files) before its first attempt.
2. **The main thread** owns intake (outboxes, stability tracks), run recording and the
   quarantine of poisoned spool copies; it waits on the watcher's queue, so a new file is
   looked at at once. The scheduler's jobs only set flags and events (``exchange.scheduler``).
3. **Stopping** (SIGTERM, SIGINT, or :meth:`Daemon.stop`): no new attempt starts; an upload
   in progress may finish within ``grace_seconds``; after that it is abandoned at its next
   write, which removes its temporary file, so no partial file ever has a final name. The
   daemon then exits 0. A lane stuck in the network past the grace period is left to the
   process exit: whatever it had was a temporary name, removed at the next start.
4. One JSON line per event, names listed in docs/operations.md.
"""

from __future__ import annotations

import os
import random
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import structlog

from exchange import audit
from exchange import keys as keys_mod
from exchange.clock import Clock
from exchange.config import Config
from exchange.core.delivery import DeliveryState
from exchange.errors import ConfigError, ExchangeError, LedgerCorrupt
from exchange.ledger import Ledger
from exchange.model import ReasonCode, Sha256
from exchange.outbox import Outbox, OutboxMoved, Quarantined
from exchange.scheduler import Wakeups
from exchange.service import due
from exchange.service.context import Context, Settings, crash_point
from exchange.service.intake import Intake, record_quarantined
from exchange.service.lane import Lane
from exchange.systemd import Notifier, watchdog_interval
from exchange.transport import SftpSettings, SftpTransport, Transport
from exchange.watcher import OutboxWatcher

_log = structlog.get_logger()

LEDGER_FILE = "ledger.sqlite3"

TransportFactory = Callable[[], Transport]


def ledger_path(cfg: Config) -> Path:
    return cfg.folders.state / LEDGER_FILE


def sftp_factory(cfg: Config) -> TransportFactory:
    """A new SFTP connection to the hub as our daemon login, with the pinned host keys."""
    if not cfg.hub.host_keys:
        raise ConfigError(
            "config/exchange.toml: hub.host_keys: no hub host key pinned; nothing can be sent",
            hint="pin the key that 'exchange hub run' prints, after confirming it out of band",
        )
    key_path = keys_mod.check_ssh_key(keys_mod.KeyPaths(cfg.folders.keys))
    settings = SftpSettings(
        host=cfg.hub.host,
        port=cfg.hub.port,
        login=cfg.hub.login,
        key_path=key_path,
        host_keys=cfg.hub.host_keys,
        connect_timeout=cfg.hub.connect_timeout,
    )
    SftpTransport(settings)  # load the key and parse the pins now: fail at start, not later
    return lambda: SftpTransport(settings)


class Daemon:
    """``exchange run``. Build, then :meth:`run` (blocks until stopped)."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock,
        settings: Settings | None = None,
        transport_factory: TransportFactory | None = None,
        receipt_collector: Callable[[Context, Transport], object] | None = None,
    ) -> None:
        self.config = config
        signing_key = keys_mod.load_signing_key(keys_mod.KeyPaths(config.folders.keys))
        self._factory = transport_factory or sftp_factory(config)
        config.folders.state.mkdir(mode=0o700, parents=True, exist_ok=True)
        ledger = Ledger.open(ledger_path(config))
        self.ctx = Context(
            config=config,
            ledger=ledger,
            clock=clock,
            settings=settings or Settings(),
            signing_key=signing_key,
            rng=random.Random(),  # noqa: S311 - jitter, not secrecy
            stopping=threading.Event(),
            abandon=threading.Event(),
        )
        self._receipts = receipt_collector
        self._rescan = threading.Event()
        self._health = threading.Event()
        #: sd_notify (a no-op outside systemd); the flag is set by the scheduler's thread, so
        #: a dead scheduler sends no WATCHDOG=1 either (docs/operations.md, systemd).
        self._notifier = Notifier.from_environ()
        self._watchdog = threading.Event()
        self._audit = threading.Event()
        self.lanes: dict[str, Lane] = {}
        self.outboxes: dict[str, Outbox] = {}
        self.watcher: OutboxWatcher | None = None
        self.intake: Intake | None = None
        self.stopped = threading.Event()
        self._stop_reason = "requested"
        self._revalidate = threading.Event()
        #: Agreements whose outbox moved under us (TESTPLAN A2): intake paused until restart.
        self.paused: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self, reason: str = "requested") -> None:
        """Ask the daemon to stop; safe from a signal handler (it only sets events: logging
        here could deadlock on the log stream's lock held by the interrupted code)."""
        if not self.ctx.stopping.is_set():
            self._stop_reason = reason
        self.ctx.stopping.set()
        for lane in list(self.lanes.values()):
            lane.wake.set()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stop(signal.Signals(signum).name)

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def run(self) -> int:
        """Start, loop until stopped, stop cleanly; return the exit code (0)."""
        cfg = self.config
        _log.info("daemon.starting", pid=os.getpid(), count=len(cfg.agreements))
        wakeups = Wakeups()
        try:
            self._open_outboxes()
            assert self.intake is not None
            self.intake.start_up()
            self.watcher = OutboxWatcher({a: o.path for a, o in self.outboxes.items()})
            self.watcher.start()
            self._rescan.set()
            for partner_id in sorted(self._partners()):
                lane = Lane(self.ctx, partner_id, self._factory)
                self.lanes[partner_id] = lane
                lane.start()
            s = self.ctx.settings
            wakeups.every("rescan", s.rescan_seconds, self._rescan.set)
            wakeups.every("health", s.health_seconds, self._health.set)
            wakeups.every("audit", s.health_seconds, self._audit.set)
            wakeups.every("reconcile", s.tick_seconds, self._wake_lanes)
            wakeups.every("revalidate", s.revalidate_seconds, self._revalidate.set)
            if self._receipts is not None:
                # Runs on the scheduler's own thread with its own hub connection, so a slow
                # hub folder never holds up intake or the lanes.
                wakeups.every("receipts", s.receipts_seconds, self._collect_receipts)
            interval = watchdog_interval(os.environ)
            if interval is not None:
                wakeups.every("watchdog", interval, self._watchdog.set)
            wakeups.start()
            _log.info("daemon.ready", pid=os.getpid(), count=len(self.lanes))
            self._notifier.ready(
                f"watching {len(self.outboxes)} outboxes; {len(self.lanes)} partner lanes"
            )
            self._loop()
        finally:
            wakeups.stop()
            self._shutdown()
        return 0

    def _partners(self) -> set[str]:
        return {p for a in self.config.agreements.values() for p in a.recipients}

    def _open_outboxes(self) -> None:
        folders = self.config.folders
        for folder in (folders.spool, folders.quarantine):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        for agreement in self.config.agreements.values():
            agreement.outbox.mkdir(mode=0o750, parents=True, exist_ok=True)
            self.outboxes[agreement.id] = Outbox(
                agreement.id,
                agreement.outbox,
                folders.spool,
                folders.quarantine,
                clock=self.ctx.clock,
            )
        self.intake = Intake(self.ctx, self.outboxes)

    def _wake_lanes(self) -> None:
        for lane in self.lanes.values():
            lane.wake.set()

    def _shutdown(self) -> None:
        _log.info("daemon.stopping", reason=self._stop_reason, pid=os.getpid())
        self._notifier.stopping(f"stopping ({self._stop_reason})")
        self.ctx.stopping.set()
        if self.watcher is not None:
            self.watcher.stop()
        self._wake_lanes()
        grace = self.ctx.settings.grace_seconds
        deadline = self.ctx.clock.monotonic() + grace
        for lane in self.lanes.values():
            lane.join(max(0.0, deadline - self.ctx.clock.monotonic()))
        if any(lane.is_alive() for lane in self.lanes.values()):
            self.ctx.abandon.set()
            for lane in self.lanes.values():
                lane.join(5.0)
        stuck = [lane.partner_id for lane in self.lanes.values() if lane.is_alive()]
        for outbox in self.outboxes.values():
            outbox.close()
        if not stuck:
            self.ctx.ledger.close()
        _log.info("daemon.stopped", pid=os.getpid(), count=len(stuck))
        self.stopped.set()

    # -- the main loop -----------------------------------------------------------------------

    def _loop(self) -> None:
        while not self.ctx.stopping.is_set():
            try:
                self._iteration()
            except LedgerCorrupt:
                raise  # never go on writing to a damaged ledger
            except ExchangeError as error:
                # A busy or full ledger, a full disk: transient by nature; wait and go on.
                _log.error("daemon.loop_failed", error=error.message, hint=error.hint)
                self.ctx.stopping.wait(1.0)
            except Exception as error:  # noqa: BLE001 - the service loop outlives a bug
                _log.exception("daemon.loop_failed", error=f"{type(error).__name__}: {error}")
                self.ctx.stopping.wait(1.0)

    def _sync_audit_log(self) -> None:
        """Mirror new ledger records into the hash-chained audit log (exchange.audit). A
        damaged log is reported every time and never appended to; the daemon goes on."""
        path = self.config.folders.state / audit.AUDIT_FILE
        try:
            added = audit.sync(self.ctx.ledger, path)
        except audit.AuditLogDamaged as error:
            _log.error("audit.damaged", path=str(path), error=error.message, hint=error.hint)
            return
        if added:
            _log.debug("audit.appended", count=added)

    def _ping_watchdog(self) -> None:
        """WATCHDOG=1 only while the watcher, every lane and the ledger answer. The scheduler
        proved itself by setting the flag, and this loop by running; otherwise systemd's
        WatchdogSec runs out and it restarts the daemon (TESTPLAN: never ping when unhealthy)."""
        watcher = self.watcher
        healthy = (
            watcher is not None
            and watcher.healthy()
            and all(lane.is_alive() for lane in self.lanes.values())
        )
        if healthy and self.ctx.ledger.schema_version > 0:
            self._notifier.watchdog()

    def _iteration(self) -> None:
        assert self.watcher is not None and self.intake is not None
        watcher, intake = self.watcher, self.intake
        if self._rescan.is_set():
            self._rescan.clear()
            intake.retain(watcher.rescan())
        if self._revalidate.is_set():
            self._revalidate.clear()
            self._revalidate_outboxes()
        if self._watchdog.is_set():
            self._watchdog.clear()
            self._ping_watchdog()
        if self._health.is_set():
            self._health.clear()
            if not watcher.healthy():
                _log.error("watcher.unhealthy", count=watcher.handler_failures)
                watcher.restart()
        for candidate in watcher.queue.drain():
            if candidate.agreement not in self.paused:
                intake.offer(candidate)
        before = len(intake.watching)
        next_look = intake.poll()
        if len(intake.watching) < before:
            self._wake_lanes()  # something was taken (or went): lanes look at the ledger
        if self._record_runs():
            self._wake_lanes()
        self._quarantine_poisoned()
        if self._audit.is_set():
            self._audit.clear()
            self._sync_audit_log()
        wait = 0.5
        if next_look is not None:
            wait = min(wait, max(0.0, next_look - self.ctx.clock.monotonic()))
        item = watcher.queue.get(timeout=max(wait, 0.01))
        if item is not None and item.agreement not in self.paused:
            intake.offer(item)

    def _revalidate_outboxes(self) -> None:
        """TESTPLAN A2: an outbox (or a parent) swapped for a link or another directory
        pauses that agreement's intake, with an incident, until ops restart the daemon."""
        assert self.intake is not None
        for agreement_id, outbox in self.outboxes.items():
            if agreement_id in self.paused:
                continue
            try:
                outbox.revalidate()
            except OutboxMoved as error:
                self.paused.add(agreement_id)
                self.intake.pause(agreement_id)
                incident = self.ctx.ledger.open_incident(
                    reason=ReasonCode.SYMLINK,
                    now=self.ctx.now(),
                    agreement=agreement_id,
                    context={"error": error.message},
                    dedupe_key=f"outbox-moved:{agreement_id}",
                )
                _log.error(
                    "intake.paused",
                    agreement=agreement_id,
                    error=error.message,
                    hint=error.hint,
                    incident=incident.id,
                )

    def _collect_receipts(self) -> None:
        if self._receipts is None or self.ctx.stopping.is_set():
            return
        transport = self._factory()
        try:
            self._receipts(self.ctx, transport)
        except Exception as error:  # noqa: BLE001 - the service loop must outlive a collector bug
            _log.exception("receipts.failed", error=str(error))
        finally:
            transport.close()

    def _record_runs(self) -> bool:
        """Record the run each scheduled agreement owes (service.due rule 2)."""
        ledger, now, recorded = self.ctx.ledger, self.ctx.now(), False
        for agreement in self.config.agreements.values():
            last = ledger.last_run(agreement.id)
            due_at = due.run_to_record(agreement, None if last is None else last.due_at, now)
            if due_at is None:
                continue
            if ledger.add_run(agreement.id, due_at):
                crash_point("schedule.after_run_recorded")
                _log.info("schedule.run", agreement=agreement.id, next_run=due_at.isoformat())
            ledger.finish_run(agreement.id, due_at, now)
            recorded = True
        for run in ledger.runs_not_done():
            ledger.finish_run(run.agreement, run.due_at, now)
        return recorded

    def _quarantine_poisoned(self) -> None:
        """Move the spool copy of a poisoned delivery to quarantine, once nothing still
        waiting to be sent needs it."""
        ledger = self.ctx.ledger
        poisoned = ledger.deliveries(DeliveryState.POISONED)
        if not poisoned:
            return
        active_states = (
            DeliveryState.PENDING,
            DeliveryState.RETRY_WAIT,
            DeliveryState.UPLOADING,
            DeliveryState.PARKED,
        )
        for delivery in poisoned:
            version = ledger.get_version(delivery.version)
            if not Path(version.spool_path).exists():
                continue
            outbox = self.outboxes.get(delivery.agreement)
            if outbox is None:
                continue
            still_needed = any(
                ledger.get_version(other.version).spool_path == version.spool_path
                for other in ledger.deliveries(*active_states, agreement=delivery.agreement)
            )
            if still_needed:
                continue
            moved = outbox.quarantine_spool(
                Sha256(version.sha256.hex),
                ReasonCode.POISONED,
                f"delivery {delivery.id} failed every attempt; its spool copy is kept here",
                crash_point=crash_point,
            )
            if isinstance(moved, Quarantined):
                record_quarantined(self.ctx, moved)


def run_daemon(daemon: Daemon) -> int:
    """Run with signal handlers (the ``exchange run`` entry point)."""
    daemon.install_signal_handlers()
    return daemon.run()
