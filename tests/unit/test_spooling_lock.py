"""Start-up cleanup of spool temporaries never removes one that a running writer still holds."""

from __future__ import annotations

import os
from pathlib import Path

from exchange.outbox import spool_temp, spooling
from exchange.outbox._dirs import remove_temps


def _cleanup(folder: Path) -> int:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return remove_temps(fd)
    finally:
        os.close(fd)


def test_held_temporary_survives_cleanup_and_goes_once_released(tmp_path: Path) -> None:
    """While 'exchange send' holds the folder its temporary stays; after it is gone, cleanup removes it."""
    temp = spool_temp(tmp_path, "send")
    with spooling(tmp_path):
        temp.write_bytes(b"referral_id\nR-1\n")
        assert 0 == _cleanup(tmp_path)
        assert temp.exists()
    assert 1 == _cleanup(tmp_path)
    assert not temp.exists()
