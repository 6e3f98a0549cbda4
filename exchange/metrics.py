"""Prometheus metrics from the ledger, served on loopback only (optional).

Rules:

1. Every figure is computed from the ledger when scraped; nothing is counted in memory, so
   the numbers survive restarts and agree with ``exchange status``.
2. The server binds 127.0.0.1 (or ::1) and refuses any other address: the figures name
   partners and agreements, and the endpoint has no authentication. Scrape it through a local
   agent or an SSH tunnel, never by opening a port.
3. Only ``GET /metrics`` is answered (text exposition format 0.0.4); anything else is 404.
   Labels carry ids from the configuration (agreement and partner ids, states, reason codes),
   never file names or contents.
4. :func:`render` is pure (a snapshot in, text out); :func:`snapshot` reads the ledger;
   :class:`MetricsServer` is the I/O.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from exchange.clock import Clock
from exchange.core.delivery import DeliveryState
from exchange.errors import UsageError
from exchange.ledger import Ledger

__all__ = ["MetricsServer", "Snapshot", "render", "snapshot"]

#: States in which a delivery still waits to reach its partner (the queue).
QUEUED = (
    DeliveryState.PENDING,
    DeliveryState.UPLOADING,
    DeliveryState.RETRY_WAIT,
    DeliveryState.PARKED,
)
#: States that need someone's attention.
FAILED = (DeliveryState.PARKED, DeliveryState.POISONED, DeliveryState.REJECTED)


@dataclass(frozen=True, slots=True)
class Snapshot:
    now: datetime
    deliveries: dict[tuple[str, str, str], int]  # (agreement, partner, state) -> count
    last_success: dict[str, datetime]  # partner -> latest sent_at
    oldest_queued: datetime | None  # created_at of the oldest delivery still queued
    open_incidents: dict[str, int]  # reason code -> count
    quarantined: int


def snapshot(ledger: Ledger, now: datetime) -> Snapshot:
    """Read the figures from the ledger."""
    counts: dict[tuple[str, str, str], int] = {}
    last: dict[str, datetime] = {}
    for row in ledger.status():
        counts[(row.agreement, row.recipient, row.state.value)] = row.count
        if row.last_sent_at is not None and (
            row.recipient not in last or row.last_sent_at > last[row.recipient]
        ):
            last[row.recipient] = row.last_sent_at
    queued = ledger.deliveries(*QUEUED)
    incidents = Counter(i.reason.value for i in ledger.incidents(open_only=True))
    return Snapshot(
        now=now,
        deliveries=counts,
        last_success=last,
        oldest_queued=min((d.created_at for d in queued), default=None),
        open_incidents=dict(incidents),
        quarantined=len(ledger.quarantined()),
    )


def _labels(**labels: str) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in sorted(labels.items())) + "}"


def render(snap: Snapshot) -> str:
    """The snapshot in the Prometheus text exposition format."""
    lines: list[str] = []

    def family(name: str, kind: str, text: str) -> None:
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")

    family("exchange_deliveries", "gauge", "Deliveries by agreement, partner and state.")
    for (agreement, partner, state), count in sorted(snap.deliveries.items()):
        labels = _labels(agreement=agreement, partner=partner, state=state)
        lines.append(f"exchange_deliveries{labels} {count}")
    family("exchange_delivery_failures", "gauge", "Deliveries parked, poisoned or rejected.")
    failed = Counter[str]()
    for (_, partner, state), count in snap.deliveries.items():
        if DeliveryState(state) in FAILED:
            failed[partner] += count
    for partner in sorted({p for _, p, _ in snap.deliveries}):
        lines.append(f"exchange_delivery_failures{_labels(partner=partner)} {failed[partner]}")
    family("exchange_queue_depth", "gauge", "Deliveries not yet on the hub.")
    depth = sum(c for (_, _, s), c in snap.deliveries.items() if DeliveryState(s) in QUEUED)
    lines.append(f"exchange_queue_depth {depth}")
    family(
        "exchange_oldest_queued_age_seconds",
        "gauge",
        "Age of the oldest delivery not yet on the hub (0 when none).",
    )
    age = 0.0 if snap.oldest_queued is None else (snap.now - snap.oldest_queued).total_seconds()
    lines.append(f"exchange_oldest_queued_age_seconds {max(age, 0.0):.3f}")
    family(
        "exchange_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the latest delivery that reached each partner's hub folder.",
    )
    for partner, at in sorted(snap.last_success.items()):
        labels = _labels(partner=partner)
        lines.append(f"exchange_last_success_timestamp_seconds{labels} {at.timestamp():.3f}")
    family("exchange_open_incidents", "gauge", "Open incidents by reason code.")
    for reason, count in sorted(snap.open_incidents.items()):
        lines.append(f"exchange_open_incidents{_labels(reason=reason)} {count}")
    lines.append(f"exchange_open_incidents_total {sum(snap.open_incidents.values())}")
    family("exchange_quarantined_files", "gauge", "Files in quarantine, ever recorded.")
    lines.append(f"exchange_quarantined_files {snap.quarantined}")
    return "\n".join(lines) + "\n"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404)
            return
        body = self.server.produce().encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Access lines would go to stderr unstructured; scrapes are not events worth logging.
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], produce: Any) -> None:
        self.produce = produce
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


class MetricsServer:
    """``GET /metrics`` on a loopback address, served from a thread until :meth:`stop`."""

    def __init__(self, ledger: Ledger, clock: Clock, *, host: str = "127.0.0.1", port: int = 0):
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise UsageError(
                f"metrics address {host!r}: only a loopback address is allowed",
                hint="use 127.0.0.1 and scrape through a local agent or an SSH tunnel",
            )
        self._ledger, self._clock = ledger, clock
        self._server = _Server((host, port), self._produce)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def _produce(self) -> str:
        return render(snapshot(self._ledger, self._clock.now()))

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
