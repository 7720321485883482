"""``python starter.py "TASK"`` in a source checkout: the same as ``durable-agent run "TASK"`` (see :mod:`durable_agent.cli.run`)."""

import sys

from durable_agent.cli import entry

if __name__ == "__main__":
    entry(["run", *sys.argv[1:]])
