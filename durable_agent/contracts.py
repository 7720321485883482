"""User-facing names: workflow types, handlers, activities, the task queue.

People type these into the ``temporal`` CLI and the Temporal UI, and other
services call them, so they are defined once, here, and never change without a
deprecation path.
"""

AGENT_WORKFLOW = "AgentWorkflow"
BUDGET_LEDGER_WORKFLOW = "BudgetLedger"
DEFAULT_TASK_QUEUE = "agents"

SIGNAL_APPROVE = "approve"
SIGNAL_REJECT = "reject"
UPDATE_REVIEW = "review"
QUERY_STATUS = "status"
QUERY_TRACE = "trace"

ACTIVITY_RESOLVE_AGENT = "resolve_agent"
ACTIVITY_THINK = "think"
ACTIVITY_RUN_TOOL = "run_tool"
ACTIVITY_NOTIFY_REVIEWER = "notify_reviewer"
