"""``exchange keys generate`` and ``exchange keys show``."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from exchange import config as config_mod
from exchange import keys as keys_mod
from exchange.commands._common import add_command, config_dir, out, out_json


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("keys", help="this organisation's keys")
    group = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    generate = add_command(
        group, "generate", "create this organisation's keys (private files 0600)"
    )
    generate.add_argument(
        "--force",
        action="store_true",
        help="replace existing keys (old ones move to keys/retired/)",
    )
    generate.set_defaults(handler=run_generate)
    show = add_command(
        group, "show", "print the public key card to hand to partners", json_option=True
    )
    show.set_defaults(handler=run_show)


def run_generate(args: argparse.Namespace) -> int:
    cfg = config_mod.load_config(config_dir(args))
    paths = keys_mod.generate(
        cfg.folders.keys, cfg.organisation.id, now=datetime.now(UTC), force=args.force
    )
    out(f"keys written to {paths.folder} (private files mode 0600)")
    out("next: 'exchange keys show' prints the key card to give to partners")
    return 0


def run_show(args: argparse.Namespace) -> int:
    cfg = config_mod.load_config(config_dir(args))
    card = keys_mod.key_card(keys_mod.KeyPaths(cfg.folders.keys), cfg.organisation.id)
    if args.json:
        out_json(
            {
                "organisation": card.organisation,
                "age_recipient": card.age_recipient,
                "signing_key": card.signing_key,
                "signing_key_fingerprint": card.signing_key_fingerprint,
                "ssh_public_key": card.ssh_public_key,
                "ssh_fingerprint": card.ssh_fingerprint,
                "created": card.created,
            }
        )
    else:
        out(card.to_toml().rstrip("\n"))
    return 0
