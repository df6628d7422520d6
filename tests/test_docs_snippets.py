"""Every ```python block in README.md and docs/*.md runs, offline, on SQLite.

How a page runs: its blocks run in order, in one namespace (a later block may use what an
earlier one defined) and one event loop, in a fresh temporary directory, with top-level
``await`` allowed and no ``POWER_LOOP_*`` variable from the environment. A block that
raises fails the page's test, with the page's own line numbers in the traceback.

Blocks should run as they stand. When one cannot, it says what it needs in leading
comment lines of the form ``# docs: DIRECTIVE``, which readers see too:

``# docs: uses NAME, NAME``
    The runner defines these names before the block runs, as a reader would have them
    in their application (see :data:`GIVEN`): ``llm`` (a ``ScriptedLLM`` that answers
    every request), ``loop`` (an open ``StatefulAgentLoop`` on ``llm``), ``sid`` and
    ``session_id`` (a session of that loop), ``store`` (an open store), ``DSN``,
    ``KEY`` (a made-up API key), ``text`` (a user message) and ``client_disconnected``
    (a function saying the client went away).
``# docs: model answers TEXT``
    The given ``llm`` (and ``loop``) answers this block's requests with ``TEXT``.
``# docs: provider env``
    ``POWER_LOOP_PROVIDER``/``_API_KEY``/``_MODEL``/``_BASE_URL`` point at a local fake
    OpenAI server (tests/providers/fake_openai.py) that answers every request, so
    ``create_llm_service_from_env()`` talks to a real HTTP server.
``# docs: sqlite``
    String literals holding a PostgreSQL or MySQL DSN become a SQLite file, since the
    suite runs the docs on the SQLite default.
``# docs: fragment``
    Compiled, not run. Only for what cannot run at all; prefer the directives above.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import gc
import importlib
import inspect
import re
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from power_loop import LLMRequest, ScriptedLLM, StatefulAgentLoop, Turn, open_store, reply
from tests.providers.fake_openai import FakeOpenAI, completion

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
KNOWN = ("uses", "model answers", "provider env", "sqlite", "fragment")
MARKER = re.compile(r"#\s*docs:(?P<text>.*)$")
DIRECTIVE = re.compile(rf"\s*(?P<name>{'|'.join(KNOWN)})(?:\s+(?P<rest>\S.*))?")
SERVER_DSN = re.compile(r"""(["'])(?:postgresql|postgres|mysql|mariadb)://[^"']*\1""")
DEFAULT_ANSWER = "Done."
ENV_KEY = "sk-docs-0123456789"


@dataclass(frozen=True)
class Block:
    """One ```python block: where it is, its code, and its directives."""

    page: Path
    line: int
    """The 1-based line of the block's first code line in its page."""
    code: str
    directives: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def _directives(code: str, where: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in code.splitlines():
        if not line.lstrip().startswith("#"):
            break
        marker = MARKER.fullmatch(line.strip())
        if marker is None:
            continue  # an ordinary comment ("# myapp/agents.py")
        match = DIRECTIVE.fullmatch(marker["text"].rstrip())
        assert match, f"{where}: unknown directive {line.strip()!r} (known: {KNOWN})"
        found[match["name"]] = match["rest"] or ""
    return found


def blocks(page: Path) -> list[Block]:
    """The page's ```python blocks, in order."""
    found: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    start: int | None = None
    for number, line in enumerate(lines, start=1):
        if start is None and line.strip() == "```python":
            start = number + 1
        elif start is not None and line.strip() == "```":
            code = "\n".join(lines[start - 1:number - 1]) + "\n"
            where = f"{page.relative_to(REPO)}:{start}"
            found.append(Block(page, start, code, _directives(code, where)))
            start = None
    assert start is None, f"{page}: a ```python block is never closed"
    return found


def _all_blocks() -> list[Block]:
    return [block for page in PAGES for block in blocks(page)]


class _Answers:
    """The given model's answer, changed per block by ``# docs: model answers``."""

    def __init__(self) -> None:
        self.text = DEFAULT_ANSWER

    def __call__(self, request: LLMRequest) -> Turn:
        return reply(self.text)


class Given:
    """The names ``# docs: uses`` provides, built on first use, closed with the page."""

    def __init__(self) -> None:
        self.answers = _Answers()
        self.llm = ScriptedLLM(self.answers, model="docs-scripted")
        self._stack = contextlib.AsyncExitStack()
        self._values: dict[str, Any] = {}

    async def get(self, name: str) -> Any:
        if name not in self._values:
            assert name in GIVEN, f"nothing is given as {name!r} (given: {sorted(GIVEN)})"
            self._values[name] = await GIVEN[name](self)
        return self._values[name]

    async def aclose(self) -> None:
        await self._stack.aclose()

    async def _loop(self) -> StatefulAgentLoop:
        loop = StatefulAgentLoop(llm=self.llm, dsn="given.db")
        return await self._stack.enter_async_context(loop)

    async def _session(self) -> str:
        loop: StatefulAgentLoop = await self.get("loop")
        return await loop.new_session(system_prompt="You are a helpful assistant.")

    async def _store(self) -> Any:
        return await self._stack.enter_async_context(await open_store("given.db"))


async def _constant(value: Any) -> Any:
    return value


GIVEN: dict[str, Callable[[Given], Any]] = {
    "llm": lambda given: _constant(given.llm),
    "loop": Given._loop,
    "sid": Given._session,
    "session_id": lambda given: given.get("sid"),
    "store": Given._store,
    "DSN": lambda given: _constant("app.db"),
    "KEY": lambda given: _constant("sk-docs-example-key"),
    "text": lambda given: _constant("Hello!"),
    "client_disconnected": lambda given: _constant(lambda: True),
}
"""What ``# docs: uses NAME`` binds each name to."""


@contextlib.contextmanager
def _provider_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with FakeOpenAI(api_key=ENV_KEY) as server:
        server.script(*[completion(DEFAULT_ANSWER) for _ in range(20)])
        with monkeypatch.context() as env:
            env.setenv("POWER_LOOP_PROVIDER", "openai")
            env.setenv("POWER_LOOP_API_KEY", ENV_KEY)
            env.setenv("POWER_LOOP_MODEL", "gpt-test")
            env.setenv("POWER_LOOP_BASE_URL", server.base_url)
            yield


def _source(block: Block) -> str:
    code = block.code
    if "sqlite" in block.directives:
        code = SERVER_DSN.sub('"server.db"', code)
    # Leading newlines put the page's line numbers in tracebacks.
    return "\n" * (block.line - 1) + code


def _compile(block: Block) -> Any:
    # Not the real path: pytest would parse the Markdown file as Python to show it.
    return compile(_source(block), f"<{block.page.relative_to(REPO)}>", "exec",
                   flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)


async def _run_block(block: Block, namespace: dict[str, Any], given: Given,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    code = _compile(block)
    for name in filter(None, (n.strip() for n in block.directives.get("uses", "").split(","))):
        namespace[name] = await given.get(name)
    given.answers.text = block.directives.get("model answers") or DEFAULT_ANSWER
    with contextlib.ExitStack() as stack:
        if "provider env" in block.directives:
            stack.enter_context(_provider_env(monkeypatch))
        result = eval(code, namespace)  # the docs' own code, run on purpose
        if inspect.iscoroutine(result):
            await result


async def _run_page(page: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    given = Given()
    try:
        for block in blocks(page):
            if "fragment" in block.directives:
                _compile(block)
                continue
            try:
                await _run_block(block, namespace, given, monkeypatch)
            except Exception as exc:
                # Not chained: pytest would try to show the block's frames from the page.
                report = "".join(traceback.format_exception(exc))
                raise AssertionError(f"the block at {block.where} failed:\n{report}") from None
    finally:
        # What the blocks left (an abandoned stream, say) is finalized now, on this loop,
        # not later inside pytest's report writing.
        namespace.clear()
        gc.collect()
        await given.aclose()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_python_block_of_the_page_runs(page: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("POWER_LOOP_PROVIDER", "POWER_LOOP_API_KEY", "POWER_LOOP_MODEL",
                 "POWER_LOOP_BASE_URL", "POWER_LOOP_DSN"):
        monkeypatch.delenv(name, raising=False)
    asyncio.run(_run_page(page, monkeypatch))


def test_the_docs_have_blocks_and_fragments_stay_rare() -> None:
    every = _all_blocks()
    assert len(every) >= 20, "the block finder lost the docs' code"
    fragments = [block.where for block in every if "fragment" in block.directives]
    assert len(fragments) <= 2, f"too many blocks are only compiled: {fragments}"


@pytest.mark.parametrize("line", ["# docs: uses loop, sid", "# docs: model answers {\"a\": 1}",
                                  "# docs: provider env", "#docs: sqlite", "# docs: fragment"])
def test_each_directive_is_recognized(line: str) -> None:
    name = _directives(line + "\nx = 1\n", "here")
    assert list(name) and set(name) <= set(KNOWN)


def test_an_unknown_directive_is_refused() -> None:
    with pytest.raises(AssertionError, match="unknown directive"):
        _directives("# docs: needs gpu\n", "here")


def test_server_dsns_become_sqlite_only_when_asked() -> None:
    code = 'store = await open_store("postgresql://app@db/app?x=1")\n'
    plain = Block(REPO / "README.md", 1, code)
    marked = Block(REPO / "README.md", 1, code, {"sqlite": ""})
    assert "postgresql://" in _source(plain)
    assert _source(marked) == 'store = await open_store("server.db")\n'



DOTTED = re.compile(r"`(power_loop(?:\.\w+)+)`")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_dotted_name_the_prose_gives_resolves(page: Path) -> None:
    # `power_loop.llm.provider.ProviderService` in a sentence is an import path too.
    # Table rows are left out: there `power_loop.round` and its kind name span and
    # metric attributes (docs/observability.md), not Python objects.
    prose = "\n".join(line for line in page.read_text(encoding="utf-8").splitlines()
                      if not line.lstrip().startswith("|"))
    for dotted in DOTTED.findall(prose):
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                found: Any = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                continue
            for name in parts[cut:]:
                assert hasattr(found, name), f"{page.name}: `{dotted}` does not resolve"
                found = getattr(found, name)
            break
