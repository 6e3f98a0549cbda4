"""``exchange demo``: the whole loop on one machine, narrated and checked step by step.

Three organisations (Essex County Council, which runs the hub, and two partners) get their
own workspaces with fresh keys and each other's key cards. Essex County Council's hub is
started with ``exchange hub run`` on a loopback port, its daemon (``exchange run``) takes a
sample dataset of invented referrals from an outbox and delivers it to both partners, each
partner runs ``exchange pull``, and the daemon verifies the receipts that come back. A second
file with a column the agreement does not allow is refused and quarantined with its reason.
Finally ``exchange correct`` sends a revised version that both partners replace in place.

Rules:

1. Every step checks its own result and says where to look; a failed step is reported and
   the demo goes on where it can, ending with exit 1.
2. The real commands do the work, as separate processes (``exchange hub run``, ``exchange
   run``, ``exchange pull``); the demo only sets up, watches the ledgers and checks.
3. Nothing is left behind unless ``--keep``: processes are stopped, and the workspaces and
   the hub folder removed. The hub's Unix logins stay (like ``exchange hub provision``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TextIO

from exchange import hubconfig
from exchange import keys as keys_mod
from exchange.commands.hub import spec_from_config
from exchange.core.delivery import DeliveryState
from exchange.demo.workspaces import ESSEX_CC, ESSEX_POLICE, SOUTHEND, Workspace, create_workspace
from exchange.errors import ExchangeError, PrerequisiteError
from exchange.hubconfig import HubLayout
from exchange.ledger import LEDGER_FILENAME, Ledger
from exchange.transport import SftpSettings, SftpTransport

AGREEMENT = "mash-referrals"
FIELDS = (
    "referral_id",
    "received_date",
    "subject_ref",
    "age_band",
    "concern_category",
    "risk_level",
    "lead_agency",
)
#: Invented referrals: no real person, no real reference.
SAMPLE = (
    ",".join(FIELDS) + "\n"
    "R-26-0101,2026-11-23,S-4410,11-15,neglect,medium,essex-cc\n"
    "R-26-0102,2026-11-23,S-5172,0-4,domestic abuse,high,essex-police\n"
    "R-26-0103,2026-11-24,S-6093,5-10,emotional harm,low,southend-uhft\n"
).encode("ascii")
SAMPLE_NAME = "mash-referrals-2026-11-24.csv"
#: The same with a column the agreement does not allow (Caldicott: minimum necessary).
REFUSED = (
    ",".join(FIELDS)
    + ",nhs_number\n"
    + "R-26-0104,2026-11-24,S-7001,11-15,neglect,low,essex-cc,0000000000\n"
).encode("ascii")
REFUSED_NAME = "mash-referrals-with-nhs-numbers.csv"
#: The revised dataset after an (invented) accuracy complaint: R-26-0102's age band was wrong.
CORRECTED = SAMPLE.replace(
    b"R-26-0102,2026-11-23,S-5172,0-4,", b"R-26-0102,2026-11-23,S-5172,5-10,"
)
COMPLAINT = "AC-2026-0042"
HUB_BASE = Path("/var/lib/exchange-demo")
TIMEOUT = 60.0


class StepFailed(Exception):
    """A demo step's own check failed; the message says what was expected."""


@dataclass
class Demo:
    """State shared by the steps."""

    base: Path
    hub_root: Path
    out: TextIO
    port: int = 0
    orgs: dict[str, Workspace] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    delivered: dict[str, str] = field(default_factory=dict)  # partner -> delivery id

    @property
    def cc(self) -> Workspace:
        return self.orgs[ESSEX_CC.id]

    @property
    def partners(self) -> list[Workspace]:
        return [self.orgs[SOUTHEND.id], self.orgs[ESSEX_POLICE.id]]

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def exchange(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "exchange", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=_env(),
        )

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.base / "logs" / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "exchange", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
        log.close()
        self.processes[name] = process
        return process

    def stop(self, name: str) -> int | None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait(timeout=10)

    def ledger(self, workspace: Workspace) -> Ledger:
        return Ledger.open(workspace.folder / "state" / LEDGER_FILENAME)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
    env["EXCHANGE_LOG_LEVEL"] = "warning"
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise StepFailed(f"timed out after {timeout:g}s waiting for {what}")


# --- the steps --------------------------------------------------------------------------------


