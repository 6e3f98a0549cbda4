"""Filing received datasets in our inbox folder: staging, and publishing without overwriting.

Rules:

1. No plaintext outside the inbox folder. A delivery is staged in ``inbox/.incoming/`` (0700,
   same file system as every filed dataset): the ciphertext while it downloads and is hashed,
   the plaintext while it decrypts. Staged files are dot-named and never look like datasets.
2. A dataset appears under its final name only after every check passed, by ``link(2)`` from
   the staged file onto the final name, which fails if the name exists: a filed dataset is
   never overwritten, half-written or replaced in place.
3. The final name is ``inbox/<sender>/<agreement>/<name>``. ``<sender>`` and ``<agreement>``
   passed the id allow-list of FORMAT.md §4.2; ``<name>`` is the manifest's file name made
   safe by :func:`safe_file_name` (it is hostile input, FORMAT.md §4.2). When that name is
   taken by a *different* file, the dataset is filed as ``<stem> (2)<ext>``, ``(3)`` and so
   on; when it holds the *same* bytes (a crash after filing, before the ledger row), the
   existing file is the filing, so a retry never makes a copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from exchange import fsutil
from exchange.errors import InvariantError

#: The staging folder inside the inbox.
STAGING = ".incoming"
#: Longest file name we make (bytes of UTF-8); ext4 allows 255, and we leave room for " (n)".
MAX_NAME_BYTES = 200
#: A staged file not written to for this long is a crash's leftover (seconds).
STALE_AFTER = 600.0
#: How many " (n)" suffixes to try before giving up (a folder with 1000 same-named files).
MAX_SUFFIX = 1000
_ID = re.compile(r"[a-z][a-z0-9-]{1,30}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._ ()+,=@-]")
_READ = 1024 * 1024


def safe_file_name(original: str) -> str:
    """A file name we are willing to create, derived from a hostile one.

    Letters are folded to ASCII where a decomposition exists, every other unsafe character
    becomes ``_``, runs of ``_`` collapse, leading dots, dashes and spaces go (no hidden files, no options, no
    ``..``), and the result is cut to :data:`MAX_NAME_BYTES` keeping the extension.
    """
    folded = unicodedata.normalize("NFKD", original).encode("ascii", "ignore").decode("ascii")
    text = _UNSAFE.sub("_", folded)
    text = re.sub(r"_{2,}", "_", text).lstrip(". -").rstrip(" ")
    if not text.strip("._ "):
        text = "dataset"
    if len(text) > MAX_NAME_BYTES:
        stem, dot, ext = text.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            text = stem[: MAX_NAME_BYTES - len(ext) - 1] + "." + ext
        else:
            text = text[:MAX_NAME_BYTES]
    return text


def _candidates(name: str) -> Iterator[str]:
    yield name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    for n in range(2, MAX_SUFFIX + 1):
        yield f"{stem} ({n}){'.' + ext if ext else ''}"


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


class Inbox:
    """Our inbox folder: where deliveries are staged and filed."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def staging(self) -> Path:
        return self.root / STAGING

    @contextlib.contextmanager
    def staged(self, label: str) -> Iterator[tuple[Path, BinaryIO]]:
        """A new private file in the staging folder; it is removed when the block ends,
        whatever happens (publish links it elsewhere first)."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.staging.mkdir(mode=0o700, exist_ok=True)
        path = self.staging / f".{label}.{secrets.token_hex(8)}.tmp"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "w+b") as file:
                yield path, file
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def clear_staging(self, now: float, idle: float = STALE_AFTER) -> int:
        """Remove staged files left by a crash: those not written to for ``idle`` seconds
        before ``now`` (a POSIX time), so a concurrent run's download in progress is kept.
        Returns how many were removed."""
        removed = 0
        if self.staging.is_dir():
            for leftover in self.staging.glob(".*.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    if leftover.lstat().st_mtime <= now - idle:
                        leftover.unlink()
                        removed += 1
        return removed

    def publish(self, staged: Path, sender: str, agreement: str, name: str, sha256: str) -> Path:
        """Link the verified staged file in as ``<sender>/<agreement>/<name>`` (rule 3)."""
        if not (_ID.fullmatch(sender) and _ID.fullmatch(agreement)):
            raise InvariantError("inbox: sender and agreement must be checked ids")
        folder = self.root / sender / agreement
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        for candidate in _candidates(safe_file_name(name)):
            target = folder / candidate
            try:
                os.link(staged, target, follow_symlinks=False)
            except FileExistsError:
                if not target.is_symlink() and _sha256_of(target) == sha256:
                    return target
                continue
            fsutil.fsync_dir(folder)
            return target
        raise InvariantError(f"inbox: {folder}: more than {MAX_SUFFIX} files named {name!r}")
