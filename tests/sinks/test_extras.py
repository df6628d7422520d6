"""The core stays dependency-light: the sinks' SDKs load only when their sink is made,
and a missing one is a typed error naming the extra to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_power_loop_imports_no_sink_sdk() -> None:
    loaded = run("""
        import sys
        import power_loop, power_loop.events.sinks
        from power_loop import JsonlSink, MemorySink, OtelSink, PrometheusSink
        print(sorted(m for m in sys.modules
                     if m.split(".")[0] in ("opentelemetry", "prometheus_client")))
    """)
    assert loaded == "[]"


@pytest.mark.parametrize(("sink", "module", "package", "extra"), [
    ("OtelSink", "opentelemetry", "opentelemetry-api", "otel"),
    ("PrometheusSink", "prometheus_client", "prometheus-client", "prometheus"),
])
def test_a_missing_sdk_names_its_extra(sink: str, module: str, package: str,
                                       extra: str) -> None:
    said = run(f"""
        import sys
        sys.modules[{module!r}] = None  # as if it were not installed
        import power_loop
        try:
            power_loop.{sink}()
        except power_loop.MissingDriverError as exc:
            print(exc.code, exc.driver, exc.extra, "|", exc)
    """)
    assert said.startswith(f"missing_driver {package} {extra} |")
    assert f"pip install 'power-loop[{extra}]'" in said