def step_workspaces(demo: Demo) -> None:
    now = datetime.now(UTC)
    for org in (ESSEX_CC, SOUTHEND, ESSEX_POLICE):
        demo.orgs[org.id] = create_workspace(demo.base / org.id, org, now=now)
    for partner in demo.partners:
        demo.cc.add_partner(partner)
        partner.add_partner(demo.cc)
        partner.add_agreement(AGREEMENT, (ESSEX_CC.id,), allowed_fields=FIELDS)
    demo.cc.add_agreement(AGREEMENT, tuple(p.org.id for p in demo.partners), allowed_fields=FIELDS)
    for workspace in demo.orgs.values():
        cfg = workspace.config()
        demo.say(
            f"      {cfg.organisation.name}: {workspace.folder} "
            f"(signing key {workspace.card().signing_key_fingerprint})"
        )
    demo.say(f"      look: {demo.cc.config_dir / 'agreements' / (AGREEMENT + '.toml')}")


def step_hub(demo: Demo) -> None:
    cfg = demo.cc.config()
    demo.port = _free_port()
    spec = spec_from_config(cfg, demo.hub_root, date.today(), ("127.0.0.1", demo.port))
    hubconfig.apply_hub(spec)
    host_keys = [line for _fp, line in hubconfig.host_key_fingerprints(spec)]
    for workspace in demo.orgs.values():
        workspace.pin_hub("127.0.0.1", demo.port, workspace.org.id, host_keys)
    demo.start(
        "hub",
        "hub",
        "run",
        "--root",
        str(demo.hub_root),
        "--listen",
        f"127.0.0.1:{demo.port}",
        "--config",
        str(demo.cc.config_dir),
    )

    def banner() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", demo.port), timeout=1) as sock:
                return sock.recv(8).startswith(b"SSH-2.0")
        except OSError:
            return False

    _wait(banner, 20, "the hub's sshd to answer")
    for workspace in demo.orgs.values():
        paths = keys_mod.KeyPaths(workspace.folder / "keys")
        transport = SftpTransport(
            SftpSettings("127.0.0.1", demo.port, workspace.org.id, paths.ssh_key, tuple(host_keys))
        )
        try:
            transport.list("." if workspace is demo.cc else "inbox")
        finally:
            transport.close()
    demo.say(f"      sshd on 127.0.0.1:{demo.port}, host key pinned by all three")
    demo.say(f"      look: {HubLayout(demo.hub_root).data} (one folder per partner)")


def _start_daemon(demo: Demo) -> None:
    """``exchange run`` at Essex County Council, paced for a demo: its hub job (receipts,
    partners' datasets, overdue receipts) every second instead of every 5 minutes."""
    demo.start("daemon", "run", "--config", str(demo.cc.config_dir), "--settle", "0.5",
               "--tick", "0.5", "--rescan", "2", "--collect", "1")  # fmt: skip


def _wait_acknowledged(demo: Demo, deliveries: list[str]) -> dict[str, DeliveryState]:
    """Wait for the daemon's collector to verify the receipts of ``deliveries``."""

    def states() -> dict[str, DeliveryState]:
        with demo.ledger(demo.cc) as ledger:
            return {d: ledger.get_delivery(d).state for d in deliveries}

    with contextlib.suppress(StepFailed):
        _wait(lambda: set(states().values()) == {DeliveryState.ACKNOWLEDGED}, TIMEOUT, "")
    return states()


def step_daemon_delivers(demo: Demo) -> None:
    _start_daemon(demo)
    outbox = demo.cc.folder / "outbox" / AGREEMENT
    (outbox / SAMPLE_NAME).write_bytes(SAMPLE)
    (outbox / REFUSED_NAME).write_bytes(REFUSED)

    def sent() -> bool:
        with demo.ledger(demo.cc) as ledger:
            done = ledger.deliveries(DeliveryState.SENT, DeliveryState.ACKNOWLEDGED)
        demo.delivered = {d.recipient: d.id for d in done}
        return len(demo.delivered) == len(demo.partners)

    _wait(lambda: (demo.cc.folder / "state" / LEDGER_FILENAME).exists() and sent(),
          TIMEOUT, "both deliveries to be sent")  # fmt: skip
    for partner in demo.partners:
        inbox = demo.hub_root / "data" / partner.org.id / "inbox"
        names = sorted(p.name for p in inbox.iterdir())
        if len(names) != 2:
            raise StepFailed(f"{inbox}: expected a payload and a manifest, found {names}")
        demo.say(f"      {partner.org.id}: delivery {demo.delivered[partner.org.id]} -> {inbox}")
    demo.say(f"      look: {demo.base / 'logs' / 'daemon.log'}")


