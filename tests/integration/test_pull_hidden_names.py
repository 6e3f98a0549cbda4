"""Security review L4 on the real hub: a partner cannot keep files, folders or links in its
``outbox/`` behind temporary-looking names without an incident at our collection; its own
upload in progress (FORMAT.md §6.1 temporary grammar, any token) is left alone quietly."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from exchange import keys, pull
from exchange.model import ReasonCode
from tests.support.deliveries import Orgs, make_orgs
from tests.support.sshd import Hub

PARTNER = "southend-uhft"
STEM = "0123456789abcdef0123456789abcdef"


@pytest.mark.integration
def test_hidden_temporary_looking_entries_are_incidents(tmp_path: Path, hub: Hub) -> None:
    """A folder under a hub temporary name and a file under the temporary name of a non-hub
    name are refused as unexpected files with incidents; an upload in progress is not."""
    orgs: Orgs = make_orgs(tmp_path, hub)
    as_dir = f".{STEM}.age.0123456789abcdef.part"
    hidden = ".notes.txt.0123456789abcdef.part"
    in_progress = f".{STEM}.manifest.age.0000000000000000.part"
    (tmp_path / "blob").write_bytes(b"kept out of sight")
    made = hub.sftp_batch(
        PARTNER,
        f"mkdir outbox/{as_dir}\n"
        f"put {tmp_path / 'blob'} outbox/{hidden}\n"
        f"put {tmp_path / 'blob'} outbox/{in_progress}\n",
    )
    assert made.returncode == 0, made.stderr
    hub.normalise()

    cfg = orgs.cc.config()
    paths = keys.KeyPaths(cfg.folders.keys)
    transport = orgs.transport("essex-cc")
    try:
        with orgs.ledger(orgs.cc) as ledger:
            report = pull.collect_inbound(
                cfg,
                ledger,
                transport,
                identities=keys.load_identities(paths),
                signing_key=keys.load_signing_key(paths),
                now=datetime.now(UTC),
            )
            incidents = ledger.incidents(open_only=True)
    finally:
        transport.close()

    assert sorted((as_dir, hidden)) == sorted(report.unexpected)
    assert () == report.outcomes
    assert len(incidents) == 2
    assert {ReasonCode.UNEXPECTED_FILE} == {i.reason for i in incidents}
