"""Pure parts of exchange.hubconfig: validation, rendering, the directory plan, dates."""

from __future__ import annotations

import base64
from datetime import date
from pathlib import Path

import pytest

from exchange import hubconfig
from exchange.errors import ConfigError
from exchange.hubconfig import AccountKind, HubAccount, HubSpec
from exchange.hubconfig.run import _syslog_message

KEY_BLOB = base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + b"\x11" * 32).decode()
KEY = f"ssh-ed25519 {KEY_BLOB} alice@southend.example"
ROOT = Path("/srv/exchange-hub")


def _spec(*partners: HubAccount, daemons: int = 1) -> HubSpec:
    daemon = [HubAccount("essex-cc", "", (KEY,), kind=AccountKind.DAEMON)] * daemons
    return HubSpec(root=ROOT, accounts=(*daemon, *partners), listen=("127.0.0.1", 2222))


SOUTHEND = HubAccount("southend-uhft", "southend-uhft", (KEY,))
POLICE = HubAccount("essex-police", "essex-police", (KEY,), enabled=False)


class TestValidation:
    def test_good_spec_passes(self) -> None:
        """A spec with one daemon and well-formed partners validates."""
        hubconfig.validate_spec(_spec(SOUTHEND, POLICE))

    @pytest.mark.parametrize(
        ("account", "problem"),
        [
            (HubAccount("Southend", "southend", (KEY,)), "expected 2-32 of a-z"),
            (HubAccount("root", "root", (KEY,)), "expected 2-32 of a-z"),
            (HubAccount("a" * 33, "a", (KEY,)), "expected 2-32 of a-z"),
            (HubAccount("thurrock", "../etc", (KEY,)), "not a safe folder name"),
            (HubAccount("thurrock", "essex-cc/x", (KEY,)), "not a safe folder name"),
            (HubAccount("thurrock", "t", (KEY + "\nssh-ed25519 AAAA evil",)), "expected one line"),
            (HubAccount("thurrock", "thurrock", ("ssh-rsa AAAAB3Nza",)), "key type 'ssh-rsa'"),
            (HubAccount("thurrock", "thurrock", ("ssh-ed25519 !!!",)), "not valid base64"),
            (
                HubAccount("thurrock", "thurrock", ('command="sh" ' + KEY,)),
                "key type 'command=\"sh\"'",
            ),
            (
                HubAccount(
                    "thurrock", "thurrock", ("ssh-ed25519 " + base64.b64encode(b"xx").decode(),)
                ),
                "does not hold a ssh-ed25519 key",
            ),
        ],
    )
    def test_bad_account_is_refused(self, account: HubAccount, problem: str) -> None:
        """Logins, folders and keys that could subvert the rendered files are refused."""
        with pytest.raises(ConfigError) as caught:
            hubconfig.validate_spec(_spec(SOUTHEND, account))

        assert any(problem in line for line in caught.value.problems), caught.value.problems

    def test_duplicates_and_daemon_count_are_all_reported(self) -> None:
        """Every problem is reported at once: duplicate login, duplicate folder, two daemons."""
        twin = HubAccount("southend-uhft", "southend-uhft", (KEY,))

        with pytest.raises(ConfigError) as caught:
            hubconfig.validate_spec(_spec(SOUTHEND, twin, daemons=2))

        problems = "\n".join(caught.value.problems)
        assert "duplicate login" in problems
        assert "used twice" in problems
        assert "2 daemon logins" in problems


class TestRendering:
    def test_authorized_keys_restrict_every_key_and_drop_comments(self) -> None:
        """Each key is prefixed with 'restrict'; the free-text comment is replaced by ours."""
        text = hubconfig.render_authorized_keys(SOUTHEND)

        assert text.splitlines()[1:] == [f"restrict ssh-ed25519 {KEY_BLOB} exchange:southend-uhft"]
        assert "alice" not in text

    def test_disabled_account_has_no_keys(self) -> None:
        """A withdrawn login's authorized_keys holds comments only."""
        text = hubconfig.render_authorized_keys(POLICE)

        assert all(line.startswith("#") for line in text.splitlines())

    def test_sshd_config_has_a_match_block_per_login(self) -> None:
        """The standalone config chroots every login and forces internal-sftp without links."""
        text = hubconfig.render_sshd_config(_spec(SOUTHEND, POLICE))

        assert "ListenAddress 127.0.0.1:2222" in text
        assert "AllowUsers essex-cc southend-uhft\n" in text
        assert "DenyUsers essex-police\n" in text
        assert (
            "Match User southend-uhft\n    ChrootDirectory /srv/exchange-hub/data/southend-uhft\n"
            in text
        )
        assert "Match User essex-cc\n    ChrootDirectory /srv/exchange-hub/data\n" in text
        assert text.count("ForceCommand internal-sftp -d / -P symlink,hardlink") == 3

    def test_config_names_no_weak_algorithm(self) -> None:
        """No CBC, no SHA-1 and no non-AEAD cipher anywhere in the rendered files."""
        spec = _spec(SOUTHEND)
        for text in (hubconfig.render_sshd_config(spec), hubconfig.render_drop_in(spec)):
            assert "cbc" not in text
            assert "sha1" not in text
            assert "-ctr" not in text

    def test_ipv6_listen_address_is_bracketed(self) -> None:
        """An IPv6 listen address renders as [addr]:port."""
        spec = HubSpec(root=ROOT, accounts=_spec(SOUTHEND).accounts, listen=("::1", 2222))

        assert "ListenAddress [::1]:2222\n" in hubconfig.render_sshd_config(spec)

    def test_drop_in_only_matches_hub_logins(self) -> None:
        """The drop-in sets nothing but algorithms outside Match blocks and ends with 'Match all'."""
        lines = hubconfig.render_drop_in(_spec(SOUTHEND, POLICE)).splitlines()
        first_match = next(i for i, line in enumerate(lines) if line.startswith("Match"))

        globals_ = [line.split()[0] for line in lines[:first_match] if line and line[0] != "#"]
        assert globals_ == ["KexAlgorithms", "Ciphers", "MACs"]
        assert lines[-1] == "Match all"
        assert "Match User essex-police\n    PubkeyAuthentication no" in "\n".join(lines)

    def test_no_enabled_login_renders_a_valid_allow_list(self) -> None:
        """With every login disabled, AllowUsers matches nobody rather than being empty."""
        daemon = HubAccount("essex-cc", "", (KEY,), enabled=False, kind=AccountKind.DAEMON)
        spec = HubSpec(root=ROOT, accounts=(daemon,))

        assert "AllowUsers nobody@none.invalid\n" in hubconfig.render_sshd_config(spec)


