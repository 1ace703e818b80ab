"""What a user sees while envmod works: one line per step with elapsed time, and a full log.

Long steps (compiling against the central stack) run with their output going to the log on
disk; on a terminal a status line shows the latest output, elsewhere a heartbeat line every
``heartbeat`` seconds shows the step is alive.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Callable, Mapping, Sequence

from .errors import BuildError

if TYPE_CHECKING:
    import subprocess
    import threading


class Reporter:
    def __init__(self, stream: IO[str] | None = None, quiet: bool = False, heartbeat: float = 30.0) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.heartbeat = heartbeat
        self.start = time.monotonic()
        self.log: IO[str] | None = None
        self.log_path: Path | None = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def open_log(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = path
        self.log = open(path, "a", encoding="utf-8", errors="replace")

    def close_log(self) -> None:
        if self.log:
            self.log.close()
            self.log = None

    def _to_log(self, text: str) -> None:
        if self.log:
            self.log.write(text if text.endswith("\n") else text + "\n")
            self.log.flush()

    def step(self, label: str, detail: str = "") -> None:
        line = f"[{self.elapsed:6.1f}s] {label}" + (f": {detail}" if detail else "")
        self._to_log(line)
        if not self.quiet:
            print(line, file=self.stream, flush=True)

    def note(self, text: str) -> None:
        """A line for the log alone (nothing the user needs to see)."""
        self._to_log(text)

    @property
    def log_name(self) -> str | None:
        """The log's path as an error names it (None: no log is kept)."""
        return str(self.log_path) if self.log_path else None

    def run(self, argv: Sequence[str], *, label: str, env: Mapping[str, str] | None = None,
            cwd: str | None = None, silent_until: Callable[[str], bool] | None = None) -> None:
        """Run a command with its output in the log; raise :class:`BuildError` if it fails.

        ``silent_until``: an attempt that may fail unseen. Nothing of the run shows on the stream
        (no status line, no heartbeat) until this returns True for a line of its output; it is
        called with each line until then, and may announce the run with a :meth:`step`."""
        self._to_log(f"$ {' '.join(argv)}")
        if env:
            self._to_log("  with " + " ".join(f"{k}={v}" for k, v in sorted(env.items())
                                              if k not in os.environ or os.environ[k] != v))
        tail: list[str] = []
        proc, mask = self._start(argv, label=label, env=env, cwd=cwd)
        self._follow(proc, mask, label, tail, silent_until)
        if proc.returncode != 0:
            reason = _failure_reason(tail)
            raise BuildError(f"{label} failed (exit {proc.returncode}): {reason.strip()[:200]}", log=self.log_name)

    def _start(self, argv: Sequence[str], *, label: str, env: Mapping[str, str] | None,
               cwd: str | None) -> tuple[subprocess.Popen, set[int]]:
        """Start the command with its output piped to us; returns it and the signal mask to restore.


        Signals wait while the child starts, so an interruption always finds it to stop; the
        child itself starts with them unblocked, in a process group of its own so that
        stopping it stops pip *and* the build backends it runs. The caller unblocks them once
        it is ready to stop the child."""
        import subprocess  # only steps that run a program need it

        stopping = {signal.SIGINT, signal.SIGTERM}
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, stopping)
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    errors="replace", env=dict(env) if env else None, cwd=cwd,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_UNBLOCK, stopping))
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            raise BuildError(f"{label} could not start {argv[0]}: {exc.strerror}", log=self.log_name) from exc
        return proc, mask

    def _follow(self, proc: subprocess.Popen, mask: set[int], label: str, tail: list[str],
                silent_until: Callable[[str], bool] | None = None) -> None:
        """Copy the command's output to the log (its last lines to ``tail``) until it ends, with
        its last line on a terminal, or a heartbeat otherwise; stop it if we are interrupted."""
        import threading

        silent = [silent_until is not None]

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self._to_log(line.rstrip("\n"))
                tail.append(line.rstrip())
                del tail[:-40]
                if silent[0] and silent_until is not None and silent_until(line.rstrip()):
                    silent[0] = False

        started = time.monotonic()
        tty = not self.quiet and self.stream.isatty()
        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            self._watch(reader, label, started, tty, tail, silent)
            proc.wait()
        except BaseException:
            _stop_group(proc)
            raise
        finally:
            if tty and not silent[0]:
                self.stream.write("\r\033[K")
                self.stream.flush()

    def _watch(self, reader: threading.Thread, label: str, started: float, tty: bool, tail: list[str],
               silent: list[bool]) -> None:
        """Until the output ends: the last line on a terminal, else a line every heartbeat
        (neither while ``silent[0]``)."""
        next_beat = started + self.heartbeat
        while reader.is_alive():
            reader.join(0.5)
            now = time.monotonic()
            if silent[0]:
                continue
            if tty and tail:
                status = f"  {label} {now - started:5.0f}s  {tail[-1][:60]}"
                self.stream.write("\r\033[K" + status)
                self.stream.flush()
            elif not self.quiet and now >= next_beat:
                print(f"         ... {label}: still running ({now - started:.0f}s)", file=self.stream, flush=True)
                next_beat = now + self.heartbeat


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop a command and everything it started: SIGTERM, then SIGKILL after 10 s."""
    import subprocess

    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(grace)
            # The leader is gone; its children may not be yet.
            os.killpg(proc.pid, signal.SIGKILL)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass
        else:
            break
    proc.wait()
    # Children killed with the group may still be exiting; don't report back before they have.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except (ProcessLookupError, PermissionError):
            break
        time.sleep(0.05)


def _failure_reason(tail: list[str]) -> str:
    """The most telling line of a failed command's output: a compiler killed for memory, then
    pip's own ERROR line, then any error line (pip's 'note: This error originates...' last)."""
    lines = [t.strip() for t in reversed(tail) if t.strip()]
    for test in (lambda t: "Killed signal" in t, lambda t: t.startswith("ERROR:"),
                 lambda t: "error" in t.lower() and not t.startswith("note:")):
        found = next((t for t in lines if test(t)), None)
        if found:
            return found
    return lines[0] if lines else "no output"
