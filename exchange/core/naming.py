"""Names of the files on the hub: opaque, deterministic, and checked when read back.

Rules (FORMAT.md §6):

1. A hub file name is derived from the delivery id only, through SHA-256 with a fixed label,
   so a retry of the same delivery writes the same name (idempotent uploads), and the hub,
   which sees names, learns nothing about the dataset, the agreement or the sender's ids.
2. Nothing from outside (a dataset file name, a manifest field) is ever put into a hub name.
3. A name listed on the hub is accepted only if it matches the allow-list for its folder:
   :func:`read_name` returns None for anything else (the caller records an incident and
   never uses the name in a path). :func:`printable` escapes such a name for a log line.
4. Uploads go to a temporary name (``.`` prefix, 16-hex token, ``.part`` suffix) and are
   renamed into place; leftovers are recognisable as ours by :func:`read_name`.

Pure: no I/O, no randomness (the caller passes the delivery id and the temp token).
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass

#: ``dl-`` and 128 random bits as lower-case hex, drawn by the shell (``secrets.token_hex(16)``).
DELIVERY_ID = re.compile(r"dl-[0-9a-f]{32}")
#: The token in a temporary upload name.
TEMP_TOKEN = re.compile(r"[0-9a-f]{16}")
_NAME_LABEL = b"exchange/v1 hub name\n"
_STEM = r"[0-9a-f]{32}"
_FINAL = re.compile(rf"({_STEM})(\.manifest|\.receipt)?\.age")
_TEMP = re.compile(rf"\.({_STEM}(?:\.manifest|\.receipt)?\.age)\.({TEMP_TOKEN.pattern})\.part")


class Folder(enum.Enum):
    """The three folders of a partner's hub folder (its chroot)."""

    #: Written by the hub's organisation, read by the partner: deliveries to the partner and
    #: the organisation's receipts for deliveries the partner sent.
    INBOX = "inbox"
    #: Written by the partner: deliveries from the partner to the organisation.
    OUTBOX = "outbox"
    #: Written by the partner: its receipts for deliveries it took from ``inbox/``.
    RECEIPTS = "receipts"


class FileKind(enum.Enum):
    PAYLOAD = ".age"
    MANIFEST = ".manifest.age"
    RECEIPT = ".receipt.age"


#: Which kinds of file may appear in which folder; anything else there is unexpected.
ALLOWED: dict[Folder, frozenset[FileKind]] = {
    Folder.INBOX: frozenset({FileKind.PAYLOAD, FileKind.MANIFEST, FileKind.RECEIPT}),
    Folder.OUTBOX: frozenset({FileKind.PAYLOAD, FileKind.MANIFEST}),
    Folder.RECEIPTS: frozenset({FileKind.RECEIPT}),
}


def is_delivery_id(text: str) -> bool:
    return DELIVERY_ID.fullmatch(text) is not None


def delivery_id_from_hex(random_hex: str) -> str:
    """``dl-<32 hex>`` from 128 random bits the shell drew (``secrets.token_hex(16)``)."""
    delivery = f"dl-{random_hex}"
    if not is_delivery_id(delivery):
        raise ValueError("delivery id: expected 32 lower-case hex digits of randomness")
    return delivery


def hub_stem(delivery_id: str) -> str:
    """The opaque 32-hex stem every hub file of this delivery shares (FORMAT.md §6.1)."""
    if not is_delivery_id(delivery_id):
        raise ValueError("delivery id: expected 'dl-' and 32 lower-case hex digits")
    return hashlib.sha256(_NAME_LABEL + delivery_id.encode("ascii")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class DeliveryNames:
    """The hub names of one delivery's files. The same delivery id always gives the same names."""

    stem: str

    @classmethod
    def for_delivery(cls, delivery_id: str) -> DeliveryNames:
        return cls(hub_stem(delivery_id))

    @property
    def payload(self) -> str:
        return self.stem + FileKind.PAYLOAD.value

    @property
    def manifest(self) -> str:
        return self.stem + FileKind.MANIFEST.value

    @property
    def receipt(self) -> str:
        return self.stem + FileKind.RECEIPT.value


def temp_name(final: str, token: str) -> str:
    """The name to upload ``final`` under before the rename: ``.<final>.<token>.part``.

    ``token`` is 16 lower-case hex digits chosen by the writer (the transport derives it from
    the final name, so a retry finds and removes the leftover of an interrupted attempt).
    """
    if _FINAL.fullmatch(final) is None:
        raise ValueError("temp name: the final name is not a hub name")
    if TEMP_TOKEN.fullmatch(token) is None:
        raise ValueError("temp name: token must be 16 lower-case hex digits")
    return f".{final}.{token}.part"


@dataclass(frozen=True, slots=True)
class HubFile:
    """A name read back from the hub that passed the allow-list."""

    name: str
    stem: str
    kind: FileKind
    #: True for an upload still in progress or left behind by a crash (``.….part``).
    temporary: bool

    @property
    def final_name(self) -> str:
        return self.stem + self.kind.value


def read_name(folder: Folder, name: str) -> HubFile | None:
    """Classify a name listed in ``folder``, or None if it is not one we allow there."""
    temporary = False
    final = name
    temp = _TEMP.fullmatch(name)
    if temp is not None:
        final, temporary = temp.group(1), True
    match = _FINAL.fullmatch(final)
    if match is None:
        return None
    kind = {None: FileKind.PAYLOAD, ".manifest": FileKind.MANIFEST, ".receipt": FileKind.RECEIPT}[
        match.group(2)
    ]
    if kind not in ALLOWED[folder]:
        return None
    return HubFile(name=name, stem=match.group(1), kind=kind, temporary=temporary)


def remote_path(partner_folder: str, folder: Folder, name: str) -> str:
    """``<partner_folder>/<folder>/<name>`` after checking ``name`` is a hub name for it.

    ``partner_folder`` is the partner's ``hub_folder`` from its (validated) configuration.
    """
    if read_name(folder, name) is None:
        raise ValueError(f"remote path: {printable(name)} is not a hub name for {folder.value}/")
    if not re.fullmatch(r"[a-z][a-z0-9-]{1,30}", partner_folder):
        raise ValueError(f"remote path: bad partner folder {printable(partner_folder)}")
    return f"{partner_folder}/{folder.value}/{name}"


def printable(name: str, limit: int = 80) -> str:
    """A hostile name made safe for a log line: printable ASCII kept, every other byte of its
    UTF-8 form (and ``"`` and ``\\``) written as ``\\xNN``, quoted, cut after ``limit`` bytes."""
    raw = name.encode("utf-8", "surrogatepass")
    cut = raw[:limit]
    text = "".join(chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\x{b:02x}" for b in cut)
    return f'"{text}"' + ("..." if len(raw) > limit else "")