class TestDirectoryPlan:
    def test_partner_folder_modes(self) -> None:
        """Chroot root:partner 0750, inbox daemon-owned 2750, outbox and receipts partner 2770."""
        plan = {
            e.path: (e.owner, e.group, e.mode) for e in hubconfig.directory_plan(_spec(SOUTHEND))
        }
        folder = ROOT / "data" / "southend-uhft"

        assert plan[ROOT / "data"] == ("root", "root", 0o755)
        assert plan[folder] == ("root", "southend-uhft", 0o750)
        assert plan[folder / "inbox"] == ("essex-cc", "southend-uhft", 0o2750)
        assert plan[folder / "outbox"] == ("southend-uhft", "southend-uhft", 0o2770)
        assert plan[folder / "receipts"] == ("southend-uhft", "southend-uhft", 0o2770)

    def test_parents_come_first(self) -> None:
        """Every directory's parent is created before it."""
        paths = [e.path for e in hubconfig.directory_plan(_spec(SOUTHEND, POLICE))]

        for index, path in enumerate(paths[1:], start=1):
            assert path.parent in paths[:index]


class TestWithdrawal:
    @pytest.mark.parametrize(
        ("notice", "today", "enabled"),
        [
            (None, date(2026, 11, 25), True),
            (date(2026, 11, 1), date(2026, 11, 28), True),
            (date(2026, 11, 1), date(2026, 11, 29), False),
            (date(2026, 11, 1), date(2027, 1, 1), False),
        ],
    )
    def test_login_disabled_28_days_after_notice(
        self, notice: date | None, today: date, enabled: bool
    ) -> None:
        """Protocol §11: the login works until notice + 28 days and is disabled from that day."""
        assert hubconfig.login_enabled(notice, today) is enabled


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("127.0.0.1:2222", ("127.0.0.1", 2222)),
        ("[::1]:22", ("::1", 22)),
        ("hub.example:22", ("hub.example", 22)),
    ],
)
def test_parse_listen(text: str, parsed: tuple[str, int]) -> None:
    """ADDR:PORT and [V6]:PORT parse into address and port."""
    assert hubconfig.parse_listen(text) == parsed


@pytest.mark.parametrize("text", ["127.0.0.1", ":22", "127.0.0.1:0", "127.0.0.1:70000", "::1:22"])
def test_parse_listen_refuses(text: str) -> None:
    """A listen address without a valid port or with a bare IPv6 address is refused."""
    with pytest.raises(ValueError, match=r"expected ADDR:PORT|out of range"):
        hubconfig.parse_listen(text)


def test_links_allowed_only_drops_the_link_denials() -> None:
    """links_denied=False (negative control) removes symlink/hardlink from -P and nothing else."""
    spec = HubSpec(root=ROOT, accounts=_spec(SOUTHEND).accounts, links_denied=False)

    text = hubconfig.render_sshd_config(spec)

    assert "ForceCommand internal-sftp -d / -P setstat,fsetstat,lsetstat -u 0027" in text
    assert "ForceCommand internal-sftp -d / -u 0027 -l INFO" in text
    assert "symlink" not in text.split("Match", 1)[1]


@pytest.mark.parametrize(
    ("datagram", "line"),
    [
        (
            b'<134>Nov 25 11:04:01 internal-sftp[42]: open "/inbox/a" flags READ mode 0666',
            'internal-sftp[42]: open "/inbox/a" flags READ mode 0666',
        ),
        (b"<134>internal-sftp[7]: close\n\x00", "internal-sftp[7]: close"),
        (
            b'<134>internal-sftp[7]: remove name "/outbox/x\ny"',
            'internal-sftp[7]: remove name "/outbox/x\\x0ay"',
        ),
        (b"no priority \xff", "no priority \\xff"),
    ],
)
def test_syslog_datagrams_become_one_safe_line(datagram: bytes, line: str) -> None:
    """Relayed sftp log lines lose the syslog header and never carry control characters."""
    assert _syslog_message(datagram) == line
