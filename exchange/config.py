"""The workspace configuration: TOML files read into frozen, validated objects.

Layout (paths relative to the workspace folder, the parent of the config folder)::

    config/exchange.toml              this organisation, its folders, its hub, logging
    config/partners/<id>.toml         one per partner organisation
    config/agreements/<id>.toml       one per data-sharing agreement (protocol §6: "the format,
                                      frequency, intervals and security ... documented and agreed")

Rules:

1. Strict: unknown keys, wrong types, unknown partner ids, overlapping outboxes, bad cron
   expressions and dates out of order are refused. Ids come from file names.
2. All problems are reported at once, each naming the file and the key path, in a single
   :class:`~exchange.errors.ConfigError`; never a traceback, never a half-valid config.
3. The objects are frozen: the daemon never runs on a config that changed under it.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from exchange import canonical, keycheck
from exchange.core.schedule import (
    CronSpec,
    Frequency,
    ReleaseWindow,
    ScheduleRule,
    ScheduleSyntaxError,
    parse_cron,
    parse_dates,
    parse_days,
    parse_duration,
    parse_hours,
)
from exchange.errors import ConfigError
from exchange.tomlread import Problems, Table

#: Ids name files, hub folders and Unix logins: lower-case, digits and dashes, 2-31 chars.
ID_PATTERN = re.compile(r"^[a-z][a-z0-9-]{1,30}$")
_ICO = re.compile(r"^(Z[0-9A-Z]{7}|ZA[0-9]{6})$")
_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")
_SIZE = re.compile(r"^([1-9][0-9]*)\s*(B|KiB|MiB|GiB|TiB)$")
_SIZE_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
_FORMATS = ("csv", "xlsx", "json", "txt", "pdf", "zip", "parquet")
_CLASSIFICATIONS = ("OFFICIAL", "OFFICIAL-SENSITIVE", "SECRET")
#: Protocol §11: a partner may withdraw with four weeks' notice.
WITHDRAWAL_NOTICE = timedelta(days=28)


@dataclass(frozen=True, slots=True)
class Organisation:
    id: str
    name: str
    ico_registration: str


@dataclass(frozen=True, slots=True)
class Folders:
    """Absolute paths of this organisation's working folders."""

    outbox: Path
    spool: Path
    quarantine: Path
    inbox: Path
    state: Path
    keys: Path


#: ``[hub] role``: whose hub we log in to (docs/hub.md, "Roles"). ``operator``: our own hub,
#: as its daemon login, whose chroot holds every partner's folder (we deliver into
#: ``<hub_folder>/inbox``). ``partner``: another organisation's hub, as the partner login it
#: gave us, whose chroot is our own folder (we deliver into ``outbox/``, and the one partner
#: configured is that organisation).
HUB_ROLES = ("operator", "partner")


@dataclass(frozen=True, slots=True)
class Hub:
    host: str
    port: int
    login: str
    host_keys: tuple[str, ...]  # pinned "ssh-ed25519 AAAA..." lines; never auto-accepted
    connect_timeout: float
    role: str = "operator"  # one of HUB_ROLES

    @property
    def is_partner(self) -> bool:
        """True when the hub is another organisation's and we are one of its partners."""
        return self.role == "partner"


@dataclass(frozen=True, slots=True)
class Logging:
    level: str
    format: str  # auto | json | console


@dataclass(frozen=True, slots=True)
class PartnerKeys:
    age_recipient: str
    signing_key: str
    signing_key_fingerprint: str
    ssh_public_key: str


@dataclass(frozen=True, slots=True)
class Partner:
    id: str
    name: str
    ico_registration: str
    contact: str
    hub_folder: str
    keys: PartnerKeys
    withdrawal_notice: date | None
    #: After a withdrawal, keep the hub login open through this date (for corrections).
    hub_access_until: date | None = None

    @property
    def no_new_data_from(self) -> date | None:
        """Protocol §11: nothing new is sent from four weeks after the withdrawal notice."""
        return (
            None if self.withdrawal_notice is None else self.withdrawal_notice + WITHDRAWAL_NOTICE
        )


