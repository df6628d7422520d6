"""The list pages: sessions (searched and filtered), timers and parked work, workflows."""

from __future__ import annotations

from power_loop.cli.formatting import compact
from power_loop.inspector.layout import as_json, at, badge, page, pairs, session_link, table
from power_loop.inspector.markup import Markup, el, path
from power_loop.inspector.reading import Reader
from power_loop.store.records import SessionRecord
from power_loop.store.session_search import MAX_SEARCH_CHARS, SESSION_STATES
from power_loop.timers.records import TIMER_STATUSES
from power_loop.workflows._journal import StepRecord, WorkflowRecord

LIMIT = 200


def state_of(record: SessionRecord) -> str:
    """``idle``, ``pending`` or ``parked`` (whether it waits takes the waits table)."""
    if record.pending_send is None:
        return "idle"
    return "parked" if record.parked_at is not None else "pending"


def _session_rows(records: list[SessionRecord]) -> list[list[object]]:
    return [[session_link(r.id), badge(state_of(r)), at(r.created_at), at(r.updated_at),
             r.next_seq, r.send_count, r.parent_id or "-", compact(dict(r.metadata), 80)]
            for r in records]


_SESSION_HEADERS = ("ID", "STATE", "CREATED (UTC)", "UPDATED (UTC)", "MESSAGES", "SENDS",
                    "PARENT", "METADATA")


async def sessions_page(reader: Reader, *, state: str | None, text: str | None) -> Markup:
    records = await reader.sessions(state=state, text=text, limit=LIMIT)
    options = [el("option", "any state", value="")] + [
        el("option", s, value=s, selected=s == state) for s in SESSION_STATES]
    form = el("form", el("input", type="search", name="q", value=text or "",
                         maxlength=MAX_SEARCH_CHARS, placeholder="id or metadata text"),
              el("select", options, name="state"), el("button", "Search", type="submit"),
              method="get", action=path("sessions"), class_="search")
    note = el("p", f"the newest {LIMIT} shown", class_="muted") if len(records) >= LIMIT else None
    return page("Sessions", form, table(_SESSION_HEADERS, _session_rows(records),
                                        empty="no sessions match"), note,
                backend=reader.backend)


async def timers_page(reader: Reader, *, status: str | None) -> Markup:
    timers = await reader.timers(status=status, limit=LIMIT)
    parked = await reader.parked(limit=LIMIT)
    links = el("p", "status: ", el("a", "all", href=path("timers")),
               [el("a", s, href=path("timers", query={"status": s}),
                   class_="current" if s == status else None) for s in TIMER_STATUSES],
               class_="filters")
    rows = [[t.timer_id, session_link(t.session_id), t.kind, badge(t.status), at(t.due_at),
             "-" if t.every is None else f"{t.every:g}s", t.fire_count, t.attempts,
             "-" if t.last_error is None else compact(dict(t.last_error), 120), t.message]
            for t in timers]
    return page(
        "Timers and parked work",
        el("h2", "Timers"), links,
        table(("ID", "SESSION", "KIND", "STATUS", "DUE (UTC)", "EVERY", "FIRES", "ATTEMPTS",
               "LAST ERROR", "MESSAGE"), rows, empty="no timers"),
        el("h2", "Parked sessions"),
        el("p", "Sessions whose unfinished send workers gave up resuming "
                "(`power-loop sessions unpark ID` lets them try again).", class_="muted"),
        table(_SESSION_HEADERS, _session_rows(parked), empty="no parked sessions"),
        backend=reader.backend)


def _outcome(record: WorkflowRecord) -> str:
    return compact(record.error if record.error is not None else record.output, 120)


async def workflows_page(reader: Reader) -> Markup:
    records = await reader.workflows(limit=LIMIT)
    rows = [[el("a", r.workflow_id, href=path("workflow", query={"id": r.workflow_id})),
             badge(r.status), "yes" if r.parked else "-", r.attempts, _outcome(r)] for r in records]
    return page("Workflows", table(("ID", "STATUS", "PARKED", "ATTEMPTS", "OUTPUT / ERROR"),
                                   rows, empty="no workflows"), backend=reader.backend)


def _step_row(step: StepRecord) -> list[object]:
    return [step.path, step.kind, badge(step.status), compact(step.output, 200),
            session_link(step.child_session) if step.child_session else "-"]


async def workflow_page(reader: Reader, workflow_id: str) -> Markup:
    record, steps = await reader.workflow(workflow_id)
    return page(
        f"Workflow {record.workflow_id}",
        pairs([("status", badge(record.status)), ("parked", "yes" if record.parked else "no"),
               ("attempts", record.attempts), ("epoch", record.lease_epoch),
               ("lease", record.lease_owner or "free"), ("input", as_json(record.input)),
               ("output", as_json(record.output)), ("error", as_json(record.error))]),
        el("h2", "Steps"),
        table(("PATH", "KIND", "STATUS", "OUTPUT", "CHILD SESSION"),
              [_step_row(s) for s in steps], empty="no step journaled yet"),
        el("h2", "Spec"), as_json(record.spec),
        backend=reader.backend)
