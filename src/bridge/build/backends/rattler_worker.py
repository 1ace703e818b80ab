"""The child process that does py-rattler's work for :mod:`bridge.build.backends.rattler`.

py-rattler 0.27/0.28 crashes at interpreter exit in 10-30 % of short runs, after its work is done.
So envmod never imports rattler itself: each solve or install runs here, in a process of its own,
which writes its result to a file (written aside, then renamed into place) and
only then leaves with ``os._exit``. The parent believes that file and nothing else: a crash after
it was written cannot fail a create, and a crash before it cannot pass for a success.

Run as ``python rattler_worker.py`` with two JSON lines on stdin: the set-up (the parent's pid
and ``sys.path``), then the request (see :func:`handle`). Between the two it imports rattler, so
a parent that starts the worker early (:meth:`RattlerEngine.start`) has that import done by the
time it sends the request; a worker whose stdin ends before a request exits doing nothing. Only
the standard library and rattler are imported: the file is run by its path, whatever the
parent's import set-up (the parent passes its ``sys.path``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from typing import Any

RESULT_NAME = "result.json"


def _die_with_parent(parent_pid: int) -> None:
    """Linux: when the parent (envmod) dies, so does this worker, instead of installing on into
    an env nobody will use. Best effort: elsewhere it just runs to its end."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)           # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:              # it died before prctl took effect
        os._exit(1)


def _package(record: Any) -> dict[str, str]:
    """A solved or installed record as CondaPackage fields; the channel as ``conda list`` gives
    it (its URL, label included, without the trailing slash)."""
    return {"name": record.name.normalized, "version": str(record.version), "build": str(record.build),
            "channel": str(record.channel or "").rstrip("/"), "subdir": str(record.subdir)}


async def _solve(rattler: Any, request: dict[str, Any]) -> list[Any]:
    gateway = rattler.Gateway(cache_dir=os.path.join(request["cache_dir"], "repodata"))
    return await rattler.solve(request["channels"], request["specs"], gateway=gateway,
                               virtual_packages=rattler.VirtualPackage.detect())


async def _install(rattler: Any, request: dict[str, Any]) -> list[Any]:
    records = await _solve(rattler, request)
    await rattler.install(records, target_prefix=request["prefix"],
                          cache_dir=os.path.join(request["cache_dir"], "pkgs"), show_progress=False,
                          execute_link_scripts=False)
    # (not requested_specs=: py-rattler 0.28 passes its MatchSpec wrappers on unwrapped and fails;
    # the record keeps the specs)
    return records


def _error_kind(exc: BaseException) -> str:
    """Which part of the request failed, from rattler's exception class: the engine turns it into
    envmod's error class."""
    return {"SolverError": "solve", "InvalidMatchSpecError": "spec", "GatewayError": "channel",
            "FetchRepoDataError": "channel", "InvalidChannelError": "channel"}.get(type(exc).__name__, "other")


def handle(request: dict[str, Any]) -> dict[str, Any]:
    """Do one request: ``{"op": "solve" | "install", "specs": [...], "channels": [...],
    "cache_dir": ..., "prefix": ... (install)}``; the result is ``{"ok": true, "packages": [...]}``
    or ``{"ok": false, "kind": ..., "message": ...}``."""
    try:
        import rattler
    except ImportError as exc:
        return {"ok": False, "kind": "missing", "message": str(exc)}
    work = _install if request["op"] == "install" else _solve
    try:
        records = asyncio.run(work(rattler, request))
    except Exception as exc:        # rattler's errors are plain Exceptions of its own classes
        return {"ok": False, "kind": _error_kind(exc), "message": str(exc)}
    return {"ok": True, "packages": [_package(r) for r in records]}


def write_result(directory: str, result: dict[str, Any]) -> None:
    """Put ``result`` in ``directory`` as RESULT_NAME, all or nothing. Not fsynced (it cost 7 ms
    of every create): what is closed is the kernel's, which a crash of this process cannot take
    back, and a crash of the machine ends the create that would read it anyway."""
    partial = os.path.join(directory, RESULT_NAME + ".part")
    with open(partial, "w", encoding="utf-8") as fh:
        json.dump(result, fh)
    os.replace(partial, os.path.join(directory, RESULT_NAME))


def _import_rattler() -> None:
    """rattler imported ahead of the request (most of a worker's start); a failure is left for
    :func:`handle` to report."""
    try:
        import rattler  # noqa: F401
    except ImportError:
        pass


def main() -> None:
    setup = json.loads(sys.stdin.readline())
    _die_with_parent(setup["parent_pid"])
    sys.path[:0] = [p for p in setup.get("sys_path", []) if p not in sys.path]
    _import_rattler()
    line = sys.stdin.readline()
    if not line.strip():
        return              # started early for a create that needed no rattler work after all
    request = json.loads(line)
    write_result(request["result_dir"], handle(request))


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)         # never run rattler's exit-time teardown, the part that crashes
