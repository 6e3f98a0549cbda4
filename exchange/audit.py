"""The tamper-evident audit log: every ledger event, also as a hash-chained line in a file.

Why a file as well as the ledger: the ledger is the working database, rewritten in place by
the daemon; the information-governance team needs a record it can copy to write-once storage
as it grows and check on its own, years later, without trusting the host. So the log is plain
JSON lines, append-only, each line chained to the one before.

Rules:

1. One JSON object per line, canonical (sorted keys, no spaces, ASCII): ``seq`` (its line
   number, from 1), ``at`` (the ledger's time of the event), ``kind``, ``key`` (which ledger
   record it mirrors, e.g. ``event:17``), ``data``, ``prev`` (the previous line's ``hash``, 64
   zeros on line 1) and ``hash``: SHA-256 of the line's canonical JSON without ``hash``.
2. :func:`verify` names the first line that breaks the chain: an edited line fails its own
   hash; a removed or reordered line fails ``seq`` and ``prev`` where it was. Truncating the
   tail leaves a valid shorter chain, so the head (line count and last hash) must be compared
   with a copy kept elsewhere: ``verify`` takes ``anchors`` (line, hash) for that.
3. :func:`sync` is the only writer: under an exclusive ``flock`` it verifies the file, then
   appends, in ledger time order, a line for every ledger record not yet in it, in one write,
   and fsyncs. It is idempotent (records are known by ``key``), so the daemon, a timer and the
   CLI may all call it. It refuses to append to a damaged log.
4. Data comes only from the ledger's public queries and holds ids, states, hashes, sizes,
   reason codes and the written reasons people gave; no file contents and no file names.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from exchange.errors import LedgerError
from exchange.ledger import Ledger

__all__ = [
    "AUDIT_FILE",
    "GENESIS",
    "AuditLogDamaged",
    "Entry",
    "Logged",
    "Mismatch",
    "Problem",
    "VerifyReport",
    "chain",
    "compare",
    "ledger_entries",
    "sync",
    "verify",
    "verify_lines",
]

AUDIT_FILE = "audit.jsonl"
GENESIS = "0" * 64


class AuditLogDamaged(LedgerError):
    """The audit log's chain is broken; nothing more is appended until ops look."""

    default_hint = (
        "compare the file with the copy on write-once storage and see docs/operations.md, "
        "'Audit'; do not edit or delete lines"
    )


@dataclass(frozen=True, slots=True)
class Entry:
    """A ledger record to be logged: what, when, and which record it mirrors."""

    at: datetime
    kind: str
    key: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Problem:
    line: int
    what: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    lines: int  # intact lines before the first problem (all of them when ``problem`` is None)
    head: str  # the hash of the last intact line (GENESIS for an empty log)
    problem: Problem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _line(seq: int, prev: str, entry: Entry) -> tuple[bytes, str]:
    body: dict[str, Any] = {
        "seq": seq,
        "at": entry.at.isoformat(),
        "kind": entry.kind,
        "key": entry.key,
        "data": entry.data,
        "prev": prev,
    }
    digest = hashlib.sha256(_canonical(body)).hexdigest()
    return _canonical({**body, "hash": digest}) + b"\n", digest


def chain(entries: Iterable[Entry], *, seq: int = 0, prev: str = GENESIS) -> list[bytes]:
    """The log lines for ``entries`` following line ``seq`` whose hash is ``prev``."""
    lines = []
    for seq_, entry in enumerate(entries, start=seq + 1):
        line, prev = _line(seq_, prev, entry)
        lines.append(line)
    return lines


