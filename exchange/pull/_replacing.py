"""Corrections on the receiving side: the revised data replaces the out-of-date data (protocol
§8, FORMAT.md §4.2 ``supersedes``).

Rules:

1. A manifest with ``supersedes`` replaces what we hold when our ledger has a filed delivery
   (status accepted or replaced) from the same sender, of the same dataset, of the superseded
   version or an earlier one. Then the receipt says ``replaced``. Otherwise we never held it:
   the correction is filed as a new dataset (:meth:`Inbox.publish`) and acknowledged
   ``accepted``.
2. The filed location then holds only the revised data, and the switch is atomic: the old
   file is first hard-linked into ``<sender>/<agreement>/.superseded/<dataset>-v<N>/``, then
   the verified staged plaintext is renamed onto the filed path (``rename(2)`` replaces it in
   one step: a reader sees the old bytes or the new, never a mixture or nothing), then the
   folders are fsynced. The moved-aside copy is made read-only (0400).
3. Retention: the moved-aside copy is out of the filed location, for audit of what was
   replaced, and is deleted by the partner's own retention process by the superseded
   manifest's ``retain-until`` date at the latest (docs/corrections.md). Nothing here deletes it.
4. Idempotent: if the filed path already holds the revised bytes (a crash after the rename,
   before the ledger row), nothing moves; the run records the row and sends the receipt.
5. Only paths our own ledger recorded under our inbox folder are touched; a filed path that
   is now a link or not a regular file is left alone and the correction is filed as new.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from pathlib import Path

from exchange import fsutil
from exchange.ledger import Ledger, Received
from exchange.log import get_logger
from exchange.manifest import Manifest, Status
from exchange.pull._filing import Inbox

__all__ = ["SUPERSEDED", "file_delivery", "held_version", "receipt_status"]

#: The folder beside the filed datasets where replaced versions are moved aside.
SUPERSEDED = ".superseded"
_HELD = ("accepted", "replaced")
_READ = 1024 * 1024


def held_version(ledger: Ledger, manifest: Manifest) -> Received | None:
    """The filed delivery this correction replaces (rule 1), or None if we never held one."""
    if manifest.correction is None:
        return None
    rows = [
        row
        for row in ledger.received(manifest.sender)
        if row.dataset.value == manifest.dataset
        and row.agreement == manifest.agreement
        and row.status in _HELD
        and row.path is not None
        and row.dataset_version <= manifest.correction.supersedes
    ]
    return max(rows, key=lambda r: (r.dataset_version, r.at)) if rows else None


def receipt_status(ledger: Ledger, manifest: Manifest) -> Status:
    """``replaced`` when the delivery replaced data we held, else ``accepted`` (rule 1)."""
    return Status.REPLACED if held_version(ledger, manifest) is not None else Status.ACCEPTED


def _sha256_of(path: Path) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as file:
        while chunk := file.read(_READ):
            digest.update(chunk)
    return digest.hexdigest()


def _inside(inbox: Inbox, path: Path) -> bool:
    # The folder is resolved, the name is not: a link at the name is refused later (rule 5).
    root, full = inbox.root.resolve(), path.parent.resolve() / path.name
    return root in full.parents


def file_delivery(
    inbox: Inbox, ledger: Ledger, manifest: Manifest, staged: Path, sha256: str
) -> Path:
    """File a verified staged plaintext: in place of the version it supersedes when we hold
    one (rules 2-5), else as a new dataset."""
    held = held_version(ledger, manifest)
    target = None if held is None or held.path is None else Path(held.path)
    if held is None or target is None or not _inside(inbox, target):
        return inbox.publish(
            staged, manifest.sender, manifest.agreement, manifest.file_name, sha256
        )
    try:
        info: os.stat_result | None = target.lstat()
    except FileNotFoundError:
        info = None
    if info is not None and not stat.S_ISREG(info.st_mode):
        get_logger().warning("pull.replace_refused", path=str(target), delivery=manifest.delivery)
        return inbox.publish(
            staged, manifest.sender, manifest.agreement, manifest.file_name, sha256
        )
    if info is not None and _sha256_of(target) == sha256:
        return target  # rule 4: replaced before a crash
    aside = None
    if info is not None:
        aside = _move_aside(target, held)
    staged.rename(target)  # rename(2): replaces the filed file in one step
    fsutil.fsync_dir(target.parent)
    if aside is not None:
        with contextlib.suppress(OSError):
            aside.chmod(0o400)
    get_logger().info(
        "pull.replaced",
        sender=manifest.sender,
        delivery=manifest.delivery,
        agreement=manifest.agreement,
        dataset=manifest.dataset,
        version=manifest.dataset_version,
        detail=f"replaced version {held.dataset_version}"
        + ("" if aside is None else f"; moved aside to {aside}"),
        path=str(target),
    )
    return target


def _move_aside(target: Path, held: Received) -> Path:
    """Hard-link the filed file into the superseded folder (the filed name stays in place
    until the rename replaces it)."""
    folder = target.parent / SUPERSEDED / f"{held.dataset.value}-v{held.dataset_version}"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for n in range(1, 1000):
        aside = folder / (target.name if n == 1 else f"{n} {target.name}")
        try:
            os.link(target, aside, follow_symlinks=False)
        except FileExistsError:
            if target.samefile(aside):
                return aside
            continue
        fsutil.fsync_dir(folder)
        fsutil.fsync_dir(folder.parent)
        return aside
    raise FileExistsError(f"{folder}: no free name to move {target.name} aside")
