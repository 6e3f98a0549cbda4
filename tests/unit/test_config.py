"""Configuration loading: the example workspace loads, and every kind of bad input is refused
with a message naming the file and key path, all problems at once."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.config import load_config, parse_size
from exchange.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config"


@pytest.fixture(name="workspace")
def fixture_workspace(tmp_path: Path) -> Path:
    """A copy of the repository's example configuration in a temporary workspace."""
    shutil.copytree(EXAMPLE, tmp_path / "config")
    return tmp_path / "config"


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"fixture text {old!r} not found in {path}"
    path.write_text(text.replace(old, new, 1))


def _problems(config_dir: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(config_dir)
    return caught.value.problems


MASH = "agreements/mash-referrals.toml"
WEEKLY = "agreements/missing-children-weekly.toml"
POLICE = "partners/essex-police.toml"


def test_example_config_loads() -> None:
    """The repository's example configuration is valid and complete."""
    cfg = load_config(EXAMPLE)
    assert cfg.organisation.id == "essex-cc"
    assert {"southend-uhft", "essex-police", "barnardos", "thurrock-council"} == set(cfg.partners)
    mash = cfg.agreements["mash-referrals"]
    assert mash.recipients == ("southend-uhft", "essex-police")
    assert mash.allowed_fields is not None and "referral_id" in mash.allowed_fields
    assert mash.max_size_bytes == 50 * 2**20
    weekly = cfg.agreements["missing-children-weekly"]
    assert weekly.schedule.release_windows
    assert (
        date(2027, 2, 1) + timedelta(days=28) == cfg.partners["thurrock-council"].no_new_data_from
    )


# (file, old text, new text, expected fragment of the one problem, key path it names)
REFUSALS: list[tuple[str, str, str, str]] = [
    (
        POLICE,
        "\n[keys]",
        "\nhub_access_until = 2027-06-01\n[keys]",
        "essex-police.toml: hub_access_until: only used with withdrawal_notice",
    ),
    (
        POLICE,
        'signing_key = "ed25519:nVvwO+bX4o7ukLi1mY6TDfKTl4EjGK8576Kies3CBAA="',
        'signing_key = "ed25519:AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="',
        "essex-police.toml: keys.signing_key: ed25519 public key: small-order point",
    ),
    (
        "exchange.toml",
        'host_keys = ["ssh-ed25519 AAAAC3',
        'host_keys = ["ssh-ed25519 AAAAC4',
        "exchange.toml: hub.host_keys[0]: ssh public key",
    ),
    (
        MASH,
        "purpose =",
        "purpse =",
        "mash-referrals.toml: purpse: unknown key; did you mean 'purpose'?",
    ),
    (
        MASH,
        '"essex-police"]',
        '"essex-polic"]',
        "mash-referrals.toml: recipients[1]: unknown partner 'essex-polic'",
    ),
    (
        WEEKLY,
        '"0 7 * * MON"',
        '"0 7 * * MONDAYS"',
        "missing-children-weekly.toml: schedule.cron: invalid cron expression",
    ),
    (
        WEEKLY,
        '"0 7 * * MON"',
        '"0 7 * *"',
        "schedule.cron: invalid cron expression: expected five fields",
    ),
    (
        MASH,
        "retention_days = 90",
        'retention_days = "90"',
        "mash-referrals.toml: retention_days: expected a whole number, got '90'",
    ),
    (
        MASH,
        "retention_days = 90",
        "retention_days = -5",
        "retention_days: expected a whole number of at least 1, got -5",
    ),
    (
        MASH,
        "review = 2027-03-31",
        "review = 2026-01-01",
        "mash-referrals.toml: review: 2026-01-01 is before commencement 2026-04-01",
    ),
    (
        MASH,
        "expiry = 2028-03-31",
        "expiry = 2026-03-01",
        "mash-referrals.toml: expiry: 2026-03-01 is before commencement",
    ),
    (
        MASH,
        "commencement = 2026-04-01",
        'commencement = "2026-04-01"',
        "commencement: expected a date like 2026-04-01 (no quotes)",
    ),
    (MASH, 'max_size = "50 MiB"', 'max_size = "50MB"', "max_size: expected a size like '50 MiB'"),
    (
        MASH,
        'frequency = "immediate"',
        'frequency = "fortnighly"',
        "schedule.frequency: expected one of immediate, cron, interval; got 'fortnighly'",
    ),
    (
        MASH,
        'timezone = "Europe/London"',
        'timezone = "Europe/Essex"',
        "schedule.timezone: expected an IANA time zone",
    ),
    (
        MASH,
        'acknowledgement_window = "1d"',
        'acknowledgement_window = "-1d"',
        "acknowledgement_window: expected a positive whole number",
    ),
    (
        MASH,
        'classification = "OFFICIAL-SENSITIVE"',
        'classification = "TOP"',
        "classification: expected one of OFFICIAL",
    ),
    (MASH, 'formats = ["csv"]', 'formats = ["exe"]', "formats[0]: expected one of csv"),
    (MASH, 'formats = ["csv"]', 'formats = ["json"]', "allowed_fields: only applies to CSV"),
    (
        MASH,
        '"lead_agency"]',
        '"lead_agency", "risk_level"]',
        "allowed_fields: lists risk_level more than once",
    ),
    (
        MASH,
        'recipients = ["southend-uhft", "essex-police"]',
        'recipients = ["southend-uhft", "southend-uhft"]',
        "recipients: lists a partner more than once",
    ),
    (
        MASH,
        'recipients = ["southend-uhft", "essex-police"]',
        "recipients = []",
        "recipients: expected a non-empty list",
    ),
    (
        MASH,
        'outbox = "mash-referrals"',
        'outbox = "missing-children"',
        "outbox: 'missing-children' is also the outbox of",
    ),
    (
        MASH,
        'outbox = "mash-referrals"',
        'outbox = "../etc"',
        "outbox: expected 2-31 lower-case letters",
    ),
    (
        MASH,
        'timezone = "Europe/London"',
        'timezone = "Europe/London"\ncron = "0 7 * * *"',
        'schedule.cron: only used with frequency = "cron"',
    ),
    (
        WEEKLY,
        'hours = "08:00-18:00"',
        'hours = "18:00-08:00"',
        "schedule.release_windows[0].hours: window '18:00-08:00' closes before it opens",
    ),
    (
        WEEKLY,
        'days = ["mon", "tue", "wed", "thu", "fri"]',
        'days = ["funday"]',
        "schedule.release_windows[0].days: expected weekday names",
    ),
    (
        POLICE,
        'ico_registration = "Z4883472"',
        'ico_registration = "4883472"',
        "essex-police.toml: ico_registration: expected an ICO registration",
    ),
    (
        POLICE,
        'hub_folder = "essex-police"',
        'hub_folder = "southend-uhft"',
        "hub_folder: 'southend-uhft' is already the hub folder of partner",
    ),
    (
        POLICE,
        'age_recipient = "age1',
        'age_recipient = "age2',
        "essex-police.toml: keys.age_recipient: malformed recipient",
    ),
    (
        POLICE,
        'signing_key = "ed25519:',
        'signing_key = "ed448:',
        "essex-police.toml: keys.signing_key: ed25519 public key: expected 'ed25519:<base64>'",
    ),
    (
        POLICE,
        'signing_key_fingerprint = "SHA256:G',
        'signing_key_fingerprint = "SHA256:X',
        "keys.signing_key_fingerprint: does not match signing_key",
    ),
    (
        POLICE,
        'ssh_public_key = "ssh-ed25519',
        'ssh_public_key = "ssh-dss',
        "keys.ssh_public_key: ssh public key: type 'ssh-dss' not accepted",
    ),
    (
        POLICE,
        "\n[keys]",
        '\nwithdrawal_notice = "2027-01-01"\n[keys]',
        "withdrawal_notice: expected a date",
    ),
    (
        "exchange.toml",
        "port = 22",
        "port = 70000",
        "exchange.toml: hub.port: expected a port number 1-65535",
    ),
    (
        "exchange.toml",
        'login = "essex-cc"',
        "login = true",
        "exchange.toml: hub.login: expected a string, got true",
    ),
    (
        "exchange.toml",
        "[logging]",
        "[loging]",
        "exchange.toml: loging: unknown key; did you mean 'logging'?",
    ),
    (
        "exchange.toml",
        'state = "state"',
        'state = "outbox/state"',
        "exchange.toml: folders.outbox: overlaps the state folder",
    ),
    (
        "exchange.toml",
        'level = "info"',
        'level = "verbose"',
        "logging.level: expected one of debug, info, warning, error",
    ),
    (MASH, "title =", "title = 1\ntitle =", "invalid TOML"),
]


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"), REFUSALS, ids=[r[3][:60] for r in REFUSALS]
)
def test_refusal_names_file_and_key(
    workspace: Path, file: str, old: str, new: str, expected: str
) -> None:
    """Each bad value gives one problem that names the file, the key path and what was expected."""
    _edit(workspace / file, old, new)
    problems = _problems(workspace)
    matching = [p for p in problems if expected in p]
    assert matching, f"no problem contains {expected!r}; got {problems}"


