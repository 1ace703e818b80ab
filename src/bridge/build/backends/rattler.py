"""The rattler engine: conda environments solved and installed by py-rattler, no Anaconda tool.

py-rattler is a library (``pip install 'envmod[rattler]'``), and one that crashes at interpreter
exit in a good share of short runs, after its work is done. envmod never imports it: every solve
and install runs in a child process (``rattler_worker.py``) that writes its result to a file
before it exits, and only that file says whether the work was done. A worker that crashes on its
way out after writing a success has succeeded; one that dies before writing has failed, in one
line, whatever its exit code.

rattler reads no ``.condarc``: the channels are those the caller passes, else ``conda_channels:``
in the config; none at all is refused in one line. Packages and repodata are cached under
envmod's cache dir, in a directory of the user's own (``<cache_dir>/rattler/<user>``).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ...errors import BuildError, ConfigError, PlanError, UsageError
from ...fsutil import effective_user, scratch_dir
from .conda_engine import CondaPackage
from .condaenv import CondaEnvBackend

if TYPE_CHECKING:
    from ...config import Settings
    from ...discover.stack import CentralStack

WORKER = Path(__file__).with_name("rattler_worker.py")
RESULT_NAME = "result.json"       # as rattler_worker.RESULT_NAME (the worker imports nothing of envmod)
HOW_TO_GET_RATTLER = "install it with: pip install 'envmod[rattler]' (into envmod's own environment)"
NO_CHANNELS_HINT = "rattler reads no .condarc: name the channels in the config, e.g. 'conda_channels: [URL, ...]'"
#: seconds a worker may take: a solve reads repodata, an install may download and link many packages
TIMEOUT = {"solve": 600, "install": 3600}


@functools.lru_cache(maxsize=None)
def rattler_version() -> str | None:
    """py-rattler's version if it is installed beside envmod, found without importing it (once
    per process: a create asks at check, plan and record)."""
    if importlib.util.find_spec("rattler") is None:
        return None
    from importlib import metadata  # here: its import costs every create that never asks

    try:
        return metadata.version("py-rattler")
    except metadata.PackageNotFoundError:
        return "unknown"


# -- a worker started ahead of its request ---------------------------------------------------------
# A worker spends most of a small env's time starting Python and importing rattler, none of which
# depends on the request: started early, that overlaps envmod's own start and planning. It imports
# rattler, then waits on stdin for the request (rattler_worker.py).

def _launch(worker: Sequence[str]) -> subprocess.Popen:
    """A worker, given its set-up line (our pid, to die with us; our ``sys.path``). Started from
    the main thread: the worker dies with the thread that started it (PR_SET_PDEATHSIG)."""
    proc = subprocess.Popen(list(worker), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="replace")
    assert proc.stdin is not None
    try:
        proc.stdin.write(json.dumps({"parent_pid": os.getpid(), "sys_path": sys.path}) + "\n")
        proc.stdin.flush()
    except BrokenPipeError:
        pass            # it died already: its missing result says so
    return proc


def _stop(proc: subprocess.Popen) -> None:
    """Stop a worker that was given no request (it has written nothing: killing it is harmless)."""
    proc.kill()
    proc.communicate()


def _one_line(message: str) -> str:
    """rattler's message (a chain of 'Caused by:' lines, or a solver's tree of conflicts) in one line."""
    parts = [line.strip(" │├└─") for line in message.splitlines()]
    return "; ".join(p for p in parts if p) or "no message"


def _signal_name(returncode: int) -> str:
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit {returncode}"


class RattlerEngine:
    """:class:`~bridge.build.backends.conda_engine.CondaEngine` on py-rattler, in child processes."""

    name = "rattler"

    def __init__(self, settings: "Settings | None" = None, worker: Sequence[str] | None = None) -> None:
        self.settings = settings
        #: the command of the worker (a test names a fake one here); the request goes on its stdin
        self.worker = list(worker) if worker else [sys.executable, "-I", str(WORKER)]
        self._started: subprocess.Popen | None = None

    def start(self) -> None:
        """Have a worker ready before there is work for it; the next solve or install hands it
        its request, :meth:`close` stops it if none comes."""
        if self._started is None:
            self._started = _launch(self.worker)

    def close(self) -> None:
        """Stop the worker :meth:`start` readied, if it got no request."""
        proc, self._started = self._started, None
        if proc is not None:
            _stop(proc)

    # -- what the backend asks -------------------------------------------------------------------

    def check(self) -> None:
        """Fail in one line, before anything is built, when py-rattler is not installed."""
        if rattler_version() is None:
            raise ConfigError("the rattler backend needs py-rattler, which is not installed beside envmod's "
                              f"Python ({sys.executable})", hint=HOW_TO_GET_RATTLER)

    def describe(self) -> dict[str, Any]:
        return {"tool": "rattler", "version": rattler_version(), "executable": sys.executable,
                "solver": "resolvo", "module": None}

    def channels(self, given: Sequence[str]) -> list[str]:
        """The channels to use: ``given``, else the config's ``conda_channels``; none is an error."""
        channels = list(given) or list(getattr(self.settings, "conda_channels", None) or [])
        if not channels:
            raise ConfigError("the rattler backend has no channels to install from", hint=NO_CHANNELS_HINT)
        return channels

    @property
    def cache_dir(self) -> Path:
        """This user's rattler package and repodata cache under envmod's cache dir."""
        base = getattr(self.settings, "cache_dir", None) or Path(tempfile.gettempdir()) / f"envmod-{effective_user()}"
        return Path(base) / "rattler" / effective_user()

    def solve(self, specs: Sequence[str], channels: Sequence[str]) -> list[CondaPackage]:
        return self._run("solve", specs, channels)

    def install(self, prefix: Path, specs: Sequence[str], channels: Sequence[str]) -> list[CondaPackage]:
        """Solve and install in one worker; the packages it linked."""
        # rattler writes the prefix into shebangs and prefix placeholders: a relative one breaks them
        target = Path(os.path.abspath(prefix))
        given_empty = target.is_dir() and not target.is_symlink() and not any(target.iterdir())
        if os.path.lexists(target) and not given_empty:
            raise BuildError(f"rattler install: {target} exists already and is not empty (an env is made in a new "
                             "directory)")
        try:
            return self._run("install", specs, channels, prefix=str(target))
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)     # a half-linked env is of no use to anyone
            if given_empty:
                target.mkdir()                            # the caller's (empty) directory stays theirs
            raise

    def installed(self, prefix: Path) -> list[CondaPackage]:
        """The env's conda packages, from its ``conda-meta/*.json`` (conda's own records, which
        rattler writes too): plain JSON, no rattler needed."""
        packages = []
        for meta in sorted((Path(prefix) / "conda-meta").glob("*.json")):
            data = json.loads(meta.read_text(encoding="utf-8"))
            packages.append(CondaPackage(name=data["name"], version=data["version"], build=data["build"],
                                         channel=str(data.get("channel") or "").rstrip("/"),
                                         subdir=data.get("subdir", "")))
        return packages

    # -- the child process -----------------------------------------------------------------------

    def _run(self, op: str, specs: Sequence[str], channels: Sequence[str], prefix: str | None = None) -> list[CondaPackage]:
        request = {"op": op, "specs": list(specs), "channels": self.channels(channels), "prefix": prefix,
                   "cache_dir": str(self.cache_dir)}
        self.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with scratch_dir("rattler") as result_dir:
            request["result_dir"] = str(result_dir)
            proc = self._spawn(op, request)
            result = self._read_result(result_dir, op, proc)
        return self._packages(op, request, result)

    def _spawn(self, op: str, request: dict[str, Any]) -> subprocess.CompletedProcess:
        """The worker started ahead (else a new one) given ``request``, waited for."""
        proc, self._started = self._started or _launch(self.worker), None
        try:
            stdout, stderr = proc.communicate(json.dumps(request) + "\n", timeout=TIMEOUT[op])
        except subprocess.TimeoutExpired as exc:
            raise BuildError(f"rattler {op} took longer than {exc.timeout:.0f}s and was stopped") from exc
        finally:
            if proc.returncode is None:      # timed out, or we were interrupted: it stops with us
                _stop(proc)
        return subprocess.CompletedProcess(self.worker, proc.returncode, stdout, stderr)

    @staticmethod
    def _read_result(result_dir: Path, op: str, proc: subprocess.CompletedProcess) -> dict[str, Any]:
        """What the worker wrote; a worker that wrote nothing failed, however it ended."""
        try:
            return json.loads((result_dir / RESULT_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise BuildError(f"rattler {op} failed: its worker ended ({_signal_name(proc.returncode)}) before "
                             f"giving a result: {last}") from None

    def _packages(self, op: str, request: dict[str, Any], result: dict[str, Any]) -> list[CondaPackage]:
        if result.get("ok"):
            return [CondaPackage.from_dict(p) for p in result["packages"]]
        kind, message = result.get("kind"), _one_line(str(result.get("message", "")))
        specs, channels = " ".join(request["specs"]), ", ".join(request["channels"])
        if kind == "missing":
            raise ConfigError(f"the rattler backend needs py-rattler, which its worker cannot import: {message}",
                              hint=HOW_TO_GET_RATTLER)
        if kind == "solve":
            raise PlanError(f"rattler cannot solve {specs} from {channels}: {message}")
        if kind == "spec":
            raise UsageError(f"not a conda package spec: {message} (in: {specs})")
        if kind == "channel":
            raise BuildError(f"rattler cannot read the channels {channels}: {message}")
        raise BuildError(f"rattler {op} of {specs} failed: {message}")


class RattlerBackend(CondaEnvBackend):
    """``--backend rattler``: a conda env exactly as ``--backend conda`` makes it (record, MPI
    rule, module, safety), solved and installed by py-rattler: no Anaconda tool is run."""

    name = "rattler"

    def make_engine(self, stack: "CentralStack", environ: Mapping[str, str]) -> RattlerEngine:
        return RattlerEngine(self.settings)

    def check(self) -> None:
        if self.engine is None:
            RattlerEngine(self.settings).check()

    def start_early(self) -> None:
        """The engine's worker, started before the create plans (without py-rattler, nothing:
        :meth:`check` says so in one line)."""
        if self.engine is None and rattler_version() is not None:
            engine = RattlerEngine(self.settings)
            engine.start()
            self.engine = engine

    def close(self) -> None:
        if isinstance(self.engine, RattlerEngine):
            self.engine.close()
