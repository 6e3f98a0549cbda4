"""Shared fixtures. Keep this file small: the machinery lives in tests/support/."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.support.sshd import ORGANISATION, PARTNERS, Hub, running_hub

HubFactory = Callable[..., Hub]


@pytest.fixture(name="hub")
def fixture_hub(tmp_path: Path) -> Iterator[Hub]:
    """A running sshd hub for essex-cc (daemon) with partners southend-uhft and essex-police."""
    with running_hub(tmp_path) as hub:
        yield hub


@pytest.fixture(name="hub_module", scope="module")
def fixture_hub_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """The same hub shared by the tests of one module: for probes that change nothing."""
    with running_hub(tmp_path_factory.mktemp("hub-client")) as hub:
        yield hub


@pytest.fixture(name="hub_factory")
def fixture_hub_factory(tmp_path: Path) -> Iterator[HubFactory]:
    """Start more hubs: ``hub_factory(partners=[...], disabled=[...], organisation=...,
    sftp_log=True, links_denied=False)``; each is stopped at the end of the test."""
    counter = itertools.count()
    with ExitStack() as stack:

        def make(
            *,
            organisation: str = ORGANISATION,
            partners: Sequence[str] = PARTNERS,
            disabled: Sequence[str] = (),
            sftp_log: bool = False,
            links_denied: bool = True,
        ) -> Hub:
            client_dir = tmp_path / f"hub-{next(counter)}"
            client_dir.mkdir()
            hub = running_hub(
                client_dir,
                organisation=organisation,
                partners=partners,
                disabled=disabled,
                sftp_log=sftp_log,
                links_denied=links_denied,
            )
            return stack.enter_context(hub)

        yield make


@pytest.fixture(name="new_workspace")
def fixture_new_workspace(tmp_path: Path) -> Path:
    """A fresh workspace made by the real ``exchange init`` (no keys yet): returns its folder."""
    from exchange.cli import main

    folder = tmp_path / "workspace"
    assert 0 == main(["init", str(folder)])
    return folder
