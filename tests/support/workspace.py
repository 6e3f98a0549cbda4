"""Test workspaces wired to a harness hub, and the daemon run as a real subprocess.

A :class:`Workspace` is made by the real ``exchange init`` and ``keys.generate``; its hub
section points at a running :class:`~tests.support.sshd.Hub` with the hub's host key pinned,
the daemon login's key is the harness's ``essex-cc`` key, and each harness partner has a
partner file whose age recipient and signing key were generated here, so the test can decrypt
what the daemon delivered with stock ``age -d -i``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from exchange import agefmt, ops, signing
from exchange import keys as keys_mod
from exchange.config import load_config
from exchange.ledger import Ledger
from tests.support.sshd import ORGANISATION, PARTNERS, Hub

REPO = Path(__file__).resolve().parents[2]
CSV_FIELDS = ("referral_id", "received_date", "subject_ref", "age_band", "concern_category")

#: Fast pacing for tests: short settle time, frequent cycles, quick retries and probes.
FAST = (
    "--settle", "0.3", "--tick", "0.5", "--rescan", "2", "--retry-base", "1",
    "--retry-cap", "2", "--park-probe", "1", "--grace", "5",
)  # fmt: skip

_PARTNER_NAMES = {
    "southend-uhft": ("Southend University Hospital NHS Foundation Trust", "Z1972899"),
    "essex-police": ("Essex Police", "Z4883472"),
    "barnardos": ("Barnardo's", "Z5951768"),
}


def csv_bytes(rows: int = 3, seed: str = "a") -> bytes:
    """A CSV that the test agreements accept, with invented, distinct content."""
    lines = [",".join(CSV_FIELDS)]
    lines += [f"R-{seed}-{i:05d},2026-05-0{1 + i % 9},S{i:04d},10-15,neglect" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode("ascii")


@dataclass
class Workspace:
    root: Path
    hub: Hub
    identities: dict[str, Path] = field(default_factory=dict)

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    def outbox(self, agreement: str) -> Path:
        return self.root / "outbox" / agreement

    def drop(self, agreement: str, name: str, data: bytes) -> Path:
        """Write a file into an outbox the way an analyst's tool should: temp, then rename."""
        folder = self.outbox(agreement)
        folder.mkdir(parents=True, exist_ok=True)
        temp = folder / f".{name}.tmp"
        temp.write_bytes(data)
        final = folder / name
        temp.rename(final)
        return final

    def agreement(
        self,
        agreement_id: str,
        recipients: Iterable[str],
        *,
        schedule: str = 'frequency = "immediate"',
        extra: str = "",
        fields: Iterable[str] | None = CSV_FIELDS,
    ) -> None:
        allowed = "" if fields is None else f"allowed_fields = {json.dumps(list(fields))}\n"
        text = (
            f'title = "Test agreement {agreement_id}"\n'
            'purpose = "Protect children at risk by sharing referrals with partners."\n'
            'legal_basis = ["Children Act 2004, s.11"]\n'
            'data_categories = ["referral details"]\n'
            'classification = "OFFICIAL-SENSITIVE"\n'
            f"recipients = {json.dumps(list(recipients))}\n"
            f'outbox = "{agreement_id}"\n'
            'formats = ["csv"]\n'
            f"{allowed}"
            'max_size = "1 MiB"\n'
            "commencement = 2026-01-01\nreview = 2027-12-31\nexpiry = 2028-03-31\n"
            'retention_days = 90\nacknowledgement_window = "1d"\n'
            f"{extra}"
            f'\n[schedule]\ntimezone = "Europe/London"\n{schedule}\n'
        )
        (self.config_dir / "agreements" / f"{agreement_id}.toml").write_text(text, "utf-8")
        self.outbox(agreement_id).mkdir(parents=True, exist_ok=True)

    # -- running ---------------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
        env.update(extra)
        return env

    def exchange(
        self, *args: str, timeout: float = 60, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "exchange", *args, "--config", str(self.config_dir)],
            cwd=self.root,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, *args: str, **env: str) -> DaemonProcess:
        log = self.root / f"daemon-{time.monotonic_ns()}.log"
        handle = log.open("wb")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exchange",
                "run",
                "--config",
                str(self.config_dir),
                *FAST,
                *args,
            ],
            cwd=self.root,
            env=self.env(**env),
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        handle.close()
        return DaemonProcess(process, log)

    def ledger(self) -> Ledger:
        return Ledger.open(self.root / "state" / "ledger.sqlite3")

    # -- the hub side --------------------------------------------------------------------------

    def inbox(self, partner: str) -> list[str]:
        """Names in the partner's hub inbox (as root sees the folder)."""
        return sorted(os.listdir(self.hub.partner_dir(partner) / "inbox"))

    def finals(self, partner: str) -> list[str]:
        return [n for n in self.inbox(partner) if not n.startswith(".")]

    def decrypt(self, partner: str, name: str) -> bytes:
        """Stock ``age -d -i`` with the partner's identity."""
        path = self.hub.partner_dir(partner) / "inbox" / name
        result = subprocess.run(
            ["age", "-d", "-i", str(self.identities[partner]), str(path)],
            capture_output=True,
            check=False,
            timeout=60,
        )
        if result.returncode != 0:
            raise AssertionError(f"age -d failed: {result.stderr.decode(errors='replace')}")
        return result.stdout

    def manifests(self, partner: str) -> list[str]:
        return [n for n in self.finals(partner) if n.endswith(".manifest.age")]


