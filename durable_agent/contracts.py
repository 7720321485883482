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
#: A sub-agent's totals so far, sent to its parent run (internal: runs send it, people do not).
SIGNAL_CHILD_REPORT = "child_report"

ACTIVITY_RESOLVE_AGENT = "resolve_agent"
ACTIVITY_THINK = "think"
#: Puts a large task into the content store; run as a local activity, so the text never enters the history.
ACTIVITY_STORE_TASK = "store_task"
ACTIVITY_RUN_TOOL = "run_tool"
#: A local activity: stores a remote tool's result (its input, the result, is not recorded twice in the history).
ACTIVITY_STORE_REMOTE_RESULT = "store_remote_result"
ACTIVITY_NOTIFY_REVIEWER = "notify_reviewer"
ACTIVITY_RECORD_DECISIONS = "record_decisions"
ACTIVITY_REVIEWER_KEYRING = "reviewer_keyring"

#: A Bool search attribute, true while a run has an approval waiting: the reviewer inbox lists runs by it.
SEARCH_ATTRIBUTE_AWAITING_APPROVAL = "AgentAwaitingApproval"
#: The memo entry that lists what a run has waiting (``{"agent", "approvals": [PendingApproval...]}``), kept
#: beside the search attribute so the inbox lists every waiting approval without querying each run.
MEMO_PENDING_APPROVALS = "pending_approvals"
ACTIVITY_COMPACT = "compact_context"
#: The built-in tool every profile gets: read back a tool result elided from the conversation.
TOOL_READ_RESULT = "read_result"

# Budgets and rate limits: entity workflows shared by every run on every worker.
RATE_LIMITER_WORKFLOW = "RateLimiter"
#: Ledger ids are ``budget-<agent>-<YYYY-MM-DD>`` (one per agent and UTC day).
BUDGET_LEDGER_ID_PREFIX = "budget-"
#: Rate limiter ids are ``ratelimit-<tool>`` (one per tool).
RATE_LIMITER_ID_PREFIX = "ratelimit-"
UPDATE_LEASE = "lease"
UPDATE_RESERVE = "reserve"
UPDATE_SETTLE = "settle"
UPDATE_RELEASE = "release"
UPDATE_ACQUIRE = "acquire"
QUERY_STATE = "state"

ACTIVITY_BUDGET_LEASE = "budget_lease"
ACTIVITY_BUDGET_RESERVE = "budget_reserve"
ACTIVITY_BUDGET_SETTLE = "budget_settle"
ACTIVITY_BUDGET_RELEASE = "budget_release"
ACTIVITY_RATE_LIMIT_ACQUIRE = "rate_limit_acquire"