def step_refused(demo: Demo) -> None:
    def quarantined() -> bool:
        with demo.ledger(demo.cc) as ledger:
            return bool(ledger.quarantined(AGREEMENT))

    _wait(quarantined, TIMEOUT, "the refused file to be quarantined")
    with demo.ledger(demo.cc) as ledger:
        (record,) = ledger.quarantined(AGREEMENT)
    if record.original_name != REFUSED_NAME.encode():
        raise StepFailed(f"the wrong file was quarantined: {record.original_name!r}")
    path = Path(record.path)
    if not path.is_absolute():
        path = demo.cc.folder / path
    if not path.exists():
        raise StepFailed(f"{path}: the quarantined copy is missing")
    demo.say(f"      {REFUSED_NAME}: {record.reason.value}: {record.detail}")
    demo.say(f"      look: {path.parent}")


def step_pull(demo: Demo) -> None:
    for partner in demo.partners:
        result = demo.exchange("pull", "--json", "--config", str(partner.config_dir))
        if result.returncode != 0:
            raise StepFailed(
                f"exchange pull at {partner.org.id} exited {result.returncode}: "
                f"{result.stderr.strip()[-400:]}"
            )
        outcomes = json.loads(result.stdout)["pull"]["outcomes"]
        filed = [o for o in outcomes if o["result"] == "filed"]
        if len(filed) != 1 or not filed[0]["receipt_sent"]:
            raise StepFailed(f"{partner.org.id}: expected one filed delivery, got {outcomes}")
        path = Path(filed[0]["path"])
        if path.read_bytes() != SAMPLE:
            raise StepFailed(f"{path}: the filed bytes differ from the dataset sent")
        demo.say(f"      {partner.org.id}: filed {path} (identical bytes), signed receipt sent")


def step_receipts(demo: Demo) -> None:
    states = _wait_acknowledged(demo, list(demo.delivered.values()))
    code = demo.stop("daemon")
    if code not in (0, None):
        raise StepFailed(f"the daemon exited {code} when stopped")
    if set(states.values()) != {DeliveryState.ACKNOWLEDGED}:
        raise StepFailed(f"deliveries not acknowledged by the daemon: {states}")
    with demo.ledger(demo.cc) as ledger:
        incidents = ledger.incidents()
    # The one incident expected is the refused file's (step 4).
    reasons = [i.reason.value for i in incidents]
    if reasons != ["schema-mismatch"]:
        raise StepFailed(f"expected only the refused file's incident, found {reasons}")
    for partner in demo.partners:
        left = list((demo.hub_root / "data" / partner.org.id).rglob("*.age"))
        if left:
            raise StepFailed(f"files left on the hub for {partner.org.id}: {left}")
        demo.say(
            f"      {partner.org.id}: receipt verified by the daemon, delivery acknowledged, "
            "hub cleaned"
        )
    status = demo.exchange("status", "--config", str(demo.cc.config_dir))
    for line in status.stdout.splitlines():
        demo.say(f"      | {line}")
    shown = demo.exchange("status", "--json", "--config", str(demo.cc.config_dir))
    counts = {p["id"]: p["states"] for p in json.loads(shown.stdout)["partners"]}
    expected = {p.org.id: {"acknowledged": 1} for p in demo.partners}
    if counts != expected:
        raise StepFailed(f"exchange status shows {counts}, expected {expected}")


