"""A session's page: its row, usage, waits, timers, folds, notes, and the timeline of
what it committed (messages, tool calls and results, sends opening and closing)."""

from __future__ import annotations

from power_loop.inspector.layout import (
    as_json,
    at,
    badge,
    json_text,
    page,
    pairs,
    session_link,
    table,
    tokens,
)
from power_loop.inspector.markup import Markup, el, path
from power_loop.inspector.reading import MAX_ITEMS, Reader, SessionView
from power_loop.llm.messages import Message, TextPart, ToolCallPart, ToolResultPart, Usage
from power_loop.store.children import SessionTree
from power_loop.store.feed import FeedItem, FeedMessage, FeedSend


def _part(part: object) -> Markup:
    if isinstance(part, TextPart):
        return el("pre", part.text, class_="text")
    if isinstance(part, ToolCallPart):
        return el("div", el("p", "tool call ", el("code", part.name), " ",
                            el("span", part.id, class_="muted")),
                  json_text(part.arguments), class_="call")
    if isinstance(part, ToolResultPart):
        flag = badge("error") if part.is_error else None
        return el("div", el("p", "result of ", el("code", part.name), " ", flag, " ",
                            el("span", part.call_id, class_="muted")),
                  el("pre", part.content), class_="result")
    return el("pre", repr(part))


def _message(item: FeedMessage) -> Markup:
    message: Message = item.message
    meta = el("details", el("summary", "meta"), as_json(dict(message.meta))) if (
        message.meta) else None
    return el("li", el("p", el("strong", message.role), f" · #{item.seq} · send "
                       f"#{item.send_index} · {at(item.created_at)}", class_="head"),
              [_part(p) for p in message.parts], meta, class_=f"message {message.role}")


def _send(item: FeedSend) -> Markup:
    if not item.finished:
        return el("li", f"send #{item.send_index} started ({item.source}) · {at(item.at)}",
                  class_="send")
    return el("li", el("p", f"send #{item.send_index} ", badge(item.status),
                       f" · {item.stop_reason or '-'} · {item.rounds} rounds · "
                       f"{tokens(item.usage)} · {at(item.at)}"),
              as_json(dict(item.error)) if item.error else None, class_="send")


def timeline(items: list[FeedItem]) -> Markup:
    rows = [_message(i) if isinstance(i, FeedMessage) else _send(i) for i in items
            if isinstance(i, FeedMessage | FeedSend)]
    return el("ol", rows, class_="timeline") if rows else el("p", "nothing committed yet",
                                                            class_="muted")


def _sends(view: SessionView) -> Markup:
    rows = []
    for send in view.sends:
        projection = view.projections.get(send.send_index)
        rows.append([f"#{send.send_index}", badge(send.status), send.source,
                     send.request_key or "-", at(send.created_at), at(send.finished_at),
                     send.rounds, send.stop_reason or "-", tokens(Usage.from_json(send.usage)),
                     as_json(dict(send.error)) if send.error else "-",
                     "-" if projection is None else el("details", el(
                         "summary", f"v{projection[0]}"), as_json(dict(projection[1])))])
    return table(("SEND", "STATUS", "SOURCE", "REQUEST KEY", "STARTED", "FINISHED", "ROUNDS",
                  "STOP", "TOKENS", "ERROR", "PROJECTION"), rows, empty="no sends")


def _waits(view: SessionView) -> Markup:
    rows = [[f"#{w.send_index}", w.wait_id, w.kind, el("code", w.tool_name),
             json_text(w.arguments), badge(w.status), w.decision or "-",
             at(w.expires_at) if w.expires_at else "never"]
            for waits in view.waits.values() for w in waits]
    return table(("SEND", "CALL", "KIND", "TOOL", "ARGUMENTS", "STATUS", "DECISION",
                  "EXPIRES"), rows, empty="no approvals or questions")


