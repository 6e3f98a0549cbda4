"""TESTPLAN D34: the local disk fills up under the real daemon, during the spool copy (the
plaintext's one local copy; the ciphertext is streamed to the hub, never written locally),
during ledger commits, and during a quarantine move.

The daemon's outbox, spool, quarantine and state folders are put on a small tmpfs (root
only; unmounted in ``finally``); its log, keys and config stay on the normal disk, so the test
rig itself does not fail. The disk is filled with a filler file after the daemon is ready and
the dataset is renamed into the outbox from a staging folder on the same tmpfs, which needs no
free space. Expected: the daemon keeps running, leaves no temporary file, keeps the source
(nothing lost), and once the filler is removed the dataset is delivered exactly once (or,
for a refused file, quarantined with its reason and one incident).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange.core.delivery import DeliveryState
from tests.faults.invariants import assert_restart_invariants
from tests.support.sshd import Hub
from tests.support.workspace import Workspace, csv_bytes, make_workspace

pytestmark = pytest.mark.integration

PARTNER = "southend-uhft"
FOLDERS = ("outbox", "spool", "quarantine", "state")


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A size-limited tmpfs mounted at ``path`` for the duration of the block."""
    path.mkdir(parents=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True
    )
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)


def fill(folder: Path, leave: int = 0) -> Path:
    """Write a filler file in ``folder`` until the file system is full (or ``leave`` bytes
    remain free); returns it. Removing it frees the space."""
    filler = folder / "filler"
    block = b"\0" * 65536
    with filler.open("wb") as out:
        while True:
            free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
            want = min(len(block), free - leave)
            if want <= 0:
                break
            try:
                out.write(block[:want])
                out.flush()
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                break
    return filler


@pytest.fixture(name="disk")
def fixture_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs for the daemon's data folders."""
    with tmpfs(tmp_path / "disk", "8m") as disk:
        yield disk


@pytest.fixture(name="ws")
def fixture_ws(tmp_path: Path, hub: Hub, disk: Path) -> Workspace:
    """A workspace whose data folders live on the tmpfs; agreement 'mash' to southend-uhft."""
    ws = make_workspace(tmp_path / "ws", hub)
    main = ws.config_dir / "exchange.toml"
    text = main.read_text("utf-8")
    for folder in FOLDERS:
        (disk / folder).mkdir(mode=0o700)
        text = text.replace(f'{folder} = "{folder}"', f'{folder} = "{disk / folder}"', 1)
    main.write_text(text, "utf-8")
    ws.agreement("mash", [PARTNER])
    (disk / "outbox" / "mash").mkdir(exist_ok=True)
    # The test reads the ledger at <root>/state (Workspace.ledger); point that at the tmpfs.
    shutil.rmtree(ws.root / "state", ignore_errors=True)
    (ws.root / "state").symlink_to(disk / "state")
    (disk / "staging").mkdir()
    return ws


def _stage(disk: Path, name: str, data: bytes) -> Path:
    path = disk / "staging" / name
    path.write_bytes(data)
    return path


def _temporaries(disk: Path) -> list[str]:
    return sorted(
        str(p.relative_to(disk))
        for p in disk.rglob("*")
        if p.name.startswith(".") or p.name.endswith((".tmp", ".part"))
    )


@pytest.mark.parametrize(
    "leave",
    [
        pytest.param(0, id="full"),
        # The spool copy fits, the ledger commit does not; the retry of the spool write then
        # fails too, and the daemon waits its fixed 60 s before retrying an I/O deferral.
        pytest.param(96 * 1024, id="spool-fits", marks=pytest.mark.slow),
    ],
)
def test_dataset_waits_while_the_disk_is_full_and_goes_once_when_space_returns(
    ws: Workspace, disk: Path, leave: int
) -> None:
    """With the disk full, or with only room for the spool copy (so a ledger commit or a
    later write hits the limit), the daemon stays up, the source stays in the outbox or in the
    spool, and no temporary is left; after space returns it is delivered exactly once."""
    data = csv_bytes(1500, f"full{leave}")  # about 90 KiB
    staged = _stage(disk, "referrals.csv", data)
    daemon = ws.start()
    try:
        daemon.wait_event("daemon.ready")
        filler = fill(disk, leave)
        staged.rename(disk / "outbox" / "mash" / "referrals.csv")
        time.sleep(2.5)  # several settle, intake and delivery cycles against the full disk
        assert daemon.process.poll() is None, daemon.tail()
        filler.unlink()
        daemon.wait_for(lambda: len(ws.manifests(PARTNER)) == 1, 60, "delivery after space")
        daemon.wait_for(lambda: _sent(ws), 30, "ledger shows sent")
        assert [] == _temporaries(disk)
        assert [] == os.listdir(disk / "outbox" / "mash")
    finally:
        assert 0 == daemon.terminate()
    assert_restart_invariants(ws, [PARTNER], f"leave={leave}")
    events = daemon.events()
    deferred = [e for e in events if e["event"] == "intake.deferred"]
    assert deferred and all("No space left" in e["detail"] for e in deferred)
    with ws.ledger() as ledger:
        details = [str(i.context) for i in ledger.incidents(open_only=False)]
    if leave == 0:
        # SQLITE_FULL is handled by the main loop (logged, retried); with the ledger itself
        # full, no incident can be recorded, and none is invented later.
        assert any(
            "disk full while writing the ledger" in str(e.get("error"))
            for e in events
            if e["event"] == "daemon.loop_failed"
        )
    else:
        # The deferral is an incident once the ledger has room for it.
        assert any("No space left" in d for d in details), details
    (payload,) = [n for n in ws.finals(PARTNER) if not n.endswith(".manifest.age")]
    assert data == ws.decrypt(PARTNER, payload)


def test_refused_file_on_a_full_disk_is_quarantined_once_space_returns(
    ws: Workspace, disk: Path
) -> None:
    """A file with a column outside the agreement arrives while the disk is full: the daemon
    stays up; once space returns the file is in quarantine with reason schema-mismatch and
    there is exactly one incident for it."""
    bad = csv_bytes(5, "dob").replace(b"age_band", b"DOB")
    staged = _stage(disk, "wide.csv", bad)
    daemon = ws.start()
    try:
        daemon.wait_event("daemon.ready")
        filler = fill(disk)
        staged.rename(disk / "outbox" / "mash" / "wide.csv")
        time.sleep(2.5)
        assert daemon.process.poll() is None, daemon.tail()
        filler.unlink()
        daemon.wait_event("intake.refused", timeout=60)
        daemon.wait_for(lambda: _quarantined(ws) == 1, 30, "quarantine record")
        time.sleep(2)  # later cycles must not add a second record
    finally:
        assert 0 == daemon.terminate()
    assert [] == os.listdir(disk / "outbox" / "mash")
    with ws.ledger() as ledger:
        (record,) = ledger.quarantined("mash")
        assert "schema-mismatch" == record.reason.value
        assert 1 == len([i for i in ledger.incidents() if i.reason.value == "schema-mismatch"])
    assert [] == ws.finals(PARTNER)


def _sent(ws: Workspace) -> bool:
    with ws.ledger() as ledger:
        return [DeliveryState.SENT] == [d.state for d in ledger.deliveries()]


def _quarantined(ws: Workspace) -> int:
    with ws.ledger() as ledger:
        return len(ledger.quarantined("mash"))
