"""Decision records, each kept once: in the content store under its id, and as a JSON line in the sink.

Every record has a stable ``record_id``: ``{workflow id}/{run}/{step}/{call}``,
where *run* is the first run id of the workflow's chain of runs (it survives
continue-as-new) and *call* is the call's place in its step (0 for an answer).

The ``record_decisions`` activity (see :mod:`durable_agent.activities`) calls
:func:`publish` for each of a step's records. The store is the record of
truth: the record is created under its id if absent, so a step retried on
another worker, or two workers writing at once, leave one record. The JSON-lines
sink (``AGENT_TRACE_FILE``, else standard output) is a view of it: a file sink
appends each id once even across processes and crashes, by a lock and a marker
per id saying where its line starts (a writer killed between the marker and the
line is noticed by the next one, which finds another line, or none, there).
Standard output cannot be read back, so there each process writes what it
created in the store.

While payloads are encrypted, the sink writes each record without what the run
handled (:func:`redacted`: ids, statuses, costs and refs), unless
``AGENT_TRACE_PLAINTEXT=1`` (see :mod:`durable_agent.redaction`); the store keeps
the record whole, sealed, and ``durable-agent trace`` shows it to a key holder.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from durable_agent import redaction
from durable_agent.carry import compact_record
from durable_agent.inputs import json_size
from durable_agent.schemas import DecisionRecord
from durable_agent.store import ContentIntegrityError, ContentStore

#: The folder of the content store that holds the records.
RECORDS = "records"
#: Longest reasoning and argument text a record keeps in the ``trace`` query (the store keeps it whole).
QUERY_TEXT_CHARS = 500
#: The most the ``trace`` query returns, in bytes of JSON; the oldest records go first beyond it.
QUERY_MAX_BYTES = 256_000
#: The most one ``record_decisions`` activity carries, in bytes of JSON (Temporal refuses payloads over 2 MB).
BATCH_MAX_BYTES = 1_800_000
#: What of an observation a sink keeps while payloads are encrypted: statuses, timings, counts, ids and refs.
REDACTED_OBSERVATION_FIELDS = frozenset(
    {
        "status", "duration_ms", "approval_id", "result_ref", "request_ids", "stop_reason",
        "rate_limit_slot", "rate_limit_wait_ms", "tokens_before", "tokens_after", "elided_results", "summarised_messages",
    }
)


def record_id(workflow_id: str, chain_run_id: str, step: int, call: int) -> str:
    """The stable id of the record of ``call`` (0-based) of ``step`` in a workflow's chain of runs."""
    return f"{workflow_id}/{chain_run_id}/{step}/{call}"


def _name_segment(text: str) -> str:
    """Free text (a workflow id) as one segment of a store name: other characters as ``:XX`` bytes."""
    out = []
    for char in text:
        if char.isascii() and (char.isalnum() or char in "_-"):
            out.append(char)
        else:
            out.extend(f":{byte:02X}" for byte in char.encode("utf-8"))
    return "".join(out)


def _run_folder(workflow_id: str) -> str:
    return f"{RECORDS}/{_name_segment(workflow_id)}"


def record_name(record: DecisionRecord) -> str:
    """Where a record lives in the store: ``records/<workflow id>/<run>/<step>-<call>``, sortable."""
    assert record.record_id is not None
    workflow_id, run, step, call = record.record_id.rsplit("/", 3)
    return f"{_run_folder(workflow_id)}/{_name_segment(run)}/{int(step):09d}-{int(call):04d}"


# ----------------------------------------------------------------------- the sink


def redacted(record: DecisionRecord) -> dict[str, Any]:
    """``record`` as the sink writes it while payloads are encrypted: ids, statuses, costs and refs.

    The action keeps its type and tool (``args`` and ``reasoning`` are null); the
    observation keeps :data:`REDACTED_OBSERVATION_FIELDS`; each warning becomes
    its kind (``POSSIBLE_LOOP``); ``"redacted": true`` says so.
    """
    view = record.model_dump(mode="json")
    view["action"] = {"type": record.action.type, "tool": record.action.tool, "args": None, "reasoning": None}
    view["observation"] = {key: value for key, value in view["observation"].items() if key in REDACTED_OBSERVATION_FIELDS}
    view["warnings"] = [redaction.warning_kind(text) for text in record.warnings]
    view["redacted"] = True
    return view


