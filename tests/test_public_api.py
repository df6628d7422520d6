"""The public surface is curated: ``__all__`` and ``STABLE_API`` change only on purpose."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import types
from pathlib import Path
from typing import Any

import pytest

import power_loop

API_LISTS = Path(__file__).parent / "api"
CHANGELOG = Path(__file__).parent.parent / "CHANGELOG.md"
STORAGE_DOC = Path(__file__).parent.parent / "docs" / "storage.md"
SUBPACKAGES = ("context", "events", "llm", "loop", "store", "testing", "timers", "tools",
               "worker")


def _pinned(name: str) -> list[str]:
    lines = (API_LISTS / name).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


EXPECTED_ALL = _pinned("all.txt")
EXPECTED_STABLE_API = _pinned("stable.txt")
RELEASED_STABLE_API = _pinned("stable-released.txt")


def _unreleased_section() -> str:
    text = CHANGELOG.read_text(encoding="utf-8")
    start = text.index("## [Unreleased]")
    end = text.find("\n## [", start + 1)
    return text[start:end if end != -1 else len(text)]


def _difference(actual: set[str], pinned: list[str], what: str, where: str) -> str:
    added, removed = sorted(actual - set(pinned)), sorted(set(pinned) - actual)
    return (f"{what} changed: added {added}, removed {removed}. If that is on purpose, "
            f"update tests/api/{where} and say so in CHANGELOG.md under [Unreleased].")


def test_pinned_lists_are_sorted_and_unique() -> None:
    for pinned in (EXPECTED_ALL, EXPECTED_STABLE_API, RELEASED_STABLE_API):
        assert pinned == sorted(set(pinned))


def test_all_is_pinned() -> None:
    actual = set(power_loop.__all__)
    assert sorted(power_loop.__all__) == EXPECTED_ALL, _difference(
        actual, EXPECTED_ALL, "power_loop.__all__", "all.txt")
    assert len(power_loop.__all__) == len(actual), "__all__ names a name twice"


def test_stable_api_is_pinned() -> None:
    assert isinstance(power_loop.STABLE_API, frozenset)
    assert sorted(power_loop.STABLE_API) == EXPECTED_STABLE_API, _difference(
        set(power_loop.STABLE_API), EXPECTED_STABLE_API, "power_loop.STABLE_API", "stable.txt")


def test_stable_api_changes_since_the_release_are_in_the_changelog() -> None:
    changed = set(EXPECTED_STABLE_API) ^ set(RELEASED_STABLE_API)
    unreleased = _unreleased_section()
    missing = sorted(name for name in changed if f"`{name}`" not in unreleased)
    assert not missing, (
        f"these names entered or left STABLE_API since the last release but CHANGELOG.md's "
        f"[Unreleased] section does not name them (in backticks): {missing}")


def test_stable_api_is_a_chosen_subset_of_all() -> None:
    assert set(power_loop.STABLE_API) < set(power_loop.__all__)


def test_every_public_attribute_is_in_all() -> None:
    # As httpx's test_exported_members: nothing public hides outside __all__.
    exported = {name for name, value in vars(power_loop).items()
                if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    assert exported - {"STABLE_API"} == set(power_loop.__all__)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, Any] = {}
    exec("from power_loop import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(power_loop.__all__)


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_subpackage_all_names_exist(package: str) -> None:
    module = importlib.import_module(f"power_loop.{package}")
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"power_loop.{package}.__all__ names what it lacks: {missing}"


@pytest.mark.parametrize("name", EXPECTED_ALL)
def test_a_public_name_is_the_same_object_in_its_subpackage(name: str) -> None:
    # A subpackage that exports a name exports the very object the package does.
    obj = getattr(power_loop, name)
    for package in SUBPACKAGES:
        module = importlib.import_module(f"power_loop.{package}")
        if name in getattr(module, "__all__", ()):
            assert getattr(module, name) is obj, f"power_loop.{package}.{name} differs"


def _own_docstring(obj: Any) -> str:
    doc = obj.__doc__ if inspect.isclass(obj) or callable(obj) else None
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj):
        # A dataclass without a docstring gets its signature as __doc__: not documentation.
        signature = f"{obj.__name__}{inspect.signature(obj)}".replace(" -> None", "")
        if doc == signature:
            return ""
    return (doc or "").strip()


@pytest.mark.parametrize("name", EXPECTED_ALL)
def test_public_name_is_importable_and_documented(name: str) -> None:
    obj = getattr(power_loop, name)
    assert obj.__module__.startswith("power_loop"), f"{name} is re-exported from elsewhere"
    assert _own_docstring(obj), f"{name} has no docstring"


def test_package_is_documented_and_versioned() -> None:
    assert power_loop.__doc__ and power_loop.__doc__.strip()
    assert isinstance(power_loop.__version__, str) and power_loop.__version__


def test_the_stores_public_face_is_the_documented_one() -> None:
    # docs/storage.md lists every public Store member by concern; the rest is private.
    text = STORAGE_DOC.read_text(encoding="utf-8")
    start = text.index("## The Store's public face")
    section = text[start:text.index("\n## ", start + 1)]
    table = [line for line in section.splitlines() if line.startswith("| ")][1:]
    documented = {name for row in table for name in re.findall(r"`(\w+)(?:\(\))?`",
                                                                row.split("|")[2])}
    public = {name for name in dir(power_loop.Store) if not name.startswith("_")}
    assert public == documented, (
        f"Store's public members and docs/storage.md's \"The Store's public face\" differ: "
        f"undocumented {sorted(public - documented)}, gone {sorted(documented - public)}. "
        "Document a new public member there, or give an internal one a leading underscore.")