@dataclass(frozen=True, slots=True)
class Agreement:
    id: str
    title: str
    purpose: str
    legal_basis: tuple[str, ...]
    data_categories: tuple[str, ...]
    classification: str
    recipients: tuple[str, ...]
    outbox: Path
    formats: tuple[str, ...]
    allowed_fields: tuple[str, ...] | None
    max_size_bytes: int
    allow_empty: bool
    schedule: ScheduleRule
    review: date
    retention_days: int
    acknowledgement_window: timedelta
    corrections: str  # "immediate" | "next-run"


@dataclass(frozen=True, slots=True)
class Config:
    root: Path
    config_dir: Path
    organisation: Organisation
    folders: Folders
    hub: Hub
    logging: Logging
    partners: Mapping[str, Partner]
    agreements: Mapping[str, Agreement]


def parse_size(text: str) -> int:
    match = _SIZE.match(text.strip())
    if not match:
        raise ValueError(
            f"expected a size like '50 MiB' (units B, KiB, MiB, GiB, TiB), got {text!r}"
        )
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


def _zone(text: str) -> str:
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"expected an IANA time zone like 'Europe/London', got {text!r}") from None
    return text


def _id(text: str) -> str:
    if not ID_PATTERN.match(text):
        raise ValueError(
            f"expected 2-31 lower-case letters, digits or dashes starting with a letter, got {text!r}"
        )
    return text


def _pattern(regex: re.Pattern[str], expected: str) -> Any:
    def check(text: str) -> str:
        if not regex.match(text):
            raise ValueError(f"expected {expected}, got {text!r}")
        return text

    return check


