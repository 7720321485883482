"""``python -m durable_agent COMMAND ...``: the ``durable-agent`` console command, without the script on PATH."""

from durable_agent.cli import entry

entry()