@dataclass
class DaemonProcess:
    process: subprocess.Popen[bytes]
    log: Path

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text("utf-8", errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found

    def names(self) -> list[str]:
        return [e.get("event", "") for e in self.events()]

    def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 30.0, what: str = ""
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited ({self.process.returncode}): {self.tail()}")
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what or predicate}: {self.tail()}")

    def wait_event(self, name: str, count: int = 1, timeout: float = 30.0) -> None:
        self.wait_for(lambda: self.names().count(name) >= count, timeout, name)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text("utf-8", errors="replace").splitlines()[-lines:])

    def terminate(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)

    def wait_dead(self, timeout: float = 60.0) -> int:
        return self.process.wait(timeout)


def make_workspace(
    folder: Path, hub: Hub, partners: Iterable[str] = PARTNERS, *, pin: bool = True
) -> Workspace:
    """A workspace for ``essex-cc`` pointed at ``hub`` (see the module docstring). No agreement
    is written: call :meth:`Workspace.agreement`."""
    ops.init_workspace(
        folder,
        org_id=ORGANISATION,
        org_name="Essex County Council",
        ico="Z2120726",
        hub_host=hub.host,
        hub_port=hub.port,
        template=(REPO / "exchange" / "data" / "exchange.toml.template").read_text("utf-8"),
        keys_readme="test keys\n",
    )
    main_file = folder / "config" / "exchange.toml"
    pins = json.dumps(hub.host_public_keys if pin else [])
    main_file.write_text(
        main_file.read_text("utf-8").replace("host_keys = []", f"host_keys = {pins}"), "utf-8"
    )
    keys_dir = folder / "keys"
    keys_mod.generate(keys_dir, ORGANISATION, now=datetime.now(UTC))
    private, public = hub.login(ORGANISATION)
    shutil.copyfile(private, keys_dir / keys_mod.SSH_KEY)
    (keys_dir / keys_mod.SSH_KEY).chmod(0o600)
    (keys_dir / f"{keys_mod.SSH_KEY}.pub").write_text(public + "\n", "utf-8")
    workspace = Workspace(folder.resolve(), hub)
    ids = folder / "partner-identities"
    ids.mkdir(mode=0o700)
    for partner in partners:
        workspace.identities[partner] = write_partner(workspace, partner, ids)
    return workspace


def write_partner(workspace: Workspace, partner: str, ids: Path) -> Path:
    identity = agefmt.generate_x25519_identity()
    id_file = ids / f"{partner}.txt"
    id_file.write_text(identity.to_string() + "\n", "utf-8")
    id_file.chmod(0o600)
    public = signing.generate_signing_key().public_key
    name, ico = _PARTNER_NAMES[partner]
    # A partner with no login on this hub still needs its own SSH key: the config refuses
    # a key shared by two organisations.
    ssh_line = (
        workspace.hub.login(partner)[1]
        if partner in workspace.hub.keys
        else signing.generate_ssh_keypair(f"{partner}@hub")[1]
    )
    text = (
        f"name = {json.dumps(name)}\n"
        f'ico_registration = "{ico}"\n'
        f'contact = "data@{partner}.example"\n'
        f'hub_folder = "{partner}"\n\n[keys]\n'
        f'age_recipient = "{identity.recipient().to_string()}"\n'
        f'signing_key = "{public.text}"\n'
        f'signing_key_fingerprint = "{public.fingerprint}"\n'
        f'ssh_public_key = "{" ".join(ssh_line.split()[:2])}"\n'
    )
    (workspace.config_dir / "partners" / f"{partner}.toml").write_text(text, "utf-8")
    return id_file


def check_config(workspace: Workspace) -> None:
    load_config(workspace.config_dir)


def make_offline_workspace(folder: Path, partners: Iterable[str] = PARTNERS) -> Workspace:
    """A workspace for in-process daemons over a fake transport: no hub, no pinned key."""

    @dataclass
    class _NoHub:
        host: str = "127.0.0.1"
        port: int = 9
        keys: dict[str, tuple[Path, str]] = field(default_factory=dict)

        def login(self, name: str) -> tuple[Path, str]:
            return self.keys[name]

    ops.init_workspace(
        folder,
        org_id=ORGANISATION,
        org_name="Essex County Council",
        ico="Z2120726",
        hub_host="127.0.0.1",
        hub_port=9,
        template=(REPO / "exchange" / "data" / "exchange.toml.template").read_text("utf-8"),
        keys_readme="test keys\n",
    )
    keys_mod.generate(folder / "keys", ORGANISATION, now=datetime.now(UTC))
    workspace = Workspace(folder.resolve(), _NoHub())  # type: ignore[arg-type]
    ids = folder / "partner-identities"
    ids.mkdir(mode=0o700)
    for partner in partners:
        # Each partner its own (unused) SSH key: the config refuses one key for two partners.
        ssh_line = signing.generate_ssh_keypair(f"{partner}@hub")[1]
        workspace.hub.keys[partner] = (Path("/nonexistent"), ssh_line)
        workspace.identities[partner] = write_partner(workspace, partner, ids)
    return workspace