def verify_lines(lines: Iterable[bytes], anchors: Sequence[tuple[int, str]] = ()) -> VerifyReport:
    """Check a log's lines (each with its newline); stop at the first problem."""
    wanted = dict(anchors)
    prev, count = GENESIS, 0
    for number, raw in enumerate(lines, start=1):
        if not raw.endswith(b"\n"):
            return VerifyReport(count, prev, Problem(number, "incomplete line (no newline)"))
        try:
            record = json.loads(raw)
        except ValueError:
            return VerifyReport(count, prev, Problem(number, "not a JSON object"))
        if not isinstance(record, dict) or not {"seq", "prev", "hash"} <= record.keys():
            return VerifyReport(count, prev, Problem(number, "not an audit entry"))
        claimed = record.pop("hash")
        if _canonical({**record, "hash": claimed}) + b"\n" != raw:
            return VerifyReport(count, prev, Problem(number, "not in canonical form (edited)"))
        if hashlib.sha256(_canonical(record)).hexdigest() != claimed:
            return VerifyReport(count, prev, Problem(number, "content does not match its hash"))
        if record["seq"] != number or record["prev"] != prev:
            what = (
                f"entry {record['seq']} found where entry {number} belongs"
                if record["seq"] != number
                else "does not follow the line before it"
            )
            return VerifyReport(
                count, prev, Problem(number, f"{what}: a line was removed or reordered")
            )
        if number in wanted and wanted.pop(number) != claimed:
            return VerifyReport(
                count, prev, Problem(number, "hash differs from the anchor (rewritten)")
            )
        prev, count = claimed, number
    if wanted:
        line = min(wanted)
        return VerifyReport(
            count, prev, Problem(line, f"anchored line missing: the log ends at line {count}")
        )
    return VerifyReport(count, prev, None)


def _read_lines(handle: Any) -> Iterator[bytes]:
    handle.seek(0)
    yield from handle


def verify(path: Path, anchors: Sequence[tuple[int, str]] = ()) -> VerifyReport:
    """Verify the audit log at ``path`` (a missing file is an empty log)."""
    try:
        with path.open("rb") as handle:
            return verify_lines(_read_lines(handle), anchors)
    except FileNotFoundError:
        return verify_lines([], anchors)


# --- what the ledger holds ----------------------------------------------------------------


_RANK = {"dataset.version": 0, "incident.closed": 2}


@dataclass(slots=True)
class Logged:
    """What a log already holds: record keys, and per delivery the time of its latest event."""

    keys: set[str]
    latest: dict[str, datetime]

    @classmethod
    def of(cls, lines: Iterable[bytes]) -> Logged:
        logged = cls(set(), {})
        for raw in lines:
            record = json.loads(raw)
            logged.keys.add(record["key"])
            delivery = (
                record["data"].get("delivery") if record["key"].startswith("event:") else None
            )
            if delivery is not None:
                at = datetime.fromisoformat(record["at"])
                logged.latest[delivery] = max(at, logged.latest.get(delivery, at))
        return logged


