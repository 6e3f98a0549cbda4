"""The four pipeline measurements: latency, throughput (ours vs stock), peak RSS, status time.

Rules:

1. Ours is the real daemon (``exchange run`` subprocess) delivering to the real hub; a case's
   clock starts when the file is renamed into the outbox and stops when the last partner's
   payload and manifest have their final names on the hub. The configured stability time
   (``--settle``) is inside that figure and is reported next to it.
2. Stock is the scripted pipeline the issue names, per partner: ``age -r R -o tmp file`` then
   ``sftp -b`` ``put tmp inbox/name`` as the same hub login, with the cipher our client picks
   (aes128-gcm@openssh.com), then ``rm tmp``. It hashes nothing and signs nothing.
3. Files are deleted after use; the hub inboxes are emptied between cases.
"""

from __future__ import annotations

import os
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.pipeline import world
from exchange.core import delivery as lifecycle
from exchange.core.naming import DeliveryNames, delivery_id_from_hex
from exchange.ledger import Ledger
from exchange.model import DatasetId, Sha256
from tests.support.workspace import DaemonProcess, Workspace

CIPHER = "aes128-gcm@openssh.com"


@dataclass
class Latency:
    settle: float
    seconds: list[float]
    rss_mib: float = 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency(ws: Workspace, daemon: DaemonProcess, settle: float, count: int) -> Latency:
    """Drop ``count`` small files one after another; time each from rename to hub arrival."""
    partner = world.PARTNERS[0]
    result = Latency(settle, [])
    for i in range(count):
        before = {partner: len(world.finals(ws, partner))}
        source = world.write_csv(ws.root / f"small-{i}.csv", 4096)
        started = time.perf_counter()
        source.rename(ws.outbox("one") / f"referrals-{i:03d}.csv")
        arrival = world.wait_delivered(ws, daemon, [partner], before, started, 60)
        result.seconds.append(arrival.seconds)
    world.clear_inboxes(ws, [partner])
    result.rss_mib = world.peak_rss_mib(daemon.process.pid)
    return result


@dataclass
class Throughput:
    size: int
    partners: int
    ours: list[float] = field(default_factory=list)
    stock: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """Stock time / our time, best runs (above 1.0: we are faster)."""
        return min(self.stock) / min(self.ours)


def ours_once(
    ws: Workspace, daemon: DaemonProcess, agreement: str, partners: Sequence[str], size: int
) -> float:
    source = world.write_csv(ws.root / f"big-{secrets.token_hex(4)}.csv", size)
    os.sync()
    before = {p: len(world.finals(ws, p)) for p in partners}
    started = time.perf_counter()
    source.rename(ws.outbox(agreement) / f"extract-{secrets.token_hex(4)}.csv")
    timeout = 120 + 30 * len(partners) * size / (1 << 30)
    arrival = world.wait_delivered(ws, daemon, partners, before, started, timeout)
    world.clear_inboxes(ws, partners)
    return arrival.seconds


def stock_once(ws: Workspace, work: Path, partners: Sequence[str], size: int) -> float:
    source = world.write_csv(work / f"stock-{secrets.token_hex(4)}.csv", size)
    os.sync()
    recipient = world.recipient_of(ws)
    hub = ws.hub
    try:
        started = time.perf_counter()
        for partner in partners:
            temp = work / f"{partner}.age"
            subprocess.run(
                ["age", "-r", recipient, "-o", str(temp), str(source)], check=True, timeout=600
            )
            argv = ["sftp", "-b", "-", *hub.ssh_options(world.organisation())]
            argv += ["-o", f"Ciphers={CIPHER}", "-P", str(hub.port)]
            argv.append(f"{world.organisation()}@{hub.host}")
            done = subprocess.run(
                argv,
                input=f"put {temp} /{partner}/inbox/stock-{secrets.token_hex(4)}.age\n",
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"stock sftp failed: {done.stderr.strip()}")
            temp.unlink()
        elapsed = time.perf_counter() - started
    finally:
        source.unlink()
    world.clear_inboxes(ws, partners)
    return elapsed


@dataclass
class Rss:
    size: int
    rss_mib: float
    seconds: float