class _Loader:
    def __init__(self, config_dir: Path) -> None:
        self.config_dir = config_dir
        self.root = config_dir.resolve().parent
        self.problems = Problems()

    def name(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def unsafe(self, path: Path) -> bool:
        """StrictModes for configuration: it pins keys, so only its owner may change it.

        A file or folder that group or others can write, or that belongs to someone other
        than root or this user, could swap a partner's recipient or the hub's pinned host
        key (TESTPLAN B21); it is a problem, not a warning.
        """
        try:
            info = path.stat()
        except OSError:
            return False  # reported by the reader
        shown = self.name(path)
        if info.st_uid not in (0, os.geteuid()):
            self.problems.add(
                shown,
                f"owned by uid {info.st_uid}, not by root or this user (uid {os.geteuid()}); "
                f"run 'chown {os.geteuid()} {path}'",
            )
            return True
        if info.st_mode & 0o022:
            self.problems.add(
                shown,
                f"writable by group or others (mode {stat.S_IMODE(info.st_mode):04o}); "
                f"run 'chmod go-w {path}'",
            )
            return True
        return False

    def check_folders(self) -> None:
        for folder in (
            self.config_dir,
            self.config_dir / "partners",
            self.config_dir / "agreements",
        ):
            if folder.is_dir():
                self.unsafe(folder)

    def read(self, path: Path) -> Table | None:
        shown = self.name(path)
        if self.unsafe(path):
            return None
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self.problems.add(shown, "file not found; run 'exchange init' to create a workspace")
            return None
        except UnicodeDecodeError as error:
            self.problems.add(shown, f"not UTF-8 text (byte {error.start})")
            return None
        except tomllib.TOMLDecodeError as error:
            self.problems.add(shown, f"invalid TOML: {error}")
            return None
        except OSError as error:
            self.problems.add(shown, f"cannot read: {error.strerror}")
            return None
        return Table(data, shown, "", self.problems)

    def folder(self, table: Table, key: str, default: str) -> Path:
        text = table.string(key, required=False) or default
        path = Path(text)
        return path if path.is_absolute() else self.root / path

    # --- exchange.toml ---------------------------------------------------------------------

    def main(self) -> tuple[Organisation, Folders, Hub, Logging] | None:
        top = self.read(self.config_dir / "exchange.toml")
        if top is None:
            return None
        org_t = top.table("organisation")
        folders_t = top.table("folders", required=False)
        hub_t = top.table("hub")
        log_t = top.table("logging", required=False)
        top.done()
        org = hub = None
        if org_t:
            org_id = org_t.parsed("id", _id)
            org_name = org_t.string("name")
            ico = org_t.parsed(
                "ico_registration", _pattern(_ICO, "an ICO registration like Z2120726")
            )
            org_t.done()
            if org_id and org_name and ico:
                org = Organisation(org_id, org_name, ico)
        empty = Table({}, "", "", Problems())
        ft = folders_t or empty
        folders = Folders(
            outbox=self.folder(ft, "outbox", "outbox"),
            spool=self.folder(ft, "spool", "spool"),
            quarantine=self.folder(ft, "quarantine", "quarantine"),
            inbox=self.folder(ft, "inbox", "inbox"),
            state=self.folder(ft, "state", "state"),
            keys=self.folder(ft, "keys", "keys"),
        )
        ft.done()
        if hub_t:
            host = hub_t.string("host")
            port = hub_t.integer("port", minimum=1)
            if port is not None and port > 65535:
                hub_t.problem("port", f"expected a port number 1-65535, got {port}")
            login = hub_t.parsed("login", _id)
            # May be empty in a new workspace: nothing can connect until a key is pinned.
            host_keys = hub_t.strings("host_keys", non_empty=False)
            for index, line in enumerate(host_keys or []):
                error = keycheck.host_key_problem(line)
                if error:
                    hub_t.problem(f"host_keys[{index}]", error)
            timeout = hub_t.integer("connect_timeout", required=False, minimum=1)
            role = hub_t.one_of("role", HUB_ROLES, default="operator")
            hub_t.done()
            if host and port and login and host_keys is not None and role:
                hub = Hub(host, port, login, tuple(host_keys), float(timeout or 20), role)
        logging = Logging("info", "auto")
        if log_t:
            level = log_t.one_of("level", ("debug", "info", "warning", "error"), default="info")
            fmt = log_t.one_of("format", ("auto", "json", "console"), default="auto")
            log_t.done()
            logging = Logging(level or "info", fmt or "auto")
        if org and hub:
            return org, folders, hub, logging
        return None

    # --- partners --------------------------------------------------------------------------

    def partner(self, path: Path) -> Partner | None:
        table = self.read(path)
        if table is None:
            return None
        partner_id = path.stem
        if not ID_PATTERN.match(partner_id):
            self.problems.add(
                self.name(path), "file name must be the partner id (lower-case, digits, dashes)"
            )
        name = table.string("name")
        ico = table.parsed("ico_registration", _pattern(_ICO, "an ICO registration like Z1972899"))
        contact = table.parsed("contact", _pattern(_EMAIL, "a role e-mail address"))
        folder = table.parsed("hub_folder", _id)
        notice = table.date("withdrawal_notice", required=False)
        access_until = table.date("hub_access_until", required=False)
        if access_until is not None and notice is None:
            table.problem(
                "hub_access_until",
                "only used with withdrawal_notice: a partner that has not withdrawn keeps its login",
            )
        keys_t = table.table("keys")
        table.done()
        keys = None
        if keys_t:
            keys = self.partner_keys(keys_t)
            keys_t.done()
        if name and ico and contact and folder and keys:
            return Partner(partner_id, name, ico, contact, folder, keys, notice, access_until)
        return None

    def partner_keys(self, table: Table) -> PartnerKeys | None:
        values: dict[str, str] = {}
        for key, check in (
            ("age_recipient", keycheck.age_recipient_problem),
            ("signing_key", keycheck.signing_key_problem),
            ("ssh_public_key", keycheck.ssh_public_key_problem),
        ):
            text = table.string(key)
            if text is None:
                continue
            problem = check(text)
            if problem:
                table.problem(key, problem)
            else:
                values[key] = text
        pinned = table.string("signing_key_fingerprint")
        if pinned is not None and "signing_key" in values:
            actual = keycheck.signing_fingerprint(values["signing_key"])
            if pinned != actual:
                table.problem(
                    "signing_key_fingerprint",
                    f"does not match signing_key (the key's fingerprint is {actual}); "
                    "confirm the key with the partner out of band before changing either",
                )
                return None
        if pinned is None or len(values) != 3:
            return None
        return PartnerKeys(
            values["age_recipient"], values["signing_key"], pinned, values["ssh_public_key"]
        )

    # --- agreements ------------------------------------------------------------------------

    def agreement(self, path: Path, outbox_root: Path, partner_ids: set[str]) -> Agreement | None:
        table = self.read(path)
        if table is None:
            return None
        agreement_id = path.stem
        if not ID_PATTERN.match(agreement_id):
            self.problems.add(
                self.name(path), "file name must be the agreement id (lower-case, digits, dashes)"
            )
        title = table.string("title")
        purpose = table.string("purpose")
        legal_basis = table.strings("legal_basis")
        categories = table.strings("data_categories")
        classification = table.one_of("classification", _CLASSIFICATIONS)
        # Every manifest carries these verbatim (FORMAT.md §4.2): what its text rules refuse
        # is refused here, not at each delivery.
        for key, value, cap in (
            ("purpose", purpose, canonical.TEXT_MAX),
            ("legal_basis", "; ".join(legal_basis) if legal_basis else None, canonical.TEXT_MAX),
            ("classification", classification, canonical.CLASSIFICATION_MAX),
        ):
            if value:
                try:
                    canonical.check_text(key, value, cap)
                except ValueError as error:
                    detail = str(error).removeprefix(f"{key}: ")
                    table.problem(key, f"cannot go into a manifest (FORMAT.md §4.2): {detail}")
        recipients = table.strings("recipients")
        for index, recipient in enumerate(recipients or []):
            if recipient not in partner_ids:
                known = ", ".join(sorted(partner_ids)) or "none configured"
                table.problem(
                    f"recipients[{index}]",
                    f"unknown partner {recipient!r}; expected a file "
                    f"{self.name(self.config_dir / 'partners' / f'{recipient}.toml')} "
                    f"(known partners: {known})",
                )
        if recipients and len(set(recipients)) != len(recipients):
            table.problem("recipients", "lists a partner more than once")
        outbox_name = table.parsed("outbox", _id)
        formats = table.strings("formats")
        for index, fmt in enumerate(formats or []):
            if fmt not in _FORMATS:
                table.problem(
                    f"formats[{index}]", f"expected one of {', '.join(_FORMATS)}; got {fmt!r}"
                )
        fields = table.strings("allowed_fields", required=False)
        if fields is not None:
            if formats is not None and "csv" not in formats:
                table.problem(
                    "allowed_fields", "only applies to CSV; add 'csv' to formats or remove it"
                )
            duplicates = sorted({f for f in fields if fields.count(f) > 1})
            if duplicates:
                table.problem("allowed_fields", f"lists {', '.join(duplicates)} more than once")
        max_size = table.parsed("max_size", parse_size)
        allow_empty = table.boolean("allow_empty", default=False)
        schedule_t = table.table("schedule")
        commencement = table.date("commencement")
        review = table.date("review")
        expiry = table.date("expiry")
        retention = table.integer("retention_days", minimum=1)
        ack = table.parsed("acknowledgement_window", parse_duration_value)
        corrections = table.one_of("corrections", ("immediate", "next-run"), default="immediate")
        table.done()
        if commencement and review and review < commencement:
            table.problem("review", f"{review} is before commencement {commencement}")
        if commencement and expiry and expiry < commencement:
            table.problem("expiry", f"{expiry} is before commencement {commencement}")
        if review and expiry and review > expiry:
            table.problem(
                "review", f"{review} is after expiry {expiry}; review before the agreement ends"
            )
        schedule = None
        if schedule_t and commencement and expiry:
            schedule = self.schedule(schedule_t, commencement, expiry)
        if not (
            title
            and purpose
            and legal_basis
            and categories
            and classification
            and recipients
            and outbox_name
            and formats
            and max_size
            and allow_empty is not None
            and schedule
            and review
            and retention
            and ack
            and corrections
        ):
            return None
        return Agreement(
            id=agreement_id,
            title=title,
            purpose=purpose,
            legal_basis=tuple(legal_basis),
            data_categories=tuple(categories),
            classification=classification,
            recipients=tuple(recipients),
            outbox=outbox_root / outbox_name,
            formats=tuple(formats),
            allowed_fields=tuple(fields) if fields is not None else None,
            max_size_bytes=max_size,
            allow_empty=allow_empty,
            schedule=schedule,
            review=review,
            retention_days=retention,
            acknowledgement_window=ack,
            corrections=corrections,
        )

    def schedule(self, table: Table, commencement: date, expiry: date) -> ScheduleRule | None:
        frequency = table.one_of("frequency", tuple(f.value for f in Frequency))
        zone = table.parsed("timezone", _zone, required=False) or "Europe/London"
        cron: CronSpec | None = None
        every: timedelta | None = None
        if frequency == Frequency.CRON.value:
            cron = table.parsed("cron", _cron)
        elif table.has("cron"):
            table.string("cron")
            table.problem("cron", f'only used with frequency = "cron", not {frequency!r}')
        if frequency == Frequency.INTERVAL.value:
            every = table.parsed("every", parse_duration_value)
        elif table.has("every"):
            table.string("every")
            table.problem("every", f'only used with frequency = "interval", not {frequency!r}')
        windows = []
        for window_t in table.tables("release_windows"):
            window = self.window(window_t)
            window_t.done()
            if window:
                windows.append(window)
        table.done()
        if frequency is None or (frequency == "cron" and cron is None):
            return None
        if frequency == "interval" and every is None:
            return None
        return ScheduleRule(
            Frequency(frequency), zone, cron, every, tuple(windows), commencement, expiry
        )

    def window(self, table: Table) -> ReleaseWindow | None:
        dates = table.parsed("dates", _dates, required=False)
        days_list = table.strings("days", required=False)
        hours = table.parsed("hours", _hours, required=False)
        days = None
        if days_list is not None:
            try:
                days = parse_days(days_list)
            except ScheduleSyntaxError as error:
                table.problem("days", str(error))
                return None
        if dates is None and days is None and hours is None:
            if not any(table.has(k) for k in ("dates", "days", "hours")):
                table.problem(None, "a release window needs at least one of dates, days, hours")
            return None
        return ReleaseWindow(dates, days, hours)

    # --- the whole workspace ---------------------------------------------------------------

    def load(self) -> Config:
        self.check_folders()
        main = self.main()
        partners: dict[str, Partner] = {}
        for path in sorted((self.config_dir / "partners").glob("*.toml")):
            partner = self.partner(path)
            if partner:
                partners[partner.id] = partner
        partner_ids = {p.stem for p in (self.config_dir / "partners").glob("*.toml")}
        folders = main[1] if main else None
        outbox_root = folders.outbox if folders else self.root / "outbox"
        agreements: dict[str, Agreement] = {}
        for path in sorted((self.config_dir / "agreements").glob("*.toml")):
            agreement = self.agreement(path, outbox_root, partner_ids)
            if agreement:
                agreements[agreement.id] = agreement
        self.cross_checks(main, partners, agreements)
        if self.problems or main is None:
            raise ConfigError(self.problems.items or ["config: could not be loaded"])
        org, folders_v, hub, logging = main
        return Config(
            root=self.root,
            config_dir=self.config_dir,
            organisation=org,
            folders=folders_v,
            hub=hub,
            logging=logging,
            partners=MappingProxyType(partners),
            agreements=MappingProxyType(agreements),
        )

    def cross_checks(
        self,
        main: tuple[Organisation, Folders, Hub, Logging] | None,
        partners: Mapping[str, Partner],
        agreements: Mapping[str, Agreement],
    ) -> None:
        folders_seen: dict[str, str] = {}
        keys_seen: dict[tuple[str, str], str] = {}
        for partner in partners.values():
            # One key per organisation: a shared key would let one partner read, sign or log in
            # as another (a copy-paste of the wrong key card is the usual cause).
            for key_name, value in (
                ("age_recipient", partner.keys.age_recipient),
                ("signing_key", partner.keys.signing_key),
                ("ssh_public_key", " ".join(partner.keys.ssh_public_key.split()[:2])),
            ):
                holder = keys_seen.setdefault((key_name, value), partner.id)
                if holder != partner.id:
                    self.problems.add(
                        f"{self.name(self.config_dir / 'partners' / f'{partner.id}.toml')}: keys.{key_name}",
                        f"is also the {key_name} of partner {holder!r}; each organisation must have "
                        "its own keys (check that the right key card was pasted)",
                    )
            other = folders_seen.setdefault(partner.hub_folder, partner.id)
            if other != partner.id:
                self.problems.add(
                    f"{self.name(self.config_dir / 'partners' / f'{partner.id}.toml')}: hub_folder",
                    f"{partner.hub_folder!r} is already the hub folder of partner {other!r}",
                )
            if main and partner.id == main[0].id:
                self.problems.add(
                    self.name(self.config_dir / "partners" / f"{partner.id}.toml"),
                    "a partner cannot have this organisation's own id",
                )
        if main and main[2].is_partner and len(partners) > 1:
            # A partner login sees only its own folder: everything we deliver goes to its
            # outbox/, which only the hub's organisation reads.
            self.problems.add(
                f"{self.name(self.config_dir / 'exchange.toml')}: hub.role",
                f"'partner' allows one partner (the hub's organisation), found {len(partners)}: "
                f"{', '.join(sorted(partners))}",
            )
        outboxes: dict[Path, str] = {}
        for agreement in agreements.values():
            where = f"{self.name(self.config_dir / 'agreements' / f'{agreement.id}.toml')}: outbox"
            for path, owner in outboxes.items():
                if path == agreement.outbox:
                    self.problems.add(
                        where, f"{agreement.outbox.name!r} is also the outbox of {owner!r}"
                    )
            outboxes[agreement.outbox] = agreement.id
        if main:
            folders = main[1]
            for name in ("spool", "quarantine", "inbox", "state", "keys"):
                other_path: Path = getattr(folders, name)
                if _inside(other_path, folders.outbox) or _inside(folders.outbox, other_path):
                    self.problems.add(
                        f"{self.name(self.config_dir / 'exchange.toml')}: folders.outbox",
                        f"overlaps the {name} folder; outboxes must be separate from it",
                    )


def parse_duration_value(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ScheduleSyntaxError as error:
        raise ValueError(str(error)) from None


def _cron(text: str) -> CronSpec:
    try:
        return parse_cron(text)
    except ScheduleSyntaxError as error:
        raise ValueError(f"invalid cron expression: {error}") from None


def _dates(text: str) -> tuple[tuple[int, int], tuple[int, int]]:
    try:
        return parse_dates(text)
    except ScheduleSyntaxError as error:
        raise ValueError(str(error)) from None


def _hours(text: str) -> Any:
    try:
        return parse_hours(text)
    except ScheduleSyntaxError as error:
        raise ValueError(str(error)) from None


def _inside(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def load_config(config_dir: Path) -> Config:
    """Load and validate the whole workspace configuration, or raise one ConfigError."""
    return _Loader(config_dir).load()
