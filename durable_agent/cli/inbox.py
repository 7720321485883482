"""The reviewer inbox: ``durable-agent inbox --port N --key FILE [--trust-header HEADER]``.

A web page listing the approvals waiting in the namespace that the signed-in
reviewer may decide (by the profiles in ``--config``, the workers' ``agents.toml``),
with what each run wants to do, why it waits, the money involved, the deadline
and the last steps, and Approve/Reject buttons. The inbox signs decisions with its
key (make one with ``durable-agent keys new inbox --dir DIR``) for the reviewer
signed in; profiles trust it with ``delegates = ["inbox"]`` under ``[agents.NAME.approval]``.

Sign-in: behind an auth proxy, ``--trust-header X-Forwarded-Email`` takes the
reviewer's name from that header. Otherwise reviewers sign in with a token from
``--tokens FILE`` (default ``<AGENT_STATE_DIR>/inbox-tokens.toml``); give one a
token with ``durable-agent inbox --new-token NAME``. Sessions last
``--session-hours`` (12) and are signed with ``AGENT_INBOX_SECRET`` (or
``--secret-file``), which every replica must share; an inbox serving this machine
only keeps one in ``<AGENT_STATE_DIR>/inbox-secret`` by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

from durable_agent import signing
from durable_agent.activities.approvals import ensure_approval_index
from durable_agent.cli.hints import cannot_connect
from durable_agent.cli.worker import default_config_path
from durable_agent.connection import connect, target_address
from durable_agent.errors import ConfigError
from durable_agent.inbox import Deciders, SignIn, SignInError, create_app, serving
from durable_agent.inbox.signin import DEFAULT_SESSION_SECONDS, ENV_SECRET, add_token, session_secret
from durable_agent.store import state_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``inbox`` subcommand's options."""
    parser.add_argument("--port", type=int, default=8280, help="port to serve on (default 8280)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    parser.add_argument("--key", metavar="FILE", help="the inbox's signing key (from `durable-agent keys new inbox`)")
    parser.add_argument("--config", default=None, metavar="FILE", help="the workers' agent profiles: who may decide what (default: as the worker)")
    parser.add_argument("--trust-header", metavar="HEADER", help="take the reviewer's name from this header set by an auth proxy")
    parser.add_argument("--tokens", metavar="FILE", help="reviewers' sign-in tokens (default <AGENT_STATE_DIR>/inbox-tokens.toml)")
    parser.add_argument("--new-token", metavar="NAME", help="give NAME a sign-in token in the tokens file, print it, and exit")
    parser.add_argument(
        "--secret-file", metavar="FILE",
        help=f"the secret that signs sessions and forms, shared by every replica (env {ENV_SECRET} takes precedence; "
        "default on 127.0.0.1: <AGENT_STATE_DIR>/inbox-secret, made on first use)",
    )
    parser.add_argument(
        "--session-hours", type=float, default=DEFAULT_SESSION_SECONDS / 3600, metavar="H",
        help="how long a sign-in lasts (default 12)",
    )
    parser.add_argument("--address", help="Temporal address (default: TEMPORAL_ADDRESS or localhost:7233)")


async def main(args: argparse.Namespace) -> int:
    """Serve the inbox until interrupted."""
    tokens = Path(args.tokens) if args.tokens else state_dir() / "inbox-tokens.toml"
    if args.new_token:
        try:
            print(add_token(tokens, signing.check_name(args.new_token)))
        except (SignInError, signing.KeyFileError) as exc:
            print(f"inbox: {exc}", file=sys.stderr)
            return 2
        print(f"(added to {tokens}; {args.new_token} signs in with it)", file=sys.stderr)
        return 0
    if not args.key:
        print("inbox: --key FILE is required (make one with `durable-agent keys new inbox --dir DIR`)", file=sys.stderr)
        return 2
    if not args.session_hours > 0:
        print("inbox: --session-hours must be more than 0", file=sys.stderr)
        return 2
    try:
        key = signing.load_key_file(args.key)
        secret, secret_source = session_secret(
            configured=os.environ.get(ENV_SECRET),
            secret_file=Path(args.secret_file) if args.secret_file else None,
            default_file=state_dir() / "inbox-secret",
            host=args.host,
        )
        signin = SignIn(
            secret,
            trust_header=args.trust_header,
            tokens_file=None if args.trust_header else tokens,
            session_seconds=args.session_hours * 3600,
        )
        deciders = Deciders(Path(args.config or default_config_path()), key.name)
    except (signing.KeyFileError, SignInError, ConfigError) as exc:
        print(f"inbox: {exc}", file=sys.stderr)
        return 2
    try:
        client = await connect(args.address)
    except Exception as exc:  # noqa: BLE001 - any connection failure is reported the same way
        print(cannot_connect("inbox", target_address(args.address), exc), file=sys.stderr)
        return 2
    missing = await ensure_approval_index(client, register=False)
    if missing:
        print(f"inbox: warning: {missing}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with serving(create_app(client, key, signin, deciders), args.host, args.port) as url:
        how = f"the {args.trust_header} header" if args.trust_header else f"tokens from {tokens}"
        print(
            f"Reviewer inbox on {url} (namespace {client.namespace}; signs as {key.name!r}; sign-in by {how}; "
            f"sessions last {args.session_hours:g} h, signed with the secret from {secret_source}; "
            f"each reviewer sees what {deciders.path} lets them decide)",
            flush=True,
        )
        await stop.wait()
    return 0
