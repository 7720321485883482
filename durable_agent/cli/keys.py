"""Reviewer keys for signed approvals: ``durable-agent keys new NAME --dir DIR``.

Writes ``DIR/NAME.key`` (readable by you only) and prints the public half as the
line to paste under ``[reviewer_keys]`` in ``agents.toml``. The key file stays
with its owner (a reviewer, or the inbox); workers only ever see public keys.
"""

from __future__ import annotations

import argparse
import sys

from durable_agent import signing


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``keys`` subcommand's options."""
    actions = parser.add_subparsers(dest="keys_action", metavar="ACTION", required=True)
    new = actions.add_parser("new", help="make a key pair: DIR/NAME.key, and the [reviewer_keys] line on stdout")
    new.add_argument("name", metavar="NAME", help="the reviewer's name as the allow-list writes it (an email address is fine), or 'inbox'")
    new.add_argument("--dir", default="keys", metavar="DIR", help="where to write NAME.key (default: ./keys)")


def main(args: argparse.Namespace) -> int:
    """Write the key file; print the public key line (stdout) and where the key went (stderr)."""
    try:
        key = signing.generate_key(args.name)
        path = signing.write_key_file(key, args.dir)
    except (signing.KeyFileError, OSError) as exc:
        print(f"keys: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} (mode 0600: keep it secret). Paste this line under [reviewer_keys] in agents.toml:", file=sys.stderr)
    print(signing.toml_key_line(key.name, key.public_key))
    return 0
