"""``exchange init [DIR]``: scaffold a workspace."""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

from exchange import ops
from exchange.commands._common import add_command, out


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        subparsers, "init", "scaffold a workspace (config/, keys/, outbox/, state/)"
    )
    parser.add_argument(
        "dir", nargs="?", type=Path, default=Path(), help="workspace folder (default: .)"
    )
    parser.add_argument(
        "--org-id", default="essex-cc", help="this organisation's id (default: essex-cc)"
    )
    parser.add_argument("--org-name", default="Essex County Council", help="its name")
    parser.add_argument("--ico", default="Z2120726", help="its ICO registration number")
    parser.add_argument("--hub-host", default="127.0.0.1", help="the hub's address")
    parser.add_argument("--hub-port", type=int, default=2222, help="the hub's SSH port")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    template = (
        resources.files("exchange.data").joinpath("exchange.toml.template").read_text("utf-8")
    )
    readme = resources.files("exchange.data").joinpath("keys-README.md").read_text("utf-8")
    workspace = ops.init_workspace(
        args.dir,
        org_id=args.org_id,
        org_name=args.org_name,
        ico=args.ico,
        hub_host=args.hub_host,
        hub_port=args.hub_port,
        template=template,
        keys_readme=readme,
    )
    out(f"workspace created in {workspace}")
    out(
        "next: cd into it, run 'exchange keys generate', add partners and agreements under config/,"
    )
    out("      then 'exchange config check'")
    return 0
