"""``python worker.py`` in a source checkout: the same as ``durable-agent worker`` (see :mod:`durable_agent.cli.worker`)."""

import sys

from durable_agent.cli import entry

if __name__ == "__main__":
    entry(["worker", *sys.argv[1:]])