def step_correction(demo: Demo) -> None:
    with demo.ledger(demo.cc) as ledger:
        first = ledger.get_delivery(demo.delivered[SOUTHEND.id])
    dataset = first.dataset.value
    revised = demo.base / "mash-referrals-2026-11-24-corrected.csv"
    revised.write_bytes(CORRECTED)
    _start_daemon(demo)
    made = demo.exchange(
        "correct", dataset, str(revised), "--complaint", COMPLAINT, "--json",
        "--reason", "R-26-0102: the age band was recorded as 0-4; the child is 7",
        "--config", str(demo.cc.config_dir),
    )  # fmt: skip
    if made.returncode != 0:
        raise StepFailed(f"exchange correct exited {made.returncode}: {made.stderr.strip()}")
    recipients = sorted(json.loads(made.stdout)["recipients"])
    if recipients != sorted(p.org.id for p in demo.partners):
        raise StepFailed(f"the correction went to {recipients}, not to both holders")
    demo.say(f"      {dataset} version 2 supersedes version 1 (complaint {COMPLAINT})")

    def sent() -> bool:
        with demo.ledger(demo.cc) as ledger:
            return len(ledger.deliveries(DeliveryState.SENT)) == len(demo.partners)

    _wait(sent, TIMEOUT, "both corrections to be sent")
    for partner in demo.partners:
        result = demo.exchange("pull", "--json", "--config", str(partner.config_dir))
        outcomes = json.loads(result.stdout)["pull"]["outcomes"] if result.stdout else []
        filed = [o for o in outcomes if o["result"] == "filed"]
        if result.returncode != 0 or len(filed) != 1:
            raise StepFailed(f"exchange pull at {partner.org.id}: {result.returncode} {outcomes}")
        path = Path(filed[0]["path"])
        with demo.ledger(partner) as ledger:
            rows = ledger.received(ESSEX_CC.id)
        if path.read_bytes() != CORRECTED or rows[-1].status != "replaced":
            raise StepFailed(f"{path}: not replaced in place ({rows[-1].status})")
        old = [p for p in path.parent.rglob("*") if p.is_file() and p.read_bytes() == SAMPLE]
        demo.say(f"      {partner.org.id}: {path} now holds the revised data (receipt: replaced)")
        if old:
            demo.say(f"      {partner.org.id}: the old version was moved aside to {old[0]}")
    with demo.ledger(demo.cc) as ledger:
        corrections = [d.id for d in ledger.deliveries() if d.id not in demo.delivered.values()]
    states = _wait_acknowledged(demo, corrections)
    demo.stop("daemon")
    if set(states.values()) != {DeliveryState.ACKNOWLEDGED}:
        raise StepFailed(f"replaced receipts not all verified by the daemon: {states}")
    listing = demo.exchange("corrections", "--all", "--config", str(demo.cc.config_dir))
    for line in listing.stdout.splitlines():
        demo.say(f"      | {line}")
    if listing.returncode != 0 or ": complete;" not in listing.stdout:
        raise StepFailed(f"exchange corrections does not show it complete: {listing.stdout}")


STEPS: tuple[tuple[str, Callable[[Demo], None]], ...] = (
    ("three workspaces with keys, partners and the MASH agreement", step_workspaces),
    ("Essex County Council's hub on a loopback port (exchange hub run)", step_hub),
    ("a dataset in the outbox is delivered to both partners (exchange run)", step_daemon_delivers),
    ("a file with a column the agreement does not allow is quarantined", step_refused),
    ("each partner pulls, verifies, decrypts, files and acknowledges (exchange pull)", step_pull),
    ("the daemon verifies the receipts and marks the deliveries acknowledged", step_receipts),
    ("a correction replaces the data at both partners (exchange correct)", step_correction),
)


@contextlib.contextmanager
def _folders(keep: bool) -> Iterator[tuple[Path, Path]]:
    base = Path(tempfile.mkdtemp(prefix="exchange-demo-"))
    HUB_BASE.mkdir(mode=0o755, parents=True, exist_ok=True)
    HUB_BASE.chmod(0o755)  # sshd refuses a chroot below a folder others may write
    hub_root = Path(tempfile.mkdtemp(prefix="hub-", dir=HUB_BASE))
    hub_root.chmod(0o755)
    (base / "logs").mkdir()
    try:
        yield base, hub_root
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
            shutil.rmtree(hub_root, ignore_errors=True)


def run_demo(*, keep: bool = False, out: TextIO | None = None) -> int:
    """Run every step; return 0 if all passed, 1 otherwise."""
    hubconfig.require_root()
    hubconfig.require_sshd()
    check_prerequisites()
    stream = out if out is not None else sys.stdout
    with _folders(keep) as (base, hub_root):
        demo = Demo(base, hub_root, stream)
        demo.say(f"exchange demo: workspaces in {base}, hub in {hub_root}")
        try:
            for number, (title, step) in enumerate(STEPS, start=1):
                demo.say(f"[{number}/{len(STEPS)}] {title}")
                try:
                    step(demo)
                except (StepFailed, ExchangeError, OSError, subprocess.SubprocessError) as error:
                    demo.failures.append(title)
                    demo.say(f"      FAILED: {error}")
                    if number <= 3:
                        break  # later steps need this one
                else:
                    demo.say("      ok")
        finally:
            for name in list(demo.processes):
                demo.stop(name)
        if keep:
            demo.say(f"kept: workspaces in {base}, hub folder in {hub_root}")
            demo.say("      (the hub's sshd is stopped; 'exchange hub run' starts it again)")
        if demo.failures:
            demo.say(f"demo FAILED: {len(demo.failures)} step(s): {'; '.join(demo.failures)}")
            demo.say(f"      logs: {base / 'logs'}" + ("" if keep else " (removed; use --keep)"))
            return 1
        demo.say(f"demo passed: all {len(STEPS)} steps verified")
        return 0


def check_prerequisites() -> None:
    """Refuse early, with the reason, when the demo cannot run here."""
    if shutil.which("ssh-keygen") is None:
        raise PrerequisiteError("ssh-keygen is missing", hint="install the openssh-client package")
