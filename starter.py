"""``python starter.py "TASK"`` in a source checkout: the same as ``durable-agent run "TASK"`` (see :mod:`durable_agent.cli.run`)."""

import sys

from durable_agent.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command(["run", *sys.argv[1:]]))