def sink_line(record: DecisionRecord) -> str:
    """The sink's JSON line of ``record`` (without its newline): whole, or :func:`redacted` while payloads are encrypted."""
    if redaction.trace_plaintext():
        return record.model_dump_json()
    return json.dumps(redacted(record), ensure_ascii=False, separators=(",", ":"))



class TraceSink:
    """The JSON-lines view: a file appended once per record id, or a stream."""

    def __init__(self, path: str | os.PathLike[str] | None = None, stream: TextIO | None = None) -> None:
        self.path = Path(path) if path else None
        self.stream = stream
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def append(self, record: DecisionRecord) -> bool:
        """Add ``record``'s line unless its id already has one; return whether it was added."""
        key = record.record_id or f"{record.session_id}/{record.step}/{record.timestamp.isoformat()}"
        line = (sink_line(record) + "\n").encode("utf-8")
        with self._lock:
            if self.path is None:
                if key in self._seen:
                    return False
                self._remember(key)
                out = self.stream or sys.stdout
                out.write(line.decode("utf-8"))
                out.flush()
                return True
            return self._append_once(key, line)

    def _remember(self, key: str) -> None:
        self._seen[key] = None
        while len(self._seen) > 100_000:
            self._seen.popitem(last=False)

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{self.path}.lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # across processes; released when the file closes
            yield

    def _marker(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        return Path(f"{self.path}.ids") / digest[:2] / digest

    def _append_once(self, key: str, line: bytes) -> bool:
        assert self.path is not None
        marker = self._marker(key)
        with self._file_lock():
            if marker.exists():
                offset = int(marker.read_text() or -1)
                if offset >= 0 and self.path.exists():
                    with self.path.open("rb") as fh:
                        fh.seek(offset)
                        if fh.readline() == line:
                            return False  # written before; this is a retry
            # Say where the line will start before writing it: a crash in between is seen next time.
            offset = self.path.stat().st_size if self.path.exists() else 0
            marker.parent.mkdir(parents=True, exist_ok=True)
            tmp = marker.with_suffix(".tmp")
            tmp.write_text(str(offset))
            os.replace(tmp, marker)
            with self.path.open("ab") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        return True


_sink: TraceSink | None = None


def configure(path: str | None = None, stream: TextIO | None = None) -> TraceSink:
    """Set the process's sink (the worker calls this once)."""
    global _sink
    _sink = TraceSink(path, stream)
    return _sink


def sink() -> TraceSink:
    """The process's sink; standard output when none was configured."""
    global _sink
    if _sink is None:
        _sink = TraceSink()
    return _sink


def emit(record: DecisionRecord) -> None:
    """Write a record to the sink only (runs recorded before records were stored call this from the workflow)."""
    sink().append(record)


async def publish(store: ContentStore, record: DecisionRecord) -> bool:
    """Keep ``record`` under its id in the store (if absent), then add it to the sink's view.

    Returns:
        Whether this call created the stored record.
    """
    created = await store.create_named(record_name(record), record.model_dump(mode="json"))
    out = sink()
    if created or out.path is not None:  # a file sink checks its own markers; a stream cannot
        await asyncio.to_thread(out.append, record)  # a file lock and an fsync: off the event loop
    return created


# ----------------------------------------------------------------- reading back


async def _names(store: ContentStore, folder: str) -> list[str]:
    return sorted([name async for name in store.list_named(folder + "/")])


async def runs_of(store: ContentStore, workflow_id: str) -> list[str]:
    """The chains of runs that recorded under ``workflow_id`` (their first run ids), oldest first."""
    folder = _run_folder(workflow_id)
    firsts: dict[str, str] = {}
    for name in await _names(store, folder):
        run = name[len(folder) + 1 :].split("/", 1)[0]
        if run in firsts:
            continue  # names sort by step: the first one met is the chain's first record
        record = await store.read_named(name)
        if record is not None:
            firsts[run] = str(record.get("timestamp"))
    return sorted(firsts, key=firsts.__getitem__)


async def read_records(store: ContentStore, workflow_id: str, run: str | None = None) -> list[DecisionRecord]:
    """One chain's records, in order (the latest chain when ``run`` is None)."""
    if run is None:
        chains = await runs_of(store, workflow_id)
        if not chains:
            return []
        run = chains[-1]
    records = []
    for name in await _names(store, _chain_folder(workflow_id, run)):
        value = await store.read_named(name)
        if value is not None:
            records.append(_checked(store, name, DecisionRecord.model_validate(value)))
    return records


async def observed_result(store: ContentStore, workflow_id: str, run: str, ref: str) -> bool:
    """Whether a decision record of the chain ``run`` of ``workflow_id`` observed the result ``ref`` (newest first)."""
    for name in reversed(await _names(store, _chain_folder(workflow_id, run))):
        value = await store.read_named(name)
        observation = value.get("observation") if isinstance(value, dict) else None
        if isinstance(observation, dict) and observation.get("result_ref") == ref:
            _checked(store, name, DecisionRecord.model_validate(value))
            return True
    return False


def _chain_folder(workflow_id: str, run: str) -> str:
    return f"{_run_folder(workflow_id)}/{_name_segment(run)}"


def _checked(store: ContentStore, name: str, record: DecisionRecord) -> DecisionRecord:
    """``record``, read under ``name``, if its id says it belongs there (a record copied from elsewhere does not)."""
    try:
        belongs = record.record_id is not None and record_name(record) == name
    except ValueError:  # an id that is not workflow/run/step/call
        belongs = False
    if not belongs:
        raise ContentIntegrityError(f"record {name!r}", store.location, f"it holds the record {record.record_id!r}")
    return record


# ------------------------------------------------------------- the trace query


def _clip(text: str, limit: int) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    return text[:limit] + f"... [{len(text) - limit} more characters in the store]", True


def for_query(record: DecisionRecord, same_reasoning_as: str | None = None) -> DecisionRecord:
    """``record`` as the ``trace`` query keeps it: long reasoning and arguments cut, whole in the store.

    Args:
        record: The whole record.
        same_reasoning_as: The id of the turn's first record, for a turn's later calls: their
            reasoning is the same, so the query says so instead of repeating it.
    """
    action = record.action
    cut = False
    reasoning = action.reasoning
    if reasoning and same_reasoning_as:
        reasoning, cut = f"(as in {same_reasoning_as})", True
    elif reasoning:
        reasoning, cut = _clip(reasoning, QUERY_TEXT_CHARS)
    args: dict[str, Any] | None = action.args
    if args is not None:
        text = json.dumps(args, sort_keys=True, default=str, ensure_ascii=False)
        if len(text) > QUERY_TEXT_CHARS:
            size = json_size(args)
            args, cut = {"_cut": f"{size:,} bytes of arguments, whole in the store; they begin {text[:QUERY_TEXT_CHARS]}"}, True
    if not cut:
        return record
    return record.model_copy(update={"action": action.model_copy(update={"reasoning": reasoning, "args": args}), "truncated": True})


def batches(records: list[DecisionRecord], max_bytes: int = BATCH_MAX_BYTES) -> list[list[DecisionRecord]]:
    """``records`` in groups whose JSON stays under ``max_bytes``, for one activity each.

    A record larger than that on its own has its large arguments and texts cut
    (:func:`durable_agent.carry.compact_record`): the conversation in the store
    still has the call whole, and an activity input over Temporal's payload limit
    would stop the run.
    """
    groups: list[list[DecisionRecord]] = []
    used = 0
    for record in records:
        size = len(record.model_dump_json())
        if size > max_bytes:
            record = compact_record(record).model_copy(update={"truncated": True})
            size = len(record.model_dump_json())
        if not groups or used + size > max_bytes:
            groups.append([])
            used = 0
        groups[-1].append(record)
        used += size
    return groups
