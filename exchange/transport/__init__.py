"""Talking to the hub: the transport port, the SFTP client, the fake and the retry wrapper.

Import from here. Only :mod:`exchange.transport.sftp` imports paramiko; see
:mod:`exchange.transport.port` for the rules every transport follows.
"""

from exchange.transport.port import (
    AtomicUpload,
    AtomicWriter,
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