def test_all_problems_reported_at_once(workspace: Path) -> None:
    """Three problems in two files are all reported in one error."""
    _edit(workspace / MASH, "purpose =", "purpse =")
    _edit(workspace / MASH, '"essex-police"]', '"essex-polic"]')
    _edit(workspace / WEEKLY, '"0 7 * * MON"', '"0 7 * * MONDAYS"')
    problems = _problems(workspace)
    assert any("purpse" in p for p in problems)
    assert any("essex-polic'" in p for p in problems)
    assert any("schedule.cron" in p for p in problems)


def test_unknown_partner_names_the_missing_file(workspace: Path) -> None:
    """Removing a partner file makes every agreement that names it fail, pointing at the file."""
    (workspace / POLICE).unlink()
    problems = _problems(workspace)
    assert len([p for p in problems if "unknown partner 'essex-police'" in p]) == 2
    assert any("partners/essex-police.toml" in p for p in problems)


def test_missing_main_file(tmp_path: Path) -> None:
    """A folder without exchange.toml says so and how to make one."""
    (tmp_path / "config").mkdir()
    problems = _problems(tmp_path / "config")
    assert problems == [
        "config/exchange.toml: file not found; run 'exchange init' to create a workspace"
    ]


def test_not_utf8(workspace: Path) -> None:
    """A config file that is not UTF-8 is refused with the byte offset."""
    (workspace / MASH).write_bytes(b'title = "caf\xe9"\n')
    assert any("not UTF-8 text (byte 12)" in p for p in _problems(workspace))


