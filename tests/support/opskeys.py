"""Give each partner of an offline test workspace an SSH key of its own.

``make_offline_workspace`` writes the same SSH public key for every partner, which the
configuration now refuses (a key shared by two partners). Until that helper changes, the
operations tests call :func:`distinct_partner_ssh_keys` after it; it changes only keys that
are shared, so it is harmless once the helper writes distinct ones.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

from tests.support.workspace import Workspace

_SSH_LINE = re.compile(r'^ssh_public_key = "([^"]*)"$', re.MULTILINE)


def _new_key() -> str:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "key"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
            check=True,
            timeout=60,
        )
        return " ".join(path.with_suffix(".pub").read_text("utf-8").split()[:2])


def distinct_partner_ssh_keys(ws: Workspace) -> None:
    """Replace every partner SSH key that another partner shares with a fresh one."""
    files = sorted((ws.config_dir / "partners").glob("*.toml"))
    keys = {f: m.group(1) for f in files if (m := _SSH_LINE.search(f.read_text("utf-8")))}
    shared = {key for key, count in Counter(keys.values()).items() if count > 1}
    for path, key in keys.items():
        if key in shared:
            text = path.read_text("utf-8")
            path.write_text(_SSH_LINE.sub(f'ssh_public_key = "{_new_key()}"', text), "utf-8")
