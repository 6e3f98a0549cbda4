"""Taking files in from an agreement's outbox: a durable spool copy, or quarantine.

Layer 2 (local filesystem). :mod:`exchange.core.intake` decides from values; this package does
the I/O around it and returns what happened as a frozen value. ``_values`` holds the outcomes,
errors and crash point names, ``_dirs`` the directory-descriptor helpers and the quarantine
folder, ``_outbox`` the :class:`Outbox` that takes files. The service logs nothing more
for these events than what is logged here (``intake.accepted``, ``intake.refused``,
``intake.deferred``, ``intake.removed``), and turns refusals and deferrals into incidents.

Rules:

1. **Never through a link, never blocking.** Each outbox, spool and quarantine directory is
   opened once, at start-up, with ``O_DIRECTORY|O_NOFOLLOW``, and every entry is reached
   relative to those descriptors. An entry is ``lstat``-ed first: a symlink, FIFO, socket,
   device or directory is moved to quarantine by ``renameat`` and never opened. A regular file
   is opened with ``O_NOFOLLOW|O_NONBLOCK`` (a swap to a FIFO between ``lstat`` and ``open``
   cannot hang us) and checked again with ``fstat``: same inode, one link.
2. **Read once.** The content is streamed once: SHA-256, byte count and the intake content
   checks are fed chunk by chunk while the bytes go into a spool temporary file. A file over
   the agreement's cap is refused from its ``lstat`` size, before a byte is read.
3. **Write ordering (docs/DESIGN.md invariant 1):** the spool copy
   ``spool/<agreement>/<sha256>`` (mode 0400) is written to a temporary name, fsynced, renamed
   and the spool directory fsynced *before* :meth:`Outbox.take` returns :class:`Taken`; the
   original stays in the outbox until the caller, after its ledger commit, calls
   :meth:`Outbox.remove_original`, which unlinks it only if the name still holds the same inode
   and then fsyncs the outbox directory. The crash points in :data:`CRASH_POINTS` mark each step.
4. **Not taken in a mixed state.** Size, mtime, ctime and inode are compared before reading,
   after reading (``fstat`` of the descriptor and ``fstatat`` of the name) and before removal;
   any difference abandons the attempt (the spool temporary file is removed) with
   ``Retry(CHANGED)``.
5. **Nothing is ever deleted** but our own temporary files. A refusal writes
   ``quarantine/<agreement>/<UTC time>-<safe name>.reason.json`` (atomic write) and then renames
   the entry beside it (docs/DESIGN.md invariant 2). The reason file names columns, never cell
   values, and carries the original name only escaped and as hex.
6. **Permission denied is not a crash loop.** A file we may not read is left in place and
   reported as ``Retry(PERMISSION)``; the caller backs off, raises an incident, and may
   :meth:`Outbox.quarantine` it later.
7. Duplicates need the ledger, which this package does not import: :class:`Taken` carries the
   SHA-256 and the caller decides, then calls :meth:`Outbox.remove_original` or
   :meth:`Outbox.quarantine_original` with reason ``duplicate``.
"""

from exchange.outbox._dirs import spool_temp, spooling, write_temp
from exchange.outbox._outbox import CHUNK_SIZE, Outbox
from exchange.outbox._values import (
    CRASH_POINTS,
    CrashPoint,
    OutboxError,
    OutboxMoved,
    Outcome,
    Quarantined,
    Removed,
    Retry,
    Skipped,
    SkipReason,
    Taken,
    no_crash,
)

__all__ = [
    "CHUNK_SIZE",
    "CRASH_POINTS",
    "CrashPoint",
    "Outbox",
    "OutboxError",
    "OutboxMoved",
    "Outcome",
    "Quarantined",
    "Removed",
    "Retry",
    "SkipReason",
    "Skipped",
    "Taken",
    "no_crash",
    "spool_temp",
    "spooling",
    "write_temp",
]
