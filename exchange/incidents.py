"""Incidents for ops: list, show and close the ledger's incident records.

Rules:

1. Functions here return data (frozen records and JSON-ready dicts) and never print; the
   ``exchange incidents`` command renders them.
2. An incident's context holds ids, sizes, hashes and reason codes only (the ledger refuses
   anything but scalars, and its writers never put contents or file names there); this module
   shows it as it is and adds nothing from outside the ledger.
3. Closing needs a note saying what was done; the ledger keeps the time and the note, and a
   closed incident is never reopened or deleted (a recurrence opens a new one).
4. Times are rendered in UTC ISO 8601, the same as in ``exchange status --json``.
"""

from __future__ import annotations

from datetime import datetime

import structlog

from exchange.ledger import Incident, Ledger

__all__ = ["close_incident", "describe", "incident_json", "list_incidents", "show_incident"]

_log = structlog.get_logger("exchange.incidents")


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def incident_json(incident: Incident) -> dict[str, object]:
    """An incident as a JSON object (the ``--json`` form; keys are stable)."""
    return {
        "id": incident.id,
        "state": "open" if incident.closed_at is None else "closed",
        "reason": incident.reason.value,
        "agreement": incident.agreement,
        "partner": incident.partner,
        "context": dict(incident.context),
        "occurrences": incident.occurrences,
        "opened_at": _time(incident.opened_at),
        "last_seen_at": _time(incident.last_seen_at),
        "closed_at": _time(incident.closed_at),
        "close_note": incident.close_note,
    }


def describe(incident: Incident) -> str:
    """One line for a listing: id, state, reason, who it concerns, when, how often."""
    about = ", ".join(
        f"{label} {value}"
        for label, value in (("agreement", incident.agreement), ("partner", incident.partner))
        if value
    )
    state = "open" if incident.closed_at is None else "closed"
    seen = f"opened {incident.opened_at:%Y-%m-%d %H:%M}Z"
    if incident.occurrences > 1:
        seen += f", seen {incident.occurrences} times, last {incident.last_seen_at:%Y-%m-%d %H:%M}Z"
    return (
        f"#{incident.id} [{state}] {incident.reason.value}"
        + (f" ({about})" if about else "")
        + f": {seen}"
    )


def list_incidents(ledger: Ledger, *, include_closed: bool = False) -> list[Incident]:
    """Open incidents (all with ``include_closed``), oldest first."""
    return ledger.incidents(open_only=not include_closed)


def show_incident(ledger: Ledger, incident_id: int) -> Incident:
    """One incident; raises NotFoundError when the id is not in the ledger."""
    return ledger.get_incident(incident_id)


def close_incident(ledger: Ledger, incident_id: int, note: str, now: datetime) -> Incident:
    """Close an open incident with ``note``; raises RefusedError for an empty note or an
    incident already closed, NotFoundError for an unknown id."""
    closed = ledger.close_incident(incident_id, note.strip(), now)
    _log.info(
        "incident.closed",
        incident=closed.id,
        reason_code=closed.reason.value,
        agreement=closed.agreement,
        partner=closed.partner,
    )
    return closed
