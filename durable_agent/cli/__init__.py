"""The ``durable-agent`` console command: one entry point, a subcommand per job.

Each subcommand is a module of this package (imported only when used, so
``durable-agent --help`` stays fast) that defines ``add_arguments(parser)`` and
``main(args) -> int``, sync or async. ``starter.py`` and ``worker.py`` in a
source checkout are thin aliases of ``run`` and ``worker``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import os
import sys
from typing import Sequence

#: Subcommand name -> (module, one-line help).
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("durable_agent.cli.run", "start an agent run and watch it live (the embedded default when no server answers)"),
    "worker": ("durable_agent.cli.worker", "poll a task queue and run agent workflows and activities"),
    "store": ("durable_agent.cli.store", "look after the content store (gc: delete old content)"),
    "codec-server": ("durable_agent.cli.codec_server", "decrypt payloads for the Temporal UI and CLI (bearer token required)"),
    "trace": ("durable_agent.cli.trace", "print one run's decision records as a table (--json, --follow, --tree)"),
    "keys": ("durable_agent.cli.keys", "make a reviewer's signing key and print its [reviewer_keys] line"),
    "approve": ("durable_agent.cli.approve", "approve or reject a held action and print the run's answer (--key signs it)"),
    "inbox": ("durable_agent.cli.inbox", "serve the reviewers' web page: every approval waiting, with Approve and Reject"),
    "demo": ("durable_agent.cli.demo", "the bundled demo shop: reset its orders (or show them)"),
    "mcp": ("durable_agent.cli.mcp", "list every configured MCP server's tools and the policy they map onto"),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand's options."""
    parser = argparse.ArgumentParser(prog="durable-agent", description="Production AI agents on Temporal.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(
            name, help=help_text, description=plain(module.__doc__), formatter_class=argparse.RawDescriptionHelpFormatter
        )
        module.add_arguments(sub)
        sub.set_defaults(_module=module)
    return parser


def plain(doc: str | None) -> str | None:
    """A module docstring as help text: reStructuredText's ``literal`` marks become `literal`, as in the README."""
    return doc.replace("``", "`") if doc else doc


def run_command(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: the process's) and run the chosen subcommand; its exit status."""
    return _run(build_parser().parse_args(argv))


def _run(args: argparse.Namespace) -> int:
    from durable_agent import telemetry

    telemetry.install_default_runtime()  # the core's log lines go to logging (stderr), never into stdout
    main = args._module.main
    if inspect.iscoroutinefunction(main):
        return int(asyncio.run(main(args)) or 0)
    return int(main(args) or 0)


def entry(argv: Sequence[str] | None = None) -> None:
    """The console command (and ``starter.py``, ``worker.py``): run it and exit with its status."""
    args = build_parser().parse_args(argv)
    code = _run(args)
    if getattr(args._module, "SKIP_INTERPRETER_TEARDOWN", False):
        # A Temporal client or worker: its Rust threads can abort the interpreter's teardown
        # (temporalio/sdk-python#300, "PyGILState_Release ... finalizing") and turn a finished
        # command into a crash. Its work is done: flush what atexit handlers would, and leave.
        from durable_agent import telemetry

        telemetry.shutdown()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
