"""The Store is composed of parts, one per concern, that do not override one another."""

from __future__ import annotations

from power_loop.store.children import ChildOps
from power_loop.store.claims import ClaimOps
from power_loop.store.context_ops import ContextOps
from power_loop.store.core import StoreCore
from power_loop.store.sends import SendOps
from power_loop.store.store import Store
from power_loop.store.timer_ops import TimerOps

PARTS = (ChildOps, ClaimOps, TimerOps, ContextOps, SendOps)


def test_each_part_derives_from_the_core_alone_and_the_store_composes_them() -> None:
    for part in PARTS:
        assert part.__bases__ == (StoreCore,), part
    assert Store.__bases__ == PARTS
    assert not Store.__abstractmethods__  # every seam the core declares, a part provides


def test_no_two_parts_define_the_same_member() -> None:
    # Then which part wins is never a question of the order they are composed in; the
    # initialisers are the exception, and each calls the next (``super().__init__``).
    owner: dict[str, str] = {}
    for part in (Store, *PARTS):
        for name in vars(part):
            if name in ("__module__", "__doc__", "__init__", "__annotations__",
                        "__abstractmethods__", "_abc_impl", "__parameters__",
                        "__static_attributes__", "__firstlineno__"):
                continue
            assert name not in owner, f"{name} is defined by {owner[name]} and {part.__name__}"
            owner[name] = part.__name__


def test_a_seam_is_declared_on_the_core_and_provided_by_one_part() -> None:
    for name in StoreCore.__abstractmethods__:
        providers = [part.__name__ for part in (Store, *PARTS) if name in vars(part)]
        assert len(providers) == 1, (name, providers)
