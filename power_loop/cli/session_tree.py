"""``power-loop sessions tree ID``: a session and the sub-agent sessions below it."""

from __future__ import annotations

import argparse
from typing import Any

from power_loop.cli.formatting import print_json, send_dict, session_dict
from power_loop.cli.registry import set_handler
from power_loop.cli.store_access import VERIFY_READS, add_store_arguments, store_handler
from power_loop.llm.messages import Usage
from power_loop.store import SchemaPolicy, Store
from power_loop.store.children import SessionTree


def _tokens(node: SessionTree) -> tuple[int, int]:
    """Tokens of the node's sends: in all, and spent by its children."""
    total = children = 0
    for send in node.sends:
        total += Usage.from_json(send.usage).total_tokens
        children += Usage.from_json(send.usage.get("children")).total_tokens
    return total, children


def _line(node: SessionTree) -> str:
    total, children = _tokens(node)
    tokens = f"{total} tokens" + (f" ({children} by its agents)" if children else "")
    if node.link is None:
        return f"{node.session_id}  {node.status}  {tokens}"
    link = node.link
    return (f"{node.session_id}  {link.name}  {node.status}  {tokens}  "
            f"(send #{link.parent_send}, call {link.parent_call})")


def render_tree(tree: SessionTree) -> list[str]:
    """The tree as text lines, children indented under their parent."""
    lines = [_line(tree)]

    def below(node: SessionTree, indent: str) -> None:
        for i, child in enumerate(node.children):
            last = i == len(node.children) - 1
            lines.append(f"{indent}{'└─ ' if last else '├─ '}{_line(child)}")
            below(child, indent + ("   " if last else "│  "))

    below(tree, "")
    return lines


def tree_dict(node: SessionTree) -> dict[str, Any]:
    """The tree for JSON output: each node's session, link, sends and children."""
    link = node.link
    return {
        "session": session_dict(node.session),
        "agent": None if link is None else link.name,
        "link": None if link is None else {
            "parent_id": link.parent_id, "parent_send": link.parent_send,
            "parent_call": link.parent_call, "kind": link.kind, "depth": link.depth},
        "sends": [send_dict(s) for s in node.sends],
        "children": [tree_dict(c) for c in node.children],
    }


async def _tree(store: Store, args: argparse.Namespace) -> int:
    tree = await store.session_tree(str(args.session_id))
    if args.json:
        print_json(tree_dict(tree))
    else:
        print("\n".join(render_tree(tree)))
    return 0


def configure_tree(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session_id", metavar="ID", help="the session at the top")
    parser.add_argument("--json", action="store_true",
                        help="print the tree as nested JSON objects")
    add_store_arguments(parser, policy=SchemaPolicy.VERIFY, why=VERIFY_READS)
    set_handler(parser, store_handler(_tree))
