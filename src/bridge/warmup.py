"""The warm-up: work a create needs later that does not depend on what its tools do, done in one
background thread while the main thread waits on them (pip, uv, conda, rattler's worker; the GIL
is free while it waits on a child).

It only fills caches that the main thread would fill anyway: modules imported (Jinja2, the
scan's, the email parser that reads METADATA), the loader's facts and the ld.so cache read (both cached per process), the modulefile
templates loaded through Jinja2's bytecode cache. So a failure in it is harmless: it is noted in
the create's log and dropped, and the main thread meets the same problem where it always did,
with its own one-line error (a broken site template: the render's `ConfigError`).

The session starts it after plan and joins it before the scan (:class:`bridge.session.CreateSession`).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Callable, Sequence

Task = tuple[str, Callable[[], object]]


class WarmUp:
    """Runs ``tasks`` (name, callable) in order in one daemon thread; :meth:`join` waits for them
    and returns what failed, one line each, never raising."""

    def __init__(self, tasks: Sequence[Task]) -> None:
        self.tasks = list(tasks)
        self.failures: list[str] = []
        self._thread: threading.Thread | None = None

    def start(self) -> "WarmUp":
        self._thread = threading.Thread(target=self._run, name="envmod-warm-up", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        # Signals for the process go to the main thread, where the create's handlers run and whose
        # waits they interrupt: delivered here, a Ctrl-C would wait for the child to end.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        for name, task in self.tasks:
            try:
                task()
            except Exception as exc:     # noqa: BLE001 -- harmless by design: the main thread does it again
                self.failures.append(f"{name}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")

    def join(self) -> list[str]:
        """Wait for the tasks (milliseconds of work); the failures, as lines for the log."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        return list(self.failures)


def create_warm_up(module_types: Sequence[str], site_templates: Path | None, cache_dir: Path | None) -> WarmUp:
    """The warm-up of a create whose modulefiles are of ``module_types`` (not started)."""
    return WarmUp([("scan", _warm_scan),
                   ("templates", lambda: _warm_templates(module_types, site_templates, cache_dir))])


def _warm_scan() -> None:
    import email.parser  # noqa: F401 -- the requirement scan reads each METADATA with it

    from .scan.evidence import host_config
    from .scan.ldcache import host_ldcache

    host_config()
    host_ldcache()


def _warm_templates(module_types: Sequence[str], site_templates: Path | None, cache_dir: Path | None) -> None:
    from .emit.modulefile import SYNTAXES
    from .emit.templating import make_environment

    env = make_environment(site_templates, cache_dir)
    for module_type in module_types:
        env.get_template(SYNTAXES[module_type].template)