def rss_big(ws: Workspace, start: object, size: int) -> Rss:
    """A fresh daemon delivers one ``size`` dataset to one partner; its VmHWM afterwards."""
    daemon: DaemonProcess = start()  # type: ignore[operator]
    try:
        daemon.wait_event("daemon.ready", timeout=60)
        seconds = ours_once(ws, daemon, "one", world.PARTNERS[:1], size)
        rss = world.peak_rss_mib(daemon.process.pid)
    finally:
        daemon.terminate(120)
    return Rss(size, rss, seconds)


@dataclass
class StatusTime:
    deliveries: int
    build_seconds: float
    in_process: list[float]
    command: list[float]
    exit_code: int


def status_time(work: Path, deliveries: int, rounds: int) -> StatusTime:
    """A ledger with ``deliveries`` rows built by the ledger API (two recipients per dataset,
    all but one in a hundred acknowledged), then ``exchange status --json`` timed as a
    command (interpreter start-up included) and the status query alone in this process."""
    from exchange import config as config_mod
    from exchange.service import ledger_path, status

    config_dir = world.offline_workspace(work / "status-ws", ("southend-uhft", "essex-police"))
    _status_agreement(config_dir)
    cfg = config_mod.load_config(config_dir)
    cfg.folders.state.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = datetime(2026, 11, 1, tzinfo=UTC)
    started = time.perf_counter()
    with Ledger.open(ledger_path(cfg)) as ledger:
        for batch_start in range(0, deliveries // 2, 1000):
            with ledger.transaction():
                for i in range(batch_start, min(deliveries // 2, batch_start + 1000)):
                    _one_dataset(ledger, i, now - timedelta(minutes=deliveries - i))
    build = time.perf_counter() - started
    in_process = []
    with Ledger.open(ledger_path(cfg)) as ledger:
        for _ in range(rounds):
            t0 = time.perf_counter()
            status(cfg, ledger, datetime.now(UTC))
            in_process.append(time.perf_counter() - t0)
    command = []
    code = 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "exchange", "status", "--json", "--config", str(config_dir)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        command.append(time.perf_counter() - t0)
        code = done.returncode
        if done.returncode not in (0, 1):
            raise RuntimeError(f"exchange status failed: {done.stderr.strip()}")
    return StatusTime(deliveries, build, in_process, command, code)


def _status_agreement(config_dir: Path) -> None:
    (config_dir / "agreements" / "mash.toml").write_text(
        'title = "MASH referrals"\n'
        'purpose = "Protect children at risk by sharing referrals with partners."\n'
        'legal_basis = ["Children Act 2004, s.11"]\n'
        'data_categories = ["referral details"]\n'
        'classification = "OFFICIAL-SENSITIVE"\n'
        'recipients = ["southend-uhft", "essex-police"]\n'
        'outbox = "mash"\nformats = ["csv"]\nmax_size = "1 MiB"\n'
        "commencement = 2026-01-01\nreview = 2027-12-31\nexpiry = 2028-03-31\n"
        'retention_days = 90\nacknowledgement_window = "1d"\n'
        '\n[schedule]\ntimezone = "Europe/London"\nfrequency = "immediate"\n',
        "utf-8",
    )
    (config_dir.parent / "outbox" / "mash").mkdir(parents=True, exist_ok=True)


def _one_dataset(ledger: Ledger, i: int, when: datetime) -> None:
    sha = Sha256(secrets.token_hex(32))
    ids = [
        (delivery_id_from_hex(secrets.token_hex(16)), r) for r in ("southend-uhft", "essex-police")
    ]
    ledger.record_intake(
        dataset=DatasetId(f"ds-{secrets.token_hex(16)}"),
        agreement="mash",
        original_name=f"referrals-{i:06d}.csv".encode(),
        sha256=sha,
        size=4096,
        spool_path=f"/var/lib/exchange/spool/{i:06d}",
        recipients=ids,
        now=when,
    )
    if i % 100 == 99:
        return  # one in a hundred still pending
    for delivery_id, _ in ids:
        manifest_hash = secrets.token_hex(32)
        ledger.begin_upload(delivery_id, DeliveryNames.for_delivery(delivery_id).payload, when)
        ledger.apply(
            delivery_id,
            lifecycle.UploadCompleted(
                secrets.token_hex(32), 4200, timedelta(seconds=1), manifest_hash
            ),
            when,
        )
        ledger.record_receipt(
            delivery_id, lifecycle.ReceiptAccepted(manifest_hash, "accepted"), when
        )


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
