"""``exchange demo`` runs the whole loop as a subprocess, verifies itself and cleans up."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from exchange.demo.run import CORRECTED

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_demo_passes_and_cleans_up() -> None:
    """The demo exits 0, narrates every step as verified (``exchange status`` shows both
    deliveries acknowledged, the correction is replaced at both partners), and leaves no
    workspace or hub folder behind."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
    result = subprocess.run(
        [sys.executable, "-m", "exchange", "demo"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
        cwd=REPO,
    )
    assert 0 == result.returncode, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert 7 == sum(1 for line in lines if line.strip() == "ok")
    assert "demo passed: all 7 steps verified" == lines[-1]
    assert any("southend-uhft: filed" in line and "identical bytes" in line for line in lines)
    assert any("essex-police: receipt verified by the daemon" in line for line in lines)
    assert any("schema-mismatch" in line and "nhs_number" in line for line in lines)
    for partner in ("southend-uhft", "essex-police"):
        assert any(f"| partner {partner}:" in line and "1 acknowledged" in line for line in lines)
        assert any(f"{partner}: acknowledged (replaced)" in line for line in lines)
        assert any(f"{partner}: the old version was moved aside" in line for line in lines)
    first = lines[0]
    base = Path(first.split("workspaces in ")[1].split(",")[0])
    hub_root = Path(first.split("hub in ")[1])
    assert not base.exists()
    assert not hub_root.exists()


@pytest.mark.integration
def test_demo_keep_leaves_the_workspaces() -> None:
    """With --keep the workspaces and the hub folder stay, and the demo says where."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
    result = subprocess.run(
        [sys.executable, "-m", "exchange", "demo", "--keep"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
        cwd=REPO,
    )
    assert 0 == result.returncode, result.stdout + result.stderr
    kept = next(line for line in result.stdout.splitlines() if line.startswith("kept: "))
    base = Path(kept.split("workspaces in ")[1].split(",")[0])
    hub_root = Path(kept.split("hub folder in ")[1])
    try:
        filed = base / "southend-uhft" / "inbox" / "essex-cc" / "mash-referrals"
        visible = [p for p in filed.iterdir() if not p.name.startswith(".")]
        assert [filed / "mash-referrals-2026-11-24.csv"] == visible
        assert CORRECTED == visible[0].read_bytes()
        assert (hub_root / "etc" / "sshd_config").exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(hub_root, ignore_errors=True)
