"""Operations behind the commands, as functions that return data and never print.

Rule: the CLI renders what these return; tests call them directly or through the CLI.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from exchange import config as config_mod
from exchange import keys as keys_mod
from exchange.config import Config
from exchange.core.schedule import next_run
from exchange.errors import ExchangeError, UsageError

#: Folders of a workspace and their modes: plaintext and keys are for the service user only.
WORKSPACE_FOLDERS = {
    "config": 0o755,
    "config/partners": 0o755,
    "config/agreements": 0o755,
    "keys": 0o700,
    "outbox": 0o750,
    "spool": 0o700,
    "quarantine": 0o700,
    "inbox": 0o700,
    "state": 0o700,
}


def toml_string(value: str) -> str:
    """A TOML basic string (JSON's escapes are valid TOML for every string we write)."""
    return json.dumps(value, ensure_ascii=False)


def init_workspace(
    folder: Path,
    *,
    org_id: str,
    org_name: str,
    ico: str,
    hub_host: str,
    hub_port: int,
    template: str,
    keys_readme: str,
) -> Path:
    """Create a workspace with this organisation's config and the folders it needs."""
    if not config_mod.ID_PATTERN.match(org_id):
        raise UsageError(
            f"--org-id {org_id!r}: expected 2-31 lower-case letters, digits or dashes",
            hint="use a short id like 'essex-cc'; partners see it in manifests",
        )
    if not 1 <= hub_port <= 65535:
        raise UsageError(f"--hub-port {hub_port}: expected a port number 1-65535")
    main_file = folder / "config" / "exchange.toml"
    if main_file.exists():
        raise UsageError(
            f"{main_file}: a workspace already exists here",
            hint="choose an empty folder, or edit the existing configuration",
        )
    for name, mode in WORKSPACE_FOLDERS.items():
        path = folder / name
        path.mkdir(mode=mode, parents=True, exist_ok=True)
        path.chmod(mode)
    text = template
    for key, value in {
        "{org_id}": org_id,
        '"{org_name}"': toml_string(org_name),
        '"{ico}"': toml_string(ico),
        '"{hub_host}"': toml_string(hub_host),
        "{hub_port}": str(hub_port),
    }.items():
        text = text.replace(key, value)
    main_file.write_text(text, encoding="utf-8")
    (folder / "keys" / "README.md").write_text(keys_readme, encoding="utf-8")
    return folder.resolve()


@dataclass(frozen=True, slots=True)
class AgreementSummary:
    id: str
    title: str
    recipients: tuple[str, ...]
    frequency: str
    next_run: datetime | None


@dataclass(frozen=True, slots=True)
class ConfigReport:
    organisation: str
    organisation_name: str
    partners: int
    agreements: tuple[AgreementSummary, ...]
    keys_ok: bool
    warnings: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "organisation": self.organisation,
            "organisation_name": self.organisation_name,
            "partners": self.partners,
            "keys_ok": self.keys_ok,
            "warnings": list(self.warnings),
            "agreements": [
                {
                    "id": a.id,
                    "title": a.title,
                    "recipients": list(a.recipients),
                    "frequency": a.frequency,
                    "next_run": a.next_run.isoformat() if a.next_run else None,
                }
                for a in self.agreements
            ],
        }


def config_warnings(cfg: Config, today: date) -> list[str]:
    """Things that are valid but need someone's attention."""
    warnings = []
    if not cfg.hub.host_keys:
        warnings.append(
            "config/exchange.toml: hub.host_keys: no hub host key pinned yet; nothing will be "
            "sent until one is (confirm its fingerprint with the hub's operator)"
        )
    for partner in cfg.partners.values():
        stop = partner.no_new_data_from
        if stop is not None:
            tense = "stopped" if stop <= today else "stop"
            warnings.append(
                f"partner {partner.id}: withdrawal notice given; new datasets {tense} on {stop} "
                "(corrections still reach its hub folder)"
            )
            access = partner.hub_access_until
            if stop <= today and (access is None or access < today):
                warnings.append(
                    f"partner {partner.id}: its hub login is disabled; to let it pull a correction, "
                    "set hub_access_until in its partner file and re-run 'exchange hub provision'"
                )
    for agreement in cfg.agreements.values():
        if agreement.review <= today:
            warnings.append(f"agreement {agreement.id}: review date {agreement.review} has passed")
        if agreement.schedule.expiry < today:
            warnings.append(f"agreement {agreement.id}: expired on {agreement.schedule.expiry}")
    return warnings


def check_config(config_dir: Path, now: datetime) -> ConfigReport:
    """Load and validate the configuration (raises ConfigError) and summarise it."""
    cfg = config_mod.load_config(config_dir)
    warnings = config_warnings(cfg, now.date())
    keys_ok = True
    try:
        keys_mod.key_card(keys_mod.KeyPaths(cfg.folders.keys), cfg.organisation.id)
    except ExchangeError as error:
        keys_ok = False
        warnings.append(f"keys: {error.message}" + (f" ({error.hint})" if error.hint else ""))
    summaries = tuple(
        AgreementSummary(
            id=a.id,
            title=a.title,
            recipients=a.recipients,
            frequency=a.schedule.describe(),
            next_run=next_run(a.schedule, now),
        )
        for a in cfg.agreements.values()
    )
    return ConfigReport(
        organisation=cfg.organisation.id,
        organisation_name=cfg.organisation.name,
        partners=len(cfg.partners),
        agreements=summaries,
        keys_ok=keys_ok,
        warnings=tuple(warnings),
    )
