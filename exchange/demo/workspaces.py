"""Build complete workspaces for several organisations that know each other's key cards.

Used by ``exchange demo`` and by the tests: everything goes through the same functions an
operator's commands use (``ops.init_workspace``, ``keys.generate``, ``keys.key_card``), and
the TOML written is what an operator would write by hand, so ``load_config`` checks it.

Rules: example data only (organisations from the protocol's signatory list, ``.example``
addresses); files are written with the modes ``exchange init`` uses.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import date, datetime
from importlib import resources
from pathlib import Path

from exchange import keys as keys_mod
from exchange import ops
from exchange.config import Config, load_config
from exchange.keys import KeyCard, KeyPaths

__all__ = [
    "ESSEX_CC",
    "ESSEX_POLICE",
    "SOUTHEND",
    "Org",
    "Workspace",
    "create_workspace",
]


@dataclass(frozen=True, slots=True)
class Org:
    id: str
    name: str
    ico: str
    contact: str


ESSEX_CC = Org(
    "essex-cc", "Essex County Council", "Z2120726", "information-governance@essex-cc.example"
)
SOUTHEND = Org(
    "southend-uhft",
    "Southend University Hospital NHS Foundation Trust",
    "Z1972899",
    "safeguarding-data@southend-uhft.example",
)
ESSEX_POLICE = Org("essex-police", "Essex Police", "Z4883472", "mash-data@essex-police.example")


def _q(value: str) -> str:
    return ops.toml_string(value)


@dataclass(frozen=True, slots=True)
class Workspace:
    """One organisation's workspace folder."""

    folder: Path
    org: Org

    @property
    def config_dir(self) -> Path:
        return self.folder / "config"

    @property
    def key_paths(self) -> KeyPaths:
        return KeyPaths(self.folder / "keys")

    def config(self) -> Config:
        return load_config(self.config_dir)

    def card(self) -> KeyCard:
        return keys_mod.key_card(self.key_paths, self.org.id)

    def add_partner(self, partner: Workspace, *, hub_folder: str | None = None) -> None:
        """Write ``config/partners/<id>.toml`` from the partner's key card."""
        card = partner.card()
        text = (
            f"name = {_q(partner.org.name)}\n"
            f"ico_registration = {_q(partner.org.ico)}\n"
            f"contact = {_q(partner.org.contact)}\n"
            f"hub_folder = {_q(hub_folder or partner.org.id)}\n\n"
            "[keys]\n"
            f"age_recipient = {_q(card.age_recipient)}\n"
            f"signing_key = {_q(card.signing_key)}\n"
            f"signing_key_fingerprint = {_q(card.signing_key_fingerprint)}\n"
            f"ssh_public_key = {_q(card.ssh_public_key)}\n"
        )
        (self.config_dir / "partners" / f"{partner.org.id}.toml").write_text(text, "utf-8")

    def add_agreement(
        self,
        agreement_id: str,
        recipients: tuple[str, ...],
        *,
        title: str = "MASH referrals to health and police partners",
        purpose: str = "Protect children and adults at risk by sharing new safeguarding "
        "referrals with the MASH partners (protocol §2).",
        legal_basis: tuple[str, ...] = (
            "Children Act 2004, s.11",
            "UK GDPR Article 6(1)(e); Article 9(2)(g), DPA 2018 Sch.1 para 18",
        ),
        allowed_fields: tuple[str, ...] | None = None,
        acknowledgement_window: str = "1d",
        commencement: date = date(2026, 4, 1),
    ) -> Path:
        """Write ``config/agreements/<id>.toml`` (immediate schedule) and make its outbox."""
        fields = ""
        if allowed_fields is not None:
            fields = f"allowed_fields = [{', '.join(_q(f) for f in allowed_fields)}]\n"
        text = (
            f"title = {_q(title)}\n"
            f"purpose = {_q(purpose)}\n"
            f"legal_basis = [{', '.join(_q(b) for b in legal_basis)}]\n"
            'data_categories = ["referral details", "safeguarding concern"]\n'
            'classification = "OFFICIAL-SENSITIVE"\n'
            f"recipients = [{', '.join(_q(r) for r in recipients)}]\n"
            f"outbox = {_q(agreement_id)}\n"
            'formats = ["csv"]\n'
            f"{fields}"
            'max_size = "50 MiB"\n'
            f"commencement = {commencement.isoformat()}\n"
            f"review = {date(commencement.year + 1, 3, 31).isoformat()}\n"
            f"expiry = {date(commencement.year + 2, 3, 31).isoformat()}\n"
            "retention_days = 90\n"
            f"acknowledgement_window = {_q(acknowledgement_window)}\n\n"
            "[schedule]\n"
            'frequency = "immediate"\n'
            'timezone = "Europe/London"\n'
        )
        (self.config_dir / "agreements" / f"{agreement_id}.toml").write_text(text, "utf-8")
        outbox = self.folder / "outbox" / agreement_id
        outbox.mkdir(mode=0o750, parents=True, exist_ok=True)
        return outbox

    def pin_hub(self, host: str, port: int, login: str, host_keys: list[str]) -> None:
        """Point ``[hub]`` at a running hub and pin its host keys."""
        path = self.config_dir / "exchange.toml"
        lines = path.read_text("utf-8").splitlines()
        out: list[str] = []
        section = ""
        for line in lines:
            stripped = line.strip()
            if stripped.startswith("["):
                section = stripped
            if section == "[hub]" and "=" in stripped and not stripped.startswith("#"):
                key = stripped.split("=", 1)[0].strip()
                value = {
                    "host": _q(host),
                    "port": str(port),
                    "login": _q(login),
                    "host_keys": f"[{', '.join(_q(k) for k in host_keys)}]",
                }.get(key)
                if value is not None:
                    line = f"{key} = {value}"
            out.append(line)
        path.write_text("\n".join(out) + "\n", "utf-8")

    def use_ssh_key(self, private_key: Path, public_line: str) -> None:
        """Replace our hub SSH key pair (tests: the harness made the hub's login keys)."""
        paths = self.key_paths
        shutil.copyfile(private_key, paths.ssh_key)
        paths.ssh_key.chmod(0o600)
        paths.ssh_public_key.write_text(public_line.strip() + "\n", "ascii")


def create_workspace(folder: Path, org: Org, *, now: datetime, hub_port: int = 22) -> Workspace:
    """``exchange init`` + ``exchange keys generate`` for ``org`` in ``folder``."""
    data = resources.files("exchange.data")
    ops.init_workspace(
        folder,
        org_id=org.id,
        org_name=org.name,
        ico=org.ico,
        hub_host="127.0.0.1",
        hub_port=hub_port,
        template=data.joinpath("exchange.toml.template").read_text("utf-8"),
        keys_readme=data.joinpath("keys-README.md").read_text("utf-8"),
    )
    keys_mod.generate(folder / "keys", org.id, now=now)
    return Workspace(folder, org)