def test_bad_file_name(workspace: Path) -> None:
    """Agreement ids come from file names, which must be safe ids."""
    shutil.copy(workspace / MASH, workspace / "agreements" / "Bad Name.toml")
    problems = _problems(workspace)
    assert any("Bad Name.toml: file name must be the agreement id" in p for p in problems)


@pytest.mark.parametrize(("text", "size"), [("1 B", 1), ("50 MiB", 50 << 20), ("2GiB", 2 << 30)])
def test_sizes(text: str, size: int) -> None:
    """Binary size units are understood."""
    assert size == parse_size(text)


def _mutations() -> st.SearchStrategy[Callable[[str], str]]:
    def replace_char(position: int, char: str) -> Callable[[str], str]:
        def apply(text: str) -> str:
            index = position % max(len(text), 1)
            return text[:index] + char + text[index + 1 :]

        return apply

    return st.builds(
        replace_char, st.integers(0, 10_000), st.sampled_from(list('="[]#\n 0aZ-.{},'))
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(mutation=_mutations())
def test_any_mutation_is_accepted_or_refused_cleanly(
    workspace: Path, mutation: Callable[[str], str]
) -> None:
    """Every one-character mutation of an agreement either loads or raises ConfigError, never anything else."""
    original = (workspace / MASH).read_text()
    try:
        (workspace / MASH).write_text(mutation(original))
        try:
            load_config(workspace)
        except ConfigError as error:
            assert error.problems and all(isinstance(p, str) and ": " in p for p in error.problems)
    finally:
        (workspace / MASH).write_text(original)


@pytest.mark.parametrize("relative", ["exchange.toml", POLICE, MASH, ".", "partners", "agreements"])
def test_writable_by_others_is_refused(workspace: Path, relative: str) -> None:
    """A config file or folder that group or others may write is refused (TESTPLAN B21)."""
    target = workspace / relative
    target.chmod(target.stat().st_mode | 0o022)
    problems = _problems(workspace)
    assert any("writable by group or others" in p and "chmod go-w" in p for p in problems), problems


def test_owned_by_another_user_is_refused(workspace: Path) -> None:
    """A partner file owned by another (non-root) user is refused, since it pins keys."""
    import os

    if os.geteuid() != 0:
        pytest.fail("this test changes file ownership and must run as root (CI does)")
    os.chown(workspace / POLICE, 65534, 65534)
    problems = _problems(workspace)
    assert any("owned by uid 65534" in p for p in problems), problems


def test_two_partners_with_one_key_are_refused(workspace: Path) -> None:
    """A key card pasted into two partner files is refused for each shared key."""
    police = (workspace / POLICE).read_text()
    southend = workspace / "partners" / "southend-uhft.toml"
    keys_block = police[police.index("\n[keys]") :]
    text = southend.read_text()
    southend.write_text(text[: text.index("\n[keys]")] + keys_block)
    problems = _problems(workspace)
    for key in ("age_recipient", "signing_key", "ssh_public_key"):
        assert any(f"keys.{key}: is also the {key} of partner" in p for p in problems), problems


def test_withdrawn_partner_keeps_hub_access_until(workspace: Path) -> None:
    """hub_access_until is read for a withdrawn partner and extends its hub login."""
    from exchange.hubconfig import login_enabled

    path = workspace / "partners" / "thurrock-council.toml"
    _edit(
        path,
        "withdrawal_notice = 2027-02-01",
        "withdrawal_notice = 2027-02-01\nhub_access_until = 2027-06-30",
    )
    partner = load_config(workspace).partners["thurrock-council"]
    assert date(2027, 6, 30) == partner.hub_access_until
    assert login_enabled(partner.withdrawal_notice, date(2027, 6, 30), partner.hub_access_until)
    assert not login_enabled(partner.withdrawal_notice, date(2027, 7, 1), partner.hub_access_until)
    assert not login_enabled(partner.withdrawal_notice, date(2027, 3, 1), None)


def test_hub_role_defaults_to_operator_and_partner_allows_one_partner(workspace: Path) -> None:
    """[hub] role is 'operator' unless set; 'partner' loads with the hub's organisation as the
    one partner, and is refused with several partners or an unknown role."""
    assert "operator" == load_config(workspace).hub.role
    main = workspace / "exchange.toml"
    _edit(main, "connect_timeout = 20", 'connect_timeout = 20\nrole = "partner"')
    problems = _problems(workspace)
    assert any("hub.role: 'partner' allows one partner" in p for p in problems), problems
    _edit(main, 'role = "partner"', 'role = "owner"')
    assert any("role: expected one of operator, partner" in p for p in _problems(workspace))
    _edit(main, 'role = "owner"', 'role = "partner"')
    for path in (workspace / "partners").glob("*.toml"):
        if path.stem != "southend-uhft":
            path.unlink()
    for path in (workspace / "agreements").glob("*.toml"):
        path.unlink()
    cfg = load_config(workspace)
    assert cfg.hub.is_partner and ["southend-uhft"] == list(cfg.partners)
