"""``exchange hub provision`` and ``exchange hub run``: the OpenSSH hub (docs/hub.md).

Rules:

1. The partner registry (``config/partners/*.toml``) and this organisation's hub SSH key
   (``keys/hub-ssh-ed25519.pub``) are turned into plain :class:`~exchange.hubconfig.HubSpec`
   values here; :mod:`exchange.hubconfig` never reads our configuration.
2. A partner's login is disabled from its withdrawal notice + 28 days (protocol §11); its
   folder stays.
3. ``hub run`` refuses to start unless it is root and ``/usr/sbin/sshd`` exists, prints the host
   key fingerprints partners pin, and ends with exit 0 when stopped by SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

from exchange import hubconfig
from exchange.commands._common import add_command, config_dir, out
from exchange.config import Config, load_config
from exchange.errors import NotFoundError, UsageError
from exchange.hubconfig import AccountKind, HubAccount, HubSpec

DEFAULT_ROOT = Path("/srv/exchange-hub")
HUB_PUBLIC_KEY = "hub-ssh-ed25519.pub"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("hub", help="provision or run the OpenSSH hub")
    group = parser.add_subparsers(dest="hub_command", metavar="ACTION", required=True)
    provision = add_command(
        group, "provision", "build the hub tree, Unix logins and sshd config from the registry"
    )
    _root_option(provision)
    provision.set_defaults(handler=run_provision)
    run = add_command(group, "run", "run a dedicated OpenSSH sshd for the hub in the foreground")
    run.add_argument(
        "--listen", required=True, metavar="ADDR:PORT", help="address to listen on, e.g. 0.0.0.0:22"
    )
    _root_option(run)
    run.set_defaults(handler=run_hub)


def _root_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        type=Path,
        default=DEFAULT_ROOT,
        metavar="DIR",
        help=f"hub folder (default: {DEFAULT_ROOT}); it and its parents must be root-owned",
    )


def spec_from_config(
    cfg: Config,
    root: Path,
    today: date,
    listen: tuple[str, int] = ("0.0.0.0", 22),  # noqa: S104
) -> HubSpec:
    """The hub for ``cfg``: our daemon login plus one login and folder per partner."""
    key_file = cfg.folders.keys / HUB_PUBLIC_KEY
    try:
        own_key = key_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise NotFoundError(
            f"{key_file}: this organisation's hub SSH public key is missing",
            hint="run 'exchange keys generate' in the workspace first",
        ) from None
    accounts = [HubAccount(cfg.hub.login, "", (own_key,), kind=AccountKind.DAEMON)]
    for partner in sorted(cfg.partners.values(), key=lambda p: p.hub_folder):
        accounts.append(
            HubAccount(
                login=partner.hub_folder,
                folder=partner.hub_folder,
                ssh_public_keys=(partner.keys.ssh_public_key,),
                enabled=hubconfig.login_enabled(
                    partner.withdrawal_notice, today, partner.hub_access_until
                ),
            )
        )
    return HubSpec(root=root.absolute(), accounts=tuple(accounts), listen=listen)


def _provision(args: argparse.Namespace, listen: tuple[str, int]) -> HubSpec:
    cfg = load_config(config_dir(args))
    spec = spec_from_config(cfg, args.root, date.today(), listen)
    report = hubconfig.apply_hub(spec)
    out(f"hub provisioned in {spec.root}")
    for login in report.created_users:
        out(f"  created unix login {login}")
    for login in report.disabled:
        out(f"  login {login} disabled (withdrawal in effect); its folder is kept")
    out(f"  standalone sshd config: {report.sshd_config}")
    out(f"  drop-in for the system sshd: {report.drop_in}")
    return spec


def _print_fingerprints(spec: HubSpec) -> None:
    out("host keys partners must pin ([hub] host_keys; confirm fingerprints out of band):")
    for fingerprint, public_line in hubconfig.host_key_fingerprints(spec):
        out(f"  {fingerprint}")
        out(f"  {public_line}")


def run_provision(args: argparse.Namespace) -> int:
    hubconfig.require_root()
    spec = _provision(args, ("0.0.0.0", 22))  # noqa: S104 - the drop-in does not use it
    _print_fingerprints(spec)
    return 0


def run_hub(args: argparse.Namespace) -> int:
    try:
        listen = hubconfig.parse_listen(args.listen)
    except ValueError as error:
        raise UsageError(f"--listen: {error}", hint="for example --listen 127.0.0.1:2222") from None
    hubconfig.require_root()
    hubconfig.require_sshd()
    spec = _provision(args, listen)
    hubconfig.check_sshd_config(spec)
    _print_fingerprints(spec)
    out(f"starting sshd on {args.listen}; stop with Ctrl-C or SIGTERM")
    sys.stdout.flush()
    return hubconfig.run_sshd(spec)