def _usage(view: SessionView) -> Markup:
    usage = view.usage
    return pairs([("own", f"{tokens(usage.own)}; {usage.own_model_calls} model calls"),
                  ("with sub-agents", f"{tokens(usage.total)}; {usage.model_calls} model "
                                      f"calls; {len(usage.children)} direct sub-sessions"),
                  ("folds", f"{tokens(usage.folds)}; {usage.fold_calls} model calls"),
                  *((f"model {m or '(unnamed)'}", tokens(u))
                    for m, u in sorted(usage.by_model.items()))])


def _folds(view: SessionView) -> Markup:
    return table(("FOLD", "STATUS", "STRATEGY", "SENDS", "SUMMARY", "NOTES WRITTEN",
                  "FINISHED"),
                 [[f.fold_index, badge(f.status), f.strategy, f"{f.first_send}-{f.end_send}",
                   el("pre", f.summary), as_json(list(f.notes_written)), at(f.finished_at)]
                  for f in view.folds], empty="no folds")


def _timers(view: SessionView) -> Markup:
    return table(("ID", "KIND", "STATUS", "DUE (UTC)", "FIRES", "MESSAGE"),
                 [[t.timer_id, t.kind, badge(t.status), at(t.due_at), t.fire_count, t.message]
                  for t in view.timers], empty="no timers")


def _header(view: SessionView) -> Markup:
    record = view.session
    link = view.link
    return pairs([
        ("state", badge("idle" if record.pending_send is None else "parked"
                        if record.parked_at else "pending")),
        ("parent", "-" if link is None else el(
            "span", session_link(link.parent_id),
            f" (agent {link.name}, send #{link.parent_send}, call {link.parent_call})")),
        ("sub-agents", el("a", "tree", href=path("session", "tree", query={"id": record.id}))),
        ("rows", f"{record.next_seq} messages, {record.send_count} sends; created "
                 f"{at(record.created_at)}, updated {at(record.updated_at)} (UTC)"),
        ("lease", record.lease_owner or "free"),
        ("metadata", as_json(dict(record.metadata))),
        ("system prompt", el("pre", record.system_prompt or "-"))])


def session_body(view: SessionView) -> Markup:
    """The part of the page the live updates replace."""
    cut = None if view.complete else el("p", f"only the first {MAX_ITEMS} items are shown",
                                        class_="muted")
    return el("div", _header(view), el("h2", "Waiting and decided calls"), _waits(view),
              el("h2", "Timeline"), timeline(view.items), cut,
              el("h2", "Sends"), _sends(view), el("h2", "Usage"), _usage(view),
              el("h2", "Timers"), _timers(view), el("h2", "Folds"), _folds(view),
              el("h2", "Notes"), table(("NOTE", "TEXT", "UPDATED"),
                                       [[n.note_id, el("pre", n.text), at(n.updated_at)]
                                        for n in view.notes], empty="no notes"),
              id="session", data_cursor=view.cursor or "")


async def session_page(reader: Reader, session_id: str) -> Markup:
    view = await reader.session(session_id)
    live = path("session", "live", query={"id": session_id, "after": view.cursor or ""})
    return page(f"Session {session_id}",
                el("p", el("span", "live", class_="live", id="live", data_events=live,
                           data_fragment=path("session", "fragment", query={"id": session_id}))),
                session_body(view), backend=reader.backend, live=True)


def _node(node: SessionTree) -> Markup:
    return el("li", session_link(node.session_id), " ", badge(node.status),
              f" agent {node.agent}" if node.agent else None,
              f" · {len(node.sends)} sends",
              el("ul", [_node(c) for c in node.children]) if node.children else None)


async def tree_page(reader: Reader, session_id: str) -> Markup:
    root = await reader.root_of(session_id)
    tree = await reader.tree(root)
    return page(f"Sub-agents of {root}", el("ul", _node(tree), class_="tree"),
                backend=reader.backend)