def ledger_entries(ledger: Ledger, logged: Logged | None = None) -> list[Entry]:
    """Every ledger record the audit log mirrors, in ledger time order; with ``logged``,
    only those not in it."""
    known = logged or Logged(set(), {})
    found: list[Entry] = []
    versions: dict[int, None] = {}
    for delivery in ledger.deliveries():
        if f"version:{delivery.version}" not in known.keys:
            versions.setdefault(delivery.version)
        latest = known.latest.get(delivery.id)
        # Every event stamps the delivery's updated_at with its own time, so a delivery not
        # touched since its latest logged event has nothing new: skip its event query (this
        # keeps a sync over years of deliveries to one query for most of them).
        if latest is not None and delivery.updated_at <= latest:
            continue
        for event in ledger.events(delivery.id):
            found.append(
                Entry(
                    event.at,
                    "delivery." + event.to_state.value,
                    f"event:{event.id}",
                    {
                        "delivery": delivery.id,
                        "dataset": delivery.dataset.value,
                        "agreement": delivery.agreement,
                        "recipient": delivery.recipient,
                        "version": delivery.version,
                        "from_state": None if event.from_state is None else event.from_state.value,
                        "to_state": event.to_state.value,
                        "event": event.event,
                        "reason": event.reason,
                        "chain": event.chain,
                    },
                )
            )
    for version_id in versions:
        v = ledger.get_version(version_id)
        dataset = ledger.get_dataset(v.dataset)
        found.append(
            Entry(
                v.created_at,
                "dataset.version",
                f"version:{v.id}",
                {
                    "dataset": v.dataset.value,
                    "agreement": dataset.agreement,
                    "number": v.number,
                    "sha256": v.sha256.hex,
                    "size": v.size,
                    "kind": v.kind.value,
                    "supersedes": v.supersedes,
                    "complaint_ref": v.complaint_ref,
                    "reason": v.reason,
                    "override_note": v.override_note,
                },
            )
        )
    for incident in ledger.incidents(open_only=False):
        about = {
            "incident": incident.id,
            "reason": incident.reason.value,
            "agreement": incident.agreement,
            "partner": incident.partner,
        }
        found.append(
            Entry(
                incident.opened_at,
                "incident.opened",
                f"incident:{incident.id}:opened",
                {**about, "context": dict(incident.context)},
            )
        )
        if incident.closed_at is not None:
            found.append(
                Entry(
                    incident.closed_at,
                    "incident.closed",
                    f"incident:{incident.id}:closed",
                    {**about, "note": incident.close_note, "occurrences": incident.occurrences},
                )
            )
    for q in ledger.quarantined():
        found.append(
            Entry(
                q.at,
                "intake.quarantined",
                f"quarantine:{q.id}",
                {
                    "agreement": q.agreement,
                    "reason": q.reason.value,
                    "detail": q.detail,
                    "sha256": None if q.sha256 is None else q.sha256.hex,
                    "size": q.size,
                    "incident": q.incident,
                },
            )
        )
    for r in ledger.received():
        found.append(
            Entry(
                r.at,
                "received." + r.status,
                f"received:{r.manifest_hash}",
                {
                    "sender": r.sender,
                    "delivery": r.delivery,
                    "agreement": r.agreement,
                    "dataset": r.dataset.value,
                    "dataset_version": r.dataset_version,
                    "sequence": r.sequence,
                    "supersedes": r.supersedes,
                    "reason": r.reason,
                    "sha256": r.plaintext_sha256,
                    "size": r.size,
                },
            )
        )
    found = [e for e in found if e.key not in known.keys]
    # At the same instant a version comes before the deliveries it creates, and an incident's
    # opening before its closing.
    found.sort(key=lambda e: (e.at, _RANK.get(e.kind, 1), e.key))
    return found


@dataclass(frozen=True, slots=True)
class Mismatch:
    line: int
    key: str
    what: str


def compare(ledger: Ledger, path: Path) -> list[Mismatch]:
    """Logged records that the ledger no longer holds as logged: a ledger edited or rows
    deleted behind its back (its triggers dropped). Run it on a log that verifies."""
    current = {e.key: e for e in ledger_entries(ledger)}
    found = []
    try:
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                record = json.loads(raw)
                entry = current.get(record["key"])
                if entry is None:
                    found.append(Mismatch(number, record["key"], "no longer in the ledger"))
                elif (entry.at.isoformat(), entry.kind, entry.data) != (
                    record["at"],
                    record["kind"],
                    record["data"],
                ):
                    found.append(Mismatch(number, record["key"], "differs in the ledger"))
    except FileNotFoundError:
        return []
    return found


def sync(ledger: Ledger, path: Path) -> int:
    """Append every ledger record not yet in the log; returns how many lines were added."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "r+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        report = verify_lines(_read_lines(handle))
        if report.problem is not None:
            raise AuditLogDamaged(
                f"{path}: line {report.problem.line}: {report.problem.what}; not appending"
            )
        handle.seek(0)
        logged = Logged.of(handle)
        prev, seq = report.head, report.lines
        chunk = bytearray()
        for entry in ledger_entries(ledger, logged):
            seq += 1
            line, prev = _line(seq, prev, entry)
            chunk += line
        if chunk:
            # One write of whole lines: a crash leaves either all of them or a torn last line,
            # which verify reports rather than hiding.
            handle.write(bytes(chunk))
            handle.flush()
            os.fsync(handle.fileno())
        return seq - report.lines
