"""Configuration a manifest or an age wrap cannot use (review findings M3, L1): refused by
``load_config`` naming the file and key; and if it reaches the daemon anyway, the partner is
parked with one incident (``encoding`` / ``key-invalid``), never struck towards poison.

In process, with real workspaces and ledgers over an in-memory hub.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exchange.agefmt import bech32
from exchange.config import load_config
from exchange.core.delivery import DeliveryState
from exchange.demo.workspaces import ESSEX_CC, SOUTHEND, Workspace, create_workspace
from exchange.errors import ConfigError
from exchange.model import ReasonCode
from exchange.service.lane import Lane
from exchange.transport.memory import MemoryTransport
from tests.integration.test_delivery_outcome_unknown import World, fixture_world
from tests.support.deliveries import AGREEMENT

pytestmark = pytest.mark.integration

__all__ = ["fixture_world"]  # the shared fixture, imported for pytest to find

LOW_ORDER = (bech32.encode("age", bytes(32)), bech32.encode("age", (1).to_bytes(32, "little")))


def _sender(tmp_path: Path) -> Workspace:
    sender = create_workspace(tmp_path / "cc", ESSEX_CC, now=datetime.now(UTC))
    partner = create_workspace(tmp_path / "p", SOUTHEND, now=datetime.now(UTC))
    sender.add_partner(partner)
    sender.add_agreement(AGREEMENT, (SOUTHEND.id,))
    return sender


def _edit(path: Path, key: str, value: str) -> None:
    text = path.read_text("utf-8")
    path.write_text(
        re.sub(rf"^{key} = .*$", lambda _: f"{key} = {value}", text, flags=re.M), "utf-8"
    )


@pytest.mark.parametrize(
    ("key", "value", "detail"),
    [
        ("purpose", '"""Protect children\nand adults at risk"""', "U+000A"),
        ("purpose", '"Protect children \u202eksir ta stluda"', "U+202E"),
        ("purpose", '"' + "x" * 1001 + '"', "longer than 1000 bytes"),
        ("legal_basis", '["Children Act 1989 s.47\\u0007"]', "U+0007"),
    ],
)
def test_agreement_text_a_manifest_cannot_carry_is_refused_at_load(
    tmp_path: Path, key: str, value: str, detail: str
) -> None:
    """An agreement whose purpose or legal basis breaks the manifest's text rules (control or
    bidi characters, over the byte cap) fails the config load naming the file and the key."""
    sender = _sender(tmp_path)
    _edit(sender.config_dir / "agreements" / f"{AGREEMENT}.toml", key, value)
    with pytest.raises(ConfigError) as caught:
        load_config(sender.config_dir)
    text = str(caught.value)
    assert f"agreements/{AGREEMENT}.toml" in text
    assert key in text and "cannot go into a manifest" in text and detail in text


@pytest.mark.parametrize("recipient", LOW_ORDER)
def test_low_order_age_recipient_is_refused_at_load(tmp_path: Path, recipient: str) -> None:
    """An age recipient that parses but is a low-order X25519 point fails the config load
    naming the partner's file and keys.age_recipient."""
    sender = _sender(tmp_path)
    _edit(sender.config_dir / "partners" / f"{SOUTHEND.id}.toml", "age_recipient", f'"{recipient}"')
    with pytest.raises(ConfigError, match="low-order") as caught:
        load_config(sender.config_dir)
    assert f"partners/{SOUTHEND.id}.toml" in str(caught.value)
    assert "age_recipient" in str(caught.value)


def _assert_parked_not_struck(world: World, reason: ReasonCode) -> None:
    lane = Lane(world.ctx, SOUTHEND.id, lambda: MemoryTransport(world.hub))
    lane._reconciled = True
    for _ in range(4):  # more than max_attempts: a strike each would poison it
        lane._hold_until = 0.0
        lane.cycle()
    current = world.current()
    assert (DeliveryState.PARKED, 0, 0) == (current.state, current.strikes, current.attempts)
    incidents = world.ledger.incidents()
    assert [(reason, SOUTHEND.id)] == [(i.reason, i.partner) for i in incidents]
    assert incidents[0].occurrences >= 2
    assert [] == world.inbox()


def test_agreement_text_at_delivery_parks_with_an_incident_not_a_strike(world: World) -> None:
    """An agreement text the manifest refuses that reaches the daemon (loaded before this
    check, or edited in memory) parks the partner with an 'encoding' incident before any
    intent is recorded; probes re-park it and it is never poisoned."""
    cfg = world.ctx.config
    bad = dataclasses.replace(cfg.agreements[AGREEMENT], purpose="Protect children\nat risk")
    config = dataclasses.replace(cfg, agreements={**cfg.agreements, AGREEMENT: bad})
    world.ctx = dataclasses.replace(world.ctx, config=config)
    _assert_parked_not_struck(world, ReasonCode.ENCODING)


@pytest.mark.parametrize("recipient", LOW_ORDER)
def test_low_order_recipient_at_delivery_parks_with_key_invalid(
    world: World, recipient: str
) -> None:
    """A low-order age recipient that reaches the daemon parks the partner with a
    'key-invalid' incident; no attempt is begun and nothing is poisoned."""
    cfg = world.ctx.config
    partner = cfg.partners[SOUTHEND.id]
    keys = dataclasses.replace(partner.keys, age_recipient=recipient)
    partners = {**cfg.partners, SOUTHEND.id: dataclasses.replace(partner, keys=keys)}
    world.ctx = dataclasses.replace(world.ctx, config=dataclasses.replace(cfg, partners=partners))
    _assert_parked_not_struck(world, ReasonCode.KEY_INVALID)
