"""Serve the payload codec to the Temporal UI and CLI: ``durable-agent codec-server --port 8081``.

Decrypts (``POST /decode``) and encrypts (``POST /encode``) with the keys of
``AGENT_ENCRYPTION_KEYS``, for whoever presents ``AGENT_CODEC_TOKEN``:

    temporal server start-dev --ui-codec-endpoint http://localhost:8081
    temporal workflow show -w run-1 --codec-endpoint http://localhost:8081 --codec-auth "Bearer $AGENT_CODEC_TOKEN"

In the UI, sign in once at http://localhost:8081/login (a signed session of
``--session-hours``, 12 by default) and tick "Include cross-origin credentials"
in the UI's codec server settings.
"""

from __future__ import annotations

import argparse
import os
import sys

from durable_agent.codec_server import DEFAULT_SESSION_SECONDS, ENV_TOKEN, create_app
from durable_agent.encryption import EncryptionCodec, EncryptionConfigError, KeyRing


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``codec-server`` subcommand's options."""
    parser.add_argument("--port", type=int, default=int(os.environ.get("AGENT_CODEC_PORT", "8081")), help="default 8081")
    parser.add_argument("--host", default=os.environ.get("AGENT_CODEC_HOST", "127.0.0.1"), help="default 127.0.0.1")
    parser.add_argument(
        "--ui-origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="the Temporal UI's origin, answered with CORS (repeatable; default http://localhost:8233 and http://127.0.0.1:8233; "
        "env AGENT_CODEC_UI_ORIGINS, comma-separated)",
    )
    parser.add_argument(
        "--session-hours", type=float, default=DEFAULT_SESSION_SECONDS / 3600, metavar="H",
        help="how long a sign-in at /login lasts (default 12; the cookie is signed, never the token)",
    )


def origins(args: argparse.Namespace) -> list[str]:
    if args.ui_origin:
        return list(args.ui_origin)
    env = [o.strip() for o in os.environ.get("AGENT_CODEC_UI_ORIGINS", "").split(",") if o.strip()]
    return env or ["http://localhost:8233", "http://127.0.0.1:8233"]


def main(args: argparse.Namespace) -> int:
    """Serve until interrupted; 2 when the keys or the token are missing."""
    import uvicorn

    try:
        ring = KeyRing.from_env()
    except EncryptionConfigError as exc:
        print(f"codec-server: {exc}", file=sys.stderr)
        return 2
    if ring is None:
        print("codec-server: AGENT_ENCRYPTION_KEYS is not set: there is nothing to decode", file=sys.stderr)
        return 2
    token = os.environ.get(ENV_TOKEN, "").strip()
    if not token:
        print(f"codec-server: {ENV_TOKEN} is not set: the server refuses to show plaintext to anybody without a token", file=sys.stderr)
        return 2
    if not args.session_hours > 0:
        print("codec-server: --session-hours must be more than 0", file=sys.stderr)
        return 2
    app = create_app(EncryptionCodec(ring), token, allowed_origins=origins(args), session_seconds=args.session_hours * 3600)
    print(f"codec-server: http://{args.host}:{args.port} (keys: {', '.join(ring.key_ids)}; UI origins: {', '.join(origins(args))})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
