"""The bench's world: a real sshd hub with five partners, a workspace, dataset files, timing.

Rules:

1. Everything is real: ``exchange run`` is a subprocess, the hub is stock sshd provisioned by
   ``exchange.hubconfig`` (the test harness in ``tests/support``), deliveries are observed on
   the hub's disk, the way a partner would see them.
2. Dataset files are CSVs with the agreement's columns and real bytes (no sparse files). Each
   file has a unique first row, so the daemon never takes one as a duplicate of another.
3. Big files live under ``bench/out/pipeline`` (git-ignored) and are deleted at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from exchange import agefmt, ops, signing
from exchange import keys as keys_mod
from tests.support.sshd import ORGANISATION, running_hub
from tests.support.workspace import (
    CSV_FIELDS,
    REPO,
    DaemonProcess,
    Workspace,
    make_workspace,
)

PARTNERS = ("southend-uhft", "essex-police", "barnardos", "thurrock-council", "southend-bc")
NAMES = {
    "southend-uhft": ("Southend University Hospital NHS Foundation Trust", "Z1972899"),
    "essex-police": ("Essex Police", "Z4883472"),
    "barnardos": ("Barnardo's", "Z5951768"),
    "thurrock-council": ("Thurrock Council", "Z5674322"),
    "southend-bc": ("Southend-on-Sea City Council", "Z6718930"),
}
MIB = 1 << 20


@contextmanager
def bench_world(work: Path) -> Iterator[Workspace]:
    """A running hub with :data:`PARTNERS` and a workspace whose partners have age identities."""
    client = work / "client"
    client.mkdir(parents=True)
    with running_hub(client, partners=PARTNERS) as hub:
        ws = make_workspace(work / "ws", hub, partners=())
        ids = work / "ws" / "partner-identities"
        for partner in PARTNERS:
            ssh_line = " ".join(hub.login(partner)[1].split()[:2])
            ws.identities[partner] = write_partner(ws.config_dir, partner, ids, ssh_line)
        yield ws


def offline_workspace(folder: Path, partners: Sequence[str]) -> Path:
    """A workspace with no hub (for ledger-only benchmarks); returns its config folder. Each
    partner gets its own generated keys (the config refuses keys shared between partners)."""
    ops.init_workspace(
        folder,
        org_id=ORGANISATION,
        org_name="Essex County Council",
        ico="Z2120726",
        hub_host="127.0.0.1",
        hub_port=9,
        template=(REPO / "exchange" / "data" / "exchange.toml.template").read_text("utf-8"),
        keys_readme="bench keys\n",
    )
    keys_mod.generate(folder / "keys", ORGANISATION, now=datetime.now(UTC))
    ids = folder / "partner-identities"
    ids.mkdir(mode=0o700)
    for partner in partners:
        _, public_line = signing.generate_ssh_keypair(f"{partner}@bench")
        write_partner(folder / "config", partner, ids, " ".join(public_line.split()[:2]))
    return folder / "config"


def write_partner(config_dir: Path, partner: str, ids: Path, ssh_line: str) -> Path:
    identity = agefmt.generate_x25519_identity()
    id_file = ids / f"{partner}.txt"
    id_file.write_text(identity.to_string() + "\n", "utf-8")
    id_file.chmod(0o600)
    public = signing.generate_signing_key().public_key
    name, ico = NAMES[partner]
    (config_dir / "partners" / f"{partner}.toml").write_text(
        f"name = {json.dumps(name)}\n"
        f'ico_registration = "{ico}"\n'
        f'contact = "data@{partner}.example"\n'
        f'hub_folder = "{partner}"\n\n[keys]\n'
        f'age_recipient = "{identity.recipient().to_string()}"\n'
        f'signing_key = "{public.text}"\n'
        f'signing_key_fingerprint = "{public.fingerprint}"\n'
        f'ssh_public_key = "{ssh_line}"\n',
        "utf-8",
    )
    return id_file


def add_agreement(ws: Workspace, agreement: str, recipients: Sequence[str]) -> None:
    """An immediate agreement whose size cap admits the bench's biggest dataset."""
    ws.agreement(agreement, recipients)
    path = ws.config_dir / "agreements" / f"{agreement}.toml"
    text = path.read_text("utf-8").replace('max_size = "1 MiB"', 'max_size = "16 GiB"')
    path.write_text(text, "utf-8")


def recipient_of(ws: Workspace) -> str:
    text = (ws.config_dir / "partners" / f"{PARTNERS[0]}.toml").read_text("utf-8")
    return text.split('age_recipient = "', 1)[1].split('"', 1)[0]


def write_csv(path: Path, size: int) -> Path:
    """A CSV of about ``size`` bytes (real blocks, not sparse) with a unique first row."""
    header = (",".join(CSV_FIELDS) + "\n").encode("ascii")
    unique = f"R-{secrets.token_hex(8)},2026-05-01,S0000,10-15,neglect\n".encode("ascii")
    rows = []
    for i in range(MIB // 48):
        # Random reference numbers, so no two blocks compress alike on the wire.
        rows.append(f"R-{secrets.token_hex(6)},2026-05-{1 + i % 28:02d},S{i:05d},10-15,neglect\n")
    block = "".join(rows).encode("ascii")
    with path.open("wb") as out:
        out.write(header + unique)
        written = len(header) + len(unique)
        while written < size:
            piece = block[: size - written] if size - written < len(block) else block
            # Whole rows only: cut a short last block at a line end.
            if piece is not block:
                piece = piece[: piece.rfind(b"\n") + 1] or block[:48]
            out.write(piece)
            written += len(piece)
    return path


@dataclass(frozen=True, slots=True)
class Arrival:
    seconds: float
    names: tuple[str, ...]


def finals(ws: Workspace, partner: str) -> list[str]:
    inbox = ws.hub.partner_dir(partner) / "inbox"
    return [n for n in os.listdir(inbox) if not n.startswith(".")]


def wait_delivered(
    ws: Workspace,
    daemon: DaemonProcess,
    partners: Sequence[str],
    before: dict[str, int],
    started: float,
    timeout: float,
) -> Arrival:
    """Poll the hub inboxes (every 5 ms) until each partner holds one more payload and one more
    manifest than ``before``; the time is taken when the last one lands."""
    deadline = started + timeout
    while True:
        now = time.perf_counter()
        counts = {p: len(finals(ws, p)) for p in partners}
        if all(counts[p] >= before[p] + 2 for p in partners):
            return Arrival(now - started, tuple(n for p in partners for n in finals(ws, p)))
        if now > deadline:
            raise RuntimeError(f"delivery not seen in {timeout:.0f}s: {daemon.tail(15)}")
        if daemon.process.poll() is not None:
            raise RuntimeError(f"daemon exited: {daemon.tail(15)}")
        time.sleep(0.005)


def clear_inboxes(ws: Workspace, partners: Sequence[str]) -> None:
    """Remove delivered files from the hub (as root) to keep the disk free between cases."""
    for partner in partners:
        inbox = ws.hub.partner_dir(partner) / "inbox"
        for name in os.listdir(inbox):
            (inbox / name).unlink()


def peak_rss_mib(pid: int) -> float:
    """VmHWM of a live process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def organisation() -> str:
    return ORGANISATION
