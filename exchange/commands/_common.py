"""Shared argparse pieces: the global options every command takes, and output helpers."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_DIR = "config"


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="DIR",
        type=Path,
        default=None,
        help="configuration folder (default: $EXCHANGE_CONFIG, else ./config)",
    )
    return common


COMMON = _common_options()


def add_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    *,
    json_option: bool = False,
) -> argparse.ArgumentParser:
    """Add a sub-command that takes the global options (and ``--json`` for listings)."""
    parser = subparsers.add_parser(name, help=help_text, description=help_text, parents=[COMMON])
    if json_option:
        parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


def config_dir(args: argparse.Namespace) -> Path:
    """The configuration folder: --config, else $EXCHANGE_CONFIG, else ./config."""
    given: Path | None = getattr(args, "config", None)
    if given is not None:
        return given
    from_env = os.environ.get("EXCHANGE_CONFIG")
    return Path(from_env) if from_env else Path(DEFAULT_CONFIG_DIR)


def out(text: str = "") -> None:
    """Print a line for the user on stdout."""
    sys.stdout.write(text + "\n")


def out_json(value: Any) -> None:
    """Print a JSON document on stdout, keys sorted so that output is stable."""
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")
