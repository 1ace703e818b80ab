"""bridge.warmup: the create's background warm-up fills caches only; what fails in it is a line
for the log, never an error (the main thread meets the same problem in its place), and it never
takes the create's signals from the main thread."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from bridge.warmup import WarmUp, create_warm_up


def test_a_failing_task_is_reported_on_join_and_the_rest_still_run() -> None:
    ran: list[str] = []

    def fails() -> None:
        ran.append("fails")
        raise OSError("disk\nfull")

    warm = WarmUp([("first", fails), ("second", lambda: ran.append("second"))]).start()
    assert warm.join() == ["first: OSError: disk full"]     # one line, never raised
    assert ran == ["fails", "second"]
    assert warm.join() == ["first: OSError: disk full"]     # joining again waits for nothing


def test_it_runs_in_its_own_thread_with_the_create_signals_blocked() -> None:
    """SIGINT and SIGTERM must reach the main thread (its handlers, its interrupted waits)."""
    seen: dict[str, object] = {}

    def look() -> None:
        seen["thread"] = threading.current_thread().name
        seen["blocked"] = signal.pthread_sigmask(signal.SIG_BLOCK, [])

    assert WarmUp([("look", look)]).start().join() == []
    assert seen["thread"] == "envmod-warm-up"
    assert {signal.SIGINT, signal.SIGTERM} <= set(seen["blocked"])      # type: ignore[arg-type]
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])   # the main thread's: untouched


def test_the_create_warm_up_loads_the_templates_into_jinjas_bytecode_cache(tmp_path: Path) -> None:
    assert create_warm_up(["lmod", "tcl"], None, tmp_path).start().join() == []
    cached = list(tmp_path.glob("templates-*/*"))
    assert len(cached) >= 2, cached                 # each modulefile template compiled once, kept


def test_a_broken_site_template_is_only_a_line_for_the_log(tmp_path: Path) -> None:
    """The render in the main thread says it in one line (tests/unit/test_session_order.py)."""
    site = tmp_path / "site"
    (site / "modulefiles").mkdir(parents=True)
    (site / "modulefiles/env.lua.j2").write_text("{% if %}\n")
    failures = create_warm_up(["lmod"], site, tmp_path / "cache").start().join()
    assert len(failures) == 1 and failures[0].startswith("templates: TemplateSyntaxError"), failures
