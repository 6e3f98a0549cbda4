"""The exit-code table is a contract with scripts and monitoring: it is pinned here."""

from __future__ import annotations

import pytest

from exchange import errors
from exchange.cli import main

PINNED = {
    "ok": 0,
    "attention": 1,
    "usage": 2,
    "config": 3,
    "key_file": 4,
    "format": 5,
    "transport_permanent": 6,
    "ledger": 7,
    "prerequisite": 9,
    "not_found": 10,
    "refused": 11,
    "invariant": 70,
    "transient": 75,
    "interrupted": 130,
}


def test_table_is_pinned() -> None:
    """Changing an exit code is a breaking change and must change this test too."""
    assert PINNED == errors.EXIT_CODES


@pytest.mark.parametrize(
    ("error_class", "code"),
    [
        (errors.UsageError, 2),
        (errors.ConfigError, 3),
        (errors.KeyFileError, 4),
        (errors.HeaderError, 5),
        (errors.PayloadError, 5),
        (errors.NoIdentityMatch, 5),
        (errors.ManifestError, 5),
        (errors.SignatureError, 5),
        (errors.PermanentTransportError, 6),
        (errors.HostKeyError, 6),
        (errors.TransientTransportError, 75),
        (errors.LedgerCorrupt, 7),
        (errors.LedgerBusy, 75),
        (errors.PrerequisiteError, 9),
        (errors.NotFoundError, 10),
        (errors.RefusedError, 11),
        (errors.InvariantError, 70),
    ],
)
def test_each_class_has_its_code(error_class: type[errors.ExchangeError], code: int) -> None:
    """Each error class maps to its pinned exit code."""
    assert code == error_class.exit_code


def test_transient_flags() -> None:
    """Only errors that retrying can fix are transient."""
    transient = {c.__name__ for c in _all_subclasses(errors.ExchangeError) if c.transient}
    assert {"TransientTransportError", "LedgerBusy"} <= transient
    assert not errors.HostKeyError.transient and not errors.PermanentTransportError.transient


def _all_subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _all_subclasses(sub)
    return found


def test_base_is_abstract() -> None:
    """ExchangeError itself cannot be raised; a subclass must say what kind of error it is."""
    with pytest.raises(TypeError, match="abstract"):
        errors.ExchangeError("x")


def test_usage_error_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown command exits 2 with an error and a hint line, no traceback."""
    assert main(["no-such-command"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("exchange: error: ")
    assert "exchange: hint: " in err
    assert "Traceback" not in err


def test_config_error_exit_code(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing configuration exits 3 naming the file."""
    assert main(["config", "check", "--config", f"{tmp_path}/nowhere"]) == 3
    err = capsys.readouterr().err
    assert "exchange: error: " in err and "exchange.toml: file not found" in err
