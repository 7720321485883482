"""``python worker.py`` in a source checkout: the same as ``durable-agent worker`` (see :mod:`durable_agent.cli.worker`)."""

import sys

from durable_agent.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command(["worker", *sys.argv[1:]]))
