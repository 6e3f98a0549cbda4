"""Talking to the hub: the transport port, the SFTP client, the fake and the retry wrapper.

Import from here. Only :mod:`exchange.transport.sftp` imports paramiko; see
:mod:`exchange.transport.port` for the rules every transport follows.
"""

from typing import TYPE_CHECKING

from exchange.transport.port import (
    AtomicUpload,
    AtomicWriter,
    CappedSink,
    EntryKind,
    Listing,
    PutResult,
    RefusedEntry,
    RemoteEntry,
    RemoteNotFoundError,
    RemotePathError,
    RemoteRefusedEntry,
    RemoteTooLargeError,
    SizeMismatchError,
    Transport,
    UnsupportedServerError,
)
from exchange.transport.retry import Backoff, RetryingTransport
from exchange.transport.sftp import SftpSettings, SftpTransport, StrictKexError

__all__ = [
    "AtomicUpload",
    "AtomicWriter",
    "Backoff",
    "CappedSink",
    "EntryKind",
    "Listing",
    "PutResult",
    "RefusedEntry",
    "RemoteEntry",
    "RemoteNotFoundError",
    "RemotePathError",
    "RemoteRefusedEntry",
    "RemoteTooLargeError",
    "RetryingTransport",
    "SftpSettings",
    "SftpTransport",
    "SizeMismatchError",
    "StrictKexError",
    "Transport",
    "UnsupportedServerError",
]

if TYPE_CHECKING:
    from exchange.transport.memory import MemoryTransport

    def _conforms(
        sftp: SftpTransport, memory: MemoryTransport, retrying: RetryingTransport
    ) -> tuple[Transport, Transport, Transport]:
        """Static check (age's ``var _ Recipient = ...``): every transport meets the port."""
        return sftp, memory, retrying
