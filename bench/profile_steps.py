"""A steady agent workload to profile: ``py-spy record -o out.txt --format raw -- python bench/profile_steps.py``.

    python bench/profile_steps.py [--runs 50] [--steps 20] [--daily]

Runs ``--runs`` concurrent agent runs of ``--steps`` calls each (a zero-latency
model, 8 KB tool outputs) on a throwaway dev server with the worker in this
process, and prints the worker's CPU seconds per step (this process's user +
system time, the dev server's excluded). Under ``py-spy`` the samples show where
a step's CPU goes; ``python bench/profile_steps.py --top`` folds py-spy's raw
output into the functions that cost most, by own time and by total time.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import resource
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import bench_environment  # noqa: E402  (also puts the project on sys.path)
from _bare import BARE_WORKFLOW, BareAgent, BareInput, bare_think, bare_tool  # noqa: E402
from scale import MODEL, PRICE, LoopModel  # noqa: E402
from temporalio.worker import Worker  # noqa: E402

from durable_agent import telemetry  # noqa: E402
from durable_agent.cli.worker import create_worker  # noqa: E402
from durable_agent.models import register_provider  # noqa: E402
from durable_agent.store import ContentStore  # noqa: E402
from tests.conftest import make_config  # noqa: E402


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def server_cpu_seconds() -> float | None:
    """CPU seconds of this process's children so far (the dev server), from ``/proc``; None where there is none."""
    ticks, found = 0, False
    for entry in Path("/proc").iterdir() if Path("/proc/self/stat").exists() else ():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == os.getpid():
            ticks, found = ticks + int(fields[11]) + int(fields[12]), True
    return ticks / os.sysconf("SC_CLK_TCK") if found else None


async def workload(runs: int, steps: int, daily: bool, bare: bool = False) -> None:
    telemetry.setup()
    async with bench_environment("profile") as (env, state):
        register_provider(MODEL, LoopModel(delay=0.0))
        profile = {"tools": ["big_output"], "continue_as_new_every": 1000, "max_tokens": 1024}
        if daily:
            profile["daily_budget_usd"] = 1_000_000.0
        config = make_config({"p": profile}, pricing={"models": {MODEL: PRICE}})
        queue = f"profile-{uuid.uuid4().hex[:6]}"
        bare_worker = Worker(env.client, task_queue=f"{queue}-bare", workflows=[BareAgent], activities=[bare_think, bare_tool])
        async with create_worker(env.client, config, task_queue=queue, store=ContentStore(state / "content")), bare_worker:
            for label, count in (("warm-up", 2), ("measured", runs)):
                cpu, server, wall = cpu_seconds(), server_cpu_seconds(), time.perf_counter()
                handles = [
                    await env.client.start_workflow(
                        BARE_WORKFLOW, BareInput(steps=steps, tool_chars=8 * 1024), id=f"p-{uuid.uuid4().hex[:8]}", task_queue=f"{queue}-bare",
                    )
                    if bare else
                    await env.client.start_workflow(
                        "AgentWorkflow", {"task": "p", "model": f"{MODEL}-{steps}", "max_steps": steps + 1},
                        id=f"p-{uuid.uuid4().hex[:8]}", task_queue=queue,
                    )
                    for _ in range(count)
                ]
                await asyncio.gather(*(h.result() for h in handles))
                cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
                after = server_cpu_seconds()
                on_server = f", server CPU {(after - server) / (count * steps) * 1000:.1f}" if server is not None and after is not None else ""
                print(f"{label}: {count} runs x {steps} steps: worker CPU {cpu / (count * steps) * 1000:.1f}{on_server} ms per step, "
                      f"{count * steps / wall:.1f} steps/s")


#: Frames where a thread waits rather than works.
IDLE = {"_worker (thread.py)", "EpollSelector.select (selectors.py)", "Condition.wait (threading.py)", "Event.wait (threading.py)"}


#: Where a step's CPU goes, by the first of these frames a sample's stack holds (in this order).
PARTS = [
    ("process start (imports, server start): not per step", ("<module> (profile_steps.py)",), ("main (profile_steps.py)",)),
    ("a run's sandbox: the workflow modules run afresh", ("_Instance.__init__ (_runner.py)",), ()),
    ("the SDK's per-payload context, computed in the sandbox",
     ("_Instance.get_serialization_context (_runner.py)", "_Instance.get_external_store_context (_runner.py)"), ()),
    ("payload conversion and codec (a data converter built per activation, too)",
     ("PayloadVisitor.visit (_visitor.py)", "decode_activation (worker.py)", "encode_completion (worker.py)",
      "_CommandAwareDataConverter", "DataConverter._with_contexts", "GuardedDataConverter.with_context"), ()),
    ("workflow code (the decisions)", ("InSandbox.activate (_in_sandbox.py)",), ()),
    ("think activity: conversation, store, token estimate, spans", ("AgentActivities.think (agent.py)",), ()),
    ("tool activity", ("ToolActivities.run_tool (tools.py)",), ()),
    ("records and trace", ("TraceSink.append (trace.py)", "publish (trace.py)", "_write_records", "create_named"), ()),
    ("activity plumbing (heartbeats, completion)", ("_ActivityWorker", "_HeartbeatingActivity"), ()),
    ("the bare floor's activities", ("bare_think (_bare.py)", "bare_tool (_bare.py)"), ()),
]


def part_of(frames: list[str]) -> str:
    for label, markers, unless in PARTS:
        if any(m in f for f in frames for m in markers) and not any(u in f for f in frames for u in unless):
            return label
    return "other (event loop, polling, threads)"


def top(path: str, limit: int = 120) -> None:
    """Fold py-spy's raw (collapsed stack) output: samples by part of the worker, then own and total per function."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    parts: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].split("/")[-1] + ")" if " (" in f else f for f in stack.split(";")]
        if not frames[-1].strip() or frames[-1] in IDLE:
            continue  # a thread waiting for work, not working
        n = int(count)
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
        parts[part_of(frames)] += n
    print(f"{samples} samples\n-- by part (profile with py-spy --gil: a thread waiting for the GIL is not working)")
    for label, n in parts.most_common():
        print(f"{n / samples:6.1%}  {label}")
    print("-- own time")
    for frame, n in own.most_common(limit):
        print(f"{n / samples:6.1%}  {frame}")
    print("-- total time")
    for frame, n in total.most_common(limit):
        print(f"{n / samples:6.1%}  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--daily", action="store_true", help="with a daily budget")
    parser.add_argument("--bare", action="store_true", help="the bare Temporal floor (bench/_bare.py) instead")
    parser.add_argument(
        "--pass-workflows", action="store_true",
        help="pass the workflow modules through the sandbox too (no re-import per run; not what the worker does)",
    )
    parser.add_argument("--top", metavar="RAW", help="fold a py-spy raw profile instead of running")
    args = parser.parse_args()
    if args.top:
        top(args.top)
        return
    os.environ.setdefault("AGENT_LOG_LEVEL", "ERROR")
    if args.pass_workflows:
        from durable_agent.cli import worker

        core = worker.core_modules
        worker.core_modules = lambda: [*core(), "durable_agent.workflows"]  # type: ignore[assignment]
    asyncio.run(workload(args.runs, args.steps, args.daily, args.bare))


if __name__ == "__main__":
    main()
