"""The activities of an agent run: resolve the profile, think, run a tool, notify a reviewer.

``AgentActivities`` holds the model side (resolving a profile, thinking); the
tools (:mod:`.tools`), context compaction (:mod:`.context`) and reviewer
notifications (:mod:`.notify`) are mixins of their own modules. Each failure is
classified once, in the activity, into an error kind (:mod:`.common`).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from durable_agent import context, contracts, genai, money, redaction, stops, subagents, trace
from durable_agent.activities.common import content_errors, log, retry_error, tool_result_content
from durable_agent.activities.context import READ_RESULT_INFO
from durable_agent.activities.live_config import LiveConfig
from durable_agent.activities.notify import NotifyActivities
from durable_agent.activities.policy import PolicyReader
from durable_agent.activities.profile_tools import profile_mcp_info, profile_tool_info, protected_by_name
from durable_agent.activities.tools import ToolActivities
from durable_agent.activities.approvals import ApprovalIndex
from durable_agent.mcp.catalog import McpCatalog
from durable_agent.mcp.config import is_mcp_entry
from durable_agent.models import ModelError, ModelRequest, is_anthropic, provider_for
from durable_agent.pricing import find_price, price_warnings
from durable_agent.profiles import AgentsConfig
from durable_agent.ratelimit import estimate_input_tokens
from durable_agent.retry import ErrorKind, model_retry_delay
from durable_agent.schemas import (
    ResolveAgentInput,
    ResolvedAgent,
    ThinkInput,
    ThinkOutput,
    ToolCall,
)
from durable_agent.stops import think_timeout
from durable_agent.store import ContentStore
from durable_agent.tools import ToolRegistry
from durable_agent.tools import registry as default_registry

if TYPE_CHECKING:
    from durable_agent.activities.budget import ModelRateLimits

#: Longest reasoning taken from thinking blocks into the workflow (and its history) per step.
REASONING_CHARS = 2_000


def run_user_id(session_id: str) -> str:
    """``metadata.user_id`` of a run: stable across its steps, names no one (a hash of the workflow id)."""
    return "run-" + hashlib.sha256(f"durable-agent:{session_id}".encode()).hexdigest()[:32]


class AgentActivities(ToolActivities, NotifyActivities):
    """Activities bound to one worker's configuration, content store and tool registry."""

    def __init__(
        self,
        config: AgentsConfig,
        store: ContentStore,
        tools: ToolRegistry | None = None,
        *,
        tool_executor: Executor | None = None,
        model_limits: ModelRateLimits | None = None,
        index: ApprovalIndex | None = None,
        mcp: McpCatalog | None = None,
        limits_queue: str | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.tools = tools or default_registry
        #: The worker's bounded pool for synchronous tools.
        self.tool_executor = tool_executor
        #: Shared model rate limits (``[models."NAME".rate_limits]``), waited for before each call.
        self.model_limits = model_limits
        #: Tells runs whether to mark themselves for the reviewer inbox (None: never).
        self.index = index
        #: The configured MCP servers' tools (a tool source beside the @tool registry).
        self.mcp = mcp if mcp is not None else McpCatalog(config.mcp_servers)
        #: Where the ledgers and limiters of this worker's runs are started (runs name it when they wait for it).
        self.limits_queue = limits_queue
        #: agents.toml as it is now: the policy each step is decided under (and the reviewer keyring).
        self.live = LiveConfig(config)
        self.policies = PolicyReader(self.live, self.tools, self.mcp)

    # ---------------------------------------------------------------- resolve

    @activity.defn(name=contracts.ACTIVITY_RESOLVE_AGENT)
    async def resolve_agent(self, request: ResolveAgentInput) -> ResolvedAgent:
        """Freeze a profile for one run (recorded once in history, so replays never re-read config)."""
        name = request.agent or self.config.default_agent
        profile = self.config.agents.get(name)
        if profile is None:
            raise ApplicationError(
                f"unknown agent profile {name!r} (field 'agent'); known profiles: {', '.join(sorted(self.config.agents))}",
                type="UnknownAgent",
                non_retryable=True,
            )
        model = self.config.resolve_model(profile, request.model_override)
        warnings: list[str] = []
        if is_anthropic(model) and not _has_api_key():
            raise ApplicationError(
                f"model {model!r} needs ANTHROPIC_API_KEY on the worker; unset the model to use 'offline'",
                type="MissingCredentials",
                non_retryable=True,
            )
        prices = self.config.prices()
        price = find_price(model, prices)
        if price is None:
            warnings.append(
                f"UNKNOWN_MODEL_PRICE: no price for {model!r}; costs use the fallback price "
                f"(${self.config.pricing.fallback.input}/M input, ${self.config.pricing.fallback.output}/M output)"
            )
        mcp_tools = await self.mcp_profile_tools(name, profile)  # listed now; a server down costs the run its tools only
        warnings.extend(mcp_tools.warnings)
        tools = []
        for tool_name in profile.tools:
            if is_mcp_entry(tool_name):
                continue
            info = profile_tool_info(self.tools, self.config, name, profile, tool_name)
            if info is None:
                raise ApplicationError(f"profile {name!r} names tool {tool_name!r}, which this worker does not have", type="UnknownTool", non_retryable=True)
            tools.append(info)
        # MCP tools may be named in rate_limits and protected_tools as "SERVER.TOOL" or mcp__SERVER__TOOL.
        tools.extend(profile_mcp_info(info, name, profile) for info in mcp_tools.infos)
        tools = [protected_by_name(t, profile) for t in tools]
        # Each sub-agent is a tool named after its profile (checked at worker start: no name is taken twice).
        tools.extend(subagents.tool_info(sub, self.config.agents[sub]) for sub in profile.subagents)
        if not any(t.name == contracts.TOOL_READ_RESULT for t in tools):
            tools.append(READ_RESULT_INFO.model_copy())  # every profile can read back an elided result
        # The currency of each amount, read from the schemas while they are at hand (the run keeps none).
        tools = [money.with_currency_defaults(t) for t in tools]
        prompt: dict[str, Any] = {
            "system": profile.system_prompt + mcp_tools.model_note(),
            "tools": [{"name": t.name, "description": t.description, "input_schema": t.input_schema} for t in tools],
        }
        prompt_ref = await self.store.put(prompt)
        warnings.extend(price_warnings(model, prices))
        resolved = ResolvedAgent(
            name=name,
            model=model,
            autonomy=profile.autonomy,
            max_tokens=profile.max_tokens,
            prompt_ref=prompt_ref,
            # The schemas are in the prompt; a remote tool's stays, for the workflow checks its arguments before the call.
            tools=[t.model_copy(update={"input_schema": t.input_schema if t.remote else {}, "description": ""}) for t in tools],
            approval=profile.approval,
            anomalies=profile.anomalies,
            budget_usd=profile.budget_usd,
            daily_budget_usd=profile.daily_budget_usd,
            daily_budget_wait_seconds=profile.daily_budget_wait_seconds,
            continue_as_new_every=profile.continue_as_new_every,
            prices={model: price} if price is not None else {},
            fallback_price=self.config.pricing.fallback,
            warnings=warnings,
            approval_index=await self.index.available() if self.index is not None else None,
            context_window_tokens=profile.context_window_tokens,
            thinking_budget_tokens=profile.thinking_budget_tokens,
            context_management=profile.context_management,
            parallel_tool_calls=profile.parallel_tool_calls,
            prompt_tokens=context.estimate_request_tokens(prompt["system"], prompt["tools"], []),
            limits_task_queue=self.limits_queue,
            max_depth=profile.max_depth,
            max_children=profile.max_children,
        )
        # Recorded in the history: no configuration secret (notify_reviewer reads the webhook URL itself).
        return redaction.without_secrets(resolved)

    # ------------------------------------------------------------------ think

    @activity.defn(name=contracts.ACTIVITY_STORE_TASK)
    async def store_task(self, task: str) -> str:
        """Put a large task into the content store; its reference.

        The workflow runs it as a local activity: its input is not recorded in the
        history (only the reference it returns is), and the store is content-addressed,
        so running it again stores nothing twice.
        """
        return await self.store.put(task)

    @activity.defn(name=contracts.ACTIVITY_THINK)
    async def think(self, request: ThinkInput) -> ThinkOutput:
        """One model call. Reads the conversation from the store and appends the reply to it.

        Meanwhile it writes the decision records of earlier steps the workflow handed over
        (each once per id: a retry adds nothing), so a step needs no activity of its own for
        them. Records it could not write are said in the output (the workflow writes them
        later): a store hiccup never costs a model call made again.
        """
        if not request.records:
            return await self._think(request)
        writing = asyncio.create_task(self._write_records(request))
        try:
            out = await self._think(request)
        finally:
            written = await writing
        return out if written else out.model_copy(update={"records_written": False})

    async def _write_records(self, request: ThinkInput) -> bool:
        """Publish ``request.records`` in order; whether all of them are kept."""
        try:
            for record in request.records:
                await trace.publish(self.store, record)
        except Exception as exc:  # noqa: BLE001 - the workflow writes them again, by record_decisions
            log.warning("think step %s: decision records not written (%s); the run writes them later", request.step, exc)
            return False
        return True

    async def _think(self, request: ThinkInput) -> ThinkOutput:
        async with content_errors():
            head, prompt, messages = await self._conversation(request)
        assert head is not None  # the task, at least, was just appended
        model_request = ModelRequest(
            model=request.model,
            system=prompt["system"],
            tools=prompt["tools"],
            messages=context.wire_messages(messages),
            max_tokens=request.max_tokens,
            on_progress=activity.heartbeat,
            user_id=run_user_id(request.session_id),
            timeout_seconds=think_timeout(request.max_tokens).total_seconds(),
            cache_points=context.cache_points(messages),
            thinking_budget_tokens=request.thinking_budget_tokens,
            context_management=request.context_management,
            parallel_tool_calls=request.parallel_tool_calls,
        )
        provider = provider_for(request.model)
        window = context.known_window(request.model, request.context_window)
        if window is None and is_anthropic(request.model):
            window = context.DEFAULT_LIMITS.context_window  # a Claude model the table does not know yet
        limit = context.prompt_limit(window, request.max_tokens) if window is not None else None
        tokens = await self.prompt_tokens(
            provider, model_request, prompt_ref=request.prompt_ref, head=head, limit=limit, expected=request.expected_prompt_tokens,
            since=request.head,
        )
        if limit is not None and tokens > limit:
            # Never sent: the workflow compacts the conversation first.
            log.info("think step %s: prompt of %s tokens over the limit of %s; not sent", request.step, tokens, limit)
            return ThinkOutput(head=head, model=request.model, over_window=True, prompt_tokens=tokens)
        attempt = activity.info().attempt
        await self._wait_for_model_rate_limit(model_request)
        started = time.monotonic()
        try:
            with genai.chat_span(
                request.model, system=model_request.system, messages=model_request.messages, max_tokens=request.max_tokens
            ) as chat:
                response = await provider.complete(model_request)  # heartbeating all along (HeartbeatInterceptor)
                chat.set_response(
                    model=response.model,
                    response_id=response.response_id,
                    stop_reason=response.stop_reason,
                    usage=response.usage,
                    content=response.content,
                )
        except ModelError as exc:
            if self.model_limits is not None:
                self.model_limits.note_headers(request.model, exc.rate_limit_headers)
            if exc.kind is ErrorKind.CONTEXT_OVERFLOW:
                # The API counted more than we did: compact, as for a prompt we knew was too long.
                log.warning("think step %s: the API says the prompt is too long (request %s): %s", request.step, exc.request_id or "-", exc.message)
                return ThinkOutput(head=head, model=request.model, over_window=True, prompt_tokens=tokens, request_id=exc.request_id)
            delay = model_retry_delay(
                exc.kind, attempt, retry_after=exc.retry_after, should_retry=exc.should_retry, unit_random=random.random()
            )
            log.warning(
                "think failed (step %s, attempt %s, request %s): %s: %s; %s",
                request.step, attempt, exc.request_id or "-", exc.kind.value, exc.message,
                "giving up" if delay is None else f"retrying in {delay:.2f}s",
                extra={"step": request.step},
            )
            raise retry_error(exc.message, exc.kind, delay, status_code=exc.status_code, request_id=exc.request_id) from None
        duration_ms = int((time.monotonic() - started) * 1000)
        log.info(
            "think step %s attempt %s: request %s, stop %s", request.step, attempt, response.request_id or "-", response.stop_reason,
            extra={"step": request.step},
        )
        if self.model_limits is not None:
            self.model_limits.note_headers(request.model, response.rate_limit_headers)
        assert head is not None
        cut = response.stop_reason in stops.CUT_REPLIES
        if cut or response.stop_reason == "refusal":
            # Never appended: a cut tool call is a different call (``"amount": 2`` of 20), and a
            # refusal ends the run. The conversation stays where it was before this reply.
            new_head = head
        else:
            reply = {"role": "assistant", "content": response.content}
            new_head = await self.store.append(head, reply)
            self.estimates().extended(head, new_head, context.wire_messages([reply])[0])
        text = "\n".join(b.get("text", "") for b in response.content if b.get("type") == "text")
        if not text:
            # Newer models return the words between tool calls as thinking blocks: keep them as the reasoning.
            text = "\n".join(b.get("thinking", "") for b in response.content if b.get("type") == "thinking").strip()
            text = text[:REASONING_CHARS]  # it is recorded in history at every step: keep it bounded
        calls = [
            ToolCall(id=b["id"], name=b["name"], args=b.get("input") or {})
            for b in response.content
            if b.get("type") == "tool_use"
        ]
        acted_on = [] if response.stop_reason in stops.NOT_ACTIONABLE else calls
        # The run decides these calls next: under the policy agents.toml holds now (when it changed, whole).
        policy = await self.policies.report(request.agent, [t["name"] for t in prompt["tools"]], request.policy_digest) if acted_on else None
        return ThinkOutput(
            head=new_head,
            text=text,
            tool_calls=acted_on,
            usage=response.usage,
            stop_reason=response.stop_reason,
            model=response.model,
            duration_ms=duration_ms,
            truncated=cut,
            cut_tool_calls=[c.name for c in calls] if cut else [],
            request_id=response.request_id,
            prompt_tokens=tokens,
            daily_budget_usd=self._configured_daily_budget(request.agent),
            policy=policy.policy if policy else None,
            policy_digest=policy.digest if policy else None,
            policy_warnings=policy.warnings if policy else [],
        )

    def _configured_daily_budget(self, agent: str) -> float | None:
        profile = self.config.agents.get(agent)
        return profile.daily_budget_usd if profile is not None else None

    async def _wait_for_model_rate_limit(self, call: ModelRequest) -> None:
        """Take this call's slot of the model's shared rate limits (when it has any) and wait for it."""
        if self.model_limits is None or self.model_limits.windows(call.model) is None:
            return
        info = activity.info()
        # One slot per attempt: every attempt is a request the provider counts.
        await self.model_limits.wait_turn(
            call.model,
            input_tokens=estimate_input_tokens(call.system, call.tools, call.messages),
            output_tokens=call.max_tokens,
            request_id=f"{info.workflow_id}/{info.workflow_run_id}/{info.activity_id}/{info.attempt}",
            queue=info.task_queue,
            holder=info.workflow_id or "",
        )

    async def _conversation(self, request: ThinkInput) -> tuple[str | None, dict[str, Any], list[dict[str, Any]]]:
        """The new head (with the tool results appended), the prompt, and the messages to send."""
        head = request.head
        user_content: list[dict[str, Any]] = []
        if request.user_ref:
            user_content.append({"type": "text", "text": await self.store.get(request.user_ref)})
        if request.user_text:
            user_content.append({"type": "text", "text": request.user_text})
        for part in request.tool_results:
            content: str | list[dict[str, Any]] = part.text or ""
            if part.ref is not None:
                content = tool_result_content(await self.store.get(part.ref))  # text, and an MCP tool's images
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": part.tool_use_id, "content": content}
            if part.ref is not None:
                block["_ref"] = part.ref  # where the full result is kept, should compaction elide it (never sent)
            if part.is_error:
                block["is_error"] = True
            user_content.append(block)
        if user_content:
            head = await self.store.append(head, {"role": "user", "content": user_content})
        prompt = await self.store.get(request.prompt_ref)
        return head, prompt, await self.store.messages(head)

    def all(self) -> list[Any]:
        """Every activity of this object, for ``Worker(activities=...)``."""
        return [self.resolve_agent, self.store_task, self.think, self.compact, self.run_tool, self.store_remote_result, self.notify_reviewer]


def _has_api_key() -> bool:
    from durable_agent.models import anthropic as anthropic_model

    return bool(anthropic_model._credentials_provider())
