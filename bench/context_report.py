"""The results of ``python -m bench context`` and how they are printed (tables or JSON)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from bench.machine import render_table

FLAT = 1.25
"""Long session within this factor of a young one (and of its first window): ``flat``."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One send."""

    wall_us: float
    cpu_us: float
    store_us: float
    tokens: int
    """Estimated input tokens of the send's first request."""
    messages: int
    """Messages in the send's first request."""
    send_calls: int
    """Model calls made for the send itself."""
    fold_calls: int
    """Model calls made by folds during the send (0: it did not fold)."""


@dataclass(frozen=True, slots=True)
class Window:
    """Sends ``first..last`` (1-based, inclusive) of a session, summarised."""

    first: int
    last: int
    wall_median_us: float
    wall_p95_us: float
    cpu_median_us: float
    store_median_us: float
    store_share: float
    """Store time over wall time, summed over the window."""
    tokens_median: float
    tokens_max: int
    messages_median: float
    messages_max: int
    folding_sends: int

    @classmethod
    def of(cls, samples: Sequence[Sample], first: int) -> Window:
        wall = [s.wall_us for s in samples]
        ordered = sorted(wall)
        return cls(
            first=first, last=first + len(samples) - 1,
            wall_median_us=statistics.median(wall),
            wall_p95_us=ordered[round(0.95 * (len(ordered) - 1))],
            cpu_median_us=statistics.median(s.cpu_us for s in samples),
            store_median_us=statistics.median(s.store_us for s in samples),
            store_share=sum(s.store_us for s in samples) / sum(wall),
            tokens_median=statistics.median(s.tokens for s in samples),
            tokens_max=max(s.tokens for s in samples),
            messages_median=statistics.median(s.messages for s in samples),
            messages_max=max(s.messages for s in samples),
            folding_sends=sum(1 for s in samples if s.fold_calls))


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The long session's window ending at a checkpoint, and the young session's sends
    made at the same time (interleaved with it, one for one)."""

    long: Window
    young: Window

    def ratio(self, metric: str) -> float:
        young = float(getattr(self.young, metric))
        return float(getattr(self.long, metric)) / young if young else float("nan")


@dataclass
class BackendResult:
    """One backend's run, or why there is none."""

    backend: str
    where: str = ""
    server: str = ""
    problem: str | None = None
    sends: int = 0
    seconds: float = 0.0
    checkpoints: list[Checkpoint] = field(default_factory=list)
    folds: int = 0
    fold_calls: int = 0
    send_calls: int = 0
    notes: int = 0
    cold_wall_us: float = 0.0
    cold_store_us: float = 0.0
    cold_tokens: int = 0


# -- output -----------------------------------------------------------------------------

LEGEND = """\
sends       the window: up to --window sends of the long session, ending at that send
ms p50/p95  wall milliseconds per send (median, 95th percentile), folding sends included
cpu p50     this process's CPU milliseconds per send (median), driver threads included
store       median milliseconds per send inside Store calls, and the store's share of the
            window's wall time
tokens      estimated input tokens of each send's first request (median / max)
msgs        messages in each send's first request (median / max)
folding     sends in the window that folded (each fold: 2 model calls, note ops, a commit)
young       a new session's first sends, made during the window one for one with the long
            session's, so both meet the same machine load (a shared machine's load drifts
            more over a run than a send's cost could): x is long / young
cold send   one send to the long session by a new loop (nothing cached) after the run"""


def _window_row(backend: str, w: Window) -> list[str]:
    return [backend, f"{w.first:,}-{w.last:,}",
            f"{w.wall_median_us / 1e3:.2f} / {w.wall_p95_us / 1e3:.2f}",
            f"{w.cpu_median_us / 1e3:.2f}",
            f"{w.store_median_us / 1e3:.2f} ({w.store_share:.0%})",
            f"{w.tokens_median:,.0f} / {w.tokens_max:,}",
            f"{w.messages_median:.0f} / {w.messages_max}", str(w.folding_sends)]


def _pair_row(backend: str, c: Checkpoint) -> list[str]:
    return [backend, f"{c.long.last:,}",
            f"{c.long.wall_median_us / 1e3:.2f}", f"{c.young.wall_median_us / 1e3:.2f}",
            f"x{c.ratio('wall_median_us'):.2f}",
            f"{c.long.store_median_us / 1e3:.2f}", f"{c.young.store_median_us / 1e3:.2f}",
            f"x{c.ratio('store_median_us'):.2f}"]


def _verdict(result: BackendResult) -> str:
    first, last = result.checkpoints[0].long, result.checkpoints[-1]
    ratios = [last.ratio("wall_median_us"), last.ratio("store_median_us"),
              last.long.tokens_median / first.tokens_median,
              last.long.messages_median / first.messages_median]
    verdict = "flat" if all(r <= FLAT for r in ratios) else "GROWS"
    return (f"  {result.backend}: at {last.long.last:,} sends, a send takes x{ratios[0]:.2f} "
            f"the wall time and x{ratios[1]:.2f} the store time of a young session's; its "
            f"request has x{ratios[2]:.2f} the tokens and x{ratios[3]:.2f} the messages of "
            f"sends {first.first}-{first.last} -> {verdict} (within x{FLAT})")


def render(results: Sequence[BackendResult], facts: dict[str, str], *, workload: str,
           window: int) -> str:
    """The report: machine header, the tables, folds, the cold send, failures."""
    header = dict(facts)
    for result in results:
        header[result.backend] = (f"{result.server} at {result.where}" if result.server
                                  else result.where)
    header["workload"] = workload
    width = max(len(k) for k in header)
    lines = ["power_loop context benchmark: a long folding session, send by send", ""]
    lines += [f"  {key:<{width}}  {value}" for key, value in header.items()]
    measured = [r for r in results if not r.problem]
    if measured:
        lines += ["", f"the long session, per send, over windows of {window} sends",
                  render_table(["backend", "sends", "ms p50 / p95", "cpu p50",
                                "store ms (share)", "tokens p50 / max", "msgs p50 / max",
                                "folding"],
                               [_window_row(r.backend, c.long) for r in measured
                                for c in r.checkpoints], left=2)]
        lines += ["", "beside a young session at the same time (medians)", render_table(
            ["backend", "at send", "ms long", "young", "x", "store ms long", "young", "x"],
            [_pair_row(r.backend, c) for r in measured for c in r.checkpoints], left=2)]
        lines += [_verdict(r) for r in measured]
        lines += ["", "folds and model calls (the long session)", render_table(
            ["backend", "sends", "seconds", "folds", "fold calls", "calls/fold",
             "send calls", "notes", "cold send ms (store)", "cold tokens"],
            [[r.backend, f"{r.sends:,}", f"{r.seconds:.1f}", f"{r.folds:,}",
              f"{r.fold_calls:,}", f"{r.fold_calls / max(1, r.folds):.1f}",
              f"{r.send_calls:,}", str(r.notes),
              f"{r.cold_wall_us / 1e3:.2f} ({r.cold_store_us / 1e3:.2f})",
              f"{r.cold_tokens:,}"] for r in measured])]
        lines += ["", LEGEND]
    failed = [r for r in results if r.problem]
    if failed:
        lines += ["", "NOT MEASURED"]
        lines += [f"  {r.backend}: {r.problem}" for r in failed]
    return "\n".join(lines)


def as_json(results: Sequence[BackendResult], facts: dict[str, str],
            config: dict[str, int]) -> str:
    """The results (every window, long and young) as a JSON document."""
    return json.dumps({"benchmark": "context", "machine": facts, "config": config,
                       "backends": [asdict(r) for r in results]}, indent=2)


