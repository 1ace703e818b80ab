"""bridge.progress: step lines, the full log, and commands whose output goes to the log."""

from __future__ import annotations

import io
import re
import sys

import pytest

from bridge.errors import BuildError
from bridge.progress import Reporter


def reporter(tmp_path, quiet=False) -> tuple[Reporter, io.StringIO]:
    stream = io.StringIO()
    r = Reporter(stream=stream, quiet=quiet)
    r.open_log(tmp_path / "logs" / "create.log")
    return r, stream


def log_text(r: Reporter) -> str:
    r.close_log()
    return r.log_path.read_text()


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_step_prints_elapsed_label_and_detail(tmp_path):
    r, stream = reporter(tmp_path)
    r.step("resolve", "numpy 1.26")
    assert re.fullmatch(r"\[ *\d+\.\ds\] resolve: numpy 1\.26\n", stream.getvalue())


def test_step_without_detail_has_no_colon(tmp_path):
    r, stream = reporter(tmp_path)
    r.step("create")
    assert stream.getvalue().rstrip().endswith("] create")


def test_step_goes_to_the_log_too(tmp_path):
    r, _ = reporter(tmp_path)
    r.step("module", "myenv/py3.11")
    assert "module: myenv/py3.11" in log_text(r)


def test_quiet_prints_nothing_but_still_logs(tmp_path):
    r, stream = reporter(tmp_path, quiet=True)
    r.step("resolve", "x")
    r.run(py("print('hello')"), label="say")
    assert stream.getvalue() == ""
    assert "resolve: x" in log_text(r)


def test_open_log_creates_its_directory(tmp_path):
    r, _ = reporter(tmp_path)
    assert r.log_path.parent.is_dir()


def test_run_puts_command_and_output_in_the_log_not_on_the_stream(tmp_path):
    r, stream = reporter(tmp_path)
    r.run(py("print('line one'); import sys; print('to stderr', file=sys.stderr)"), label="say")
    text = log_text(r)
    assert "$ " + sys.executable in text
    assert "line one" in text and "to stderr" in text
    assert "line one" not in stream.getvalue()


def test_run_logs_only_the_variables_it_changes(tmp_path):
    import os

    r, _ = reporter(tmp_path)
    r.run(py("pass"), label="env", env={**os.environ, "MPICC": "/sw/bin/mpicc"})
    lines = [line for line in log_text(r).splitlines() if line.startswith("  with ")]
    assert lines == ["  with MPICC=/sw/bin/mpicc"]


def test_run_passes_the_environment(tmp_path):
    import os

    r, _ = reporter(tmp_path)
    r.run(py("import os; print('value=' + os.environ['ENVMOD_T'])"), label="env",
          env={**os.environ, "ENVMOD_T": "42"})
    assert "value=42" in log_text(r)


def test_run_in_a_directory(tmp_path):
    r, _ = reporter(tmp_path)
    (tmp_path / "work").mkdir()
    r.run(py("import os; print('cwd=' + os.getcwd())"), label="cwd", cwd=str(tmp_path / "work"))
    assert f"cwd={tmp_path / 'work'}" in log_text(r)


def test_failure_is_a_build_error_quoting_the_last_error_line(tmp_path):
    r, _ = reporter(tmp_path)
    code = "print('compiling'); print('error: mpi.h: No such file'); print('cleanup'); raise SystemExit(1)"
    with pytest.raises(BuildError) as info:
        r.run(py(code), label="compile mpi4py")
    assert info.value.message == "compile mpi4py failed (exit 1): error: mpi.h: No such file"


def test_failure_names_the_log(tmp_path):
    r, _ = reporter(tmp_path)
    with pytest.raises(BuildError) as info:
        r.run(py("raise SystemExit(2)"), label="x")
    assert info.value.log == str(tmp_path / "logs" / "create.log")
    assert info.value.one_line().endswith(f"; full log: {tmp_path / 'logs' / 'create.log'}")


def test_failure_without_an_error_line_quotes_the_last_line(tmp_path):
    r, _ = reporter(tmp_path)
    with pytest.raises(BuildError, match=r"\(exit 3\): last words$"):
        r.run(py("print('first'); print('last words'); raise SystemExit(3)"), label="x")


def test_failure_without_output_says_so(tmp_path):
    r, _ = reporter(tmp_path)
    with pytest.raises(BuildError, match="no output"):
        r.run(py("raise SystemExit(4)"), label="x")


def test_command_that_cannot_start_is_a_build_error(tmp_path):
    r, _ = reporter(tmp_path)
    with pytest.raises(BuildError):
        r.run([str(tmp_path / "missing-python"), "-m", "pip"], label="install")


def test_run_without_a_log_still_works(tmp_path):
    r = Reporter(stream=io.StringIO())
    r.run(py("print('x')"), label="x")
    with pytest.raises(BuildError) as info:
        r.run(py("raise SystemExit(1)"), label="x")
    assert info.value.log is None


def test_close_log_twice_is_harmless(tmp_path):
    r, _ = reporter(tmp_path)
    r.close_log()
    r.close_log()


class TtyStream(io.StringIO):
    """A stream that says it is a terminal, so that the status line is drawn."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stream", [io.StringIO(), TtyStream()], ids=["heartbeat", "terminal"])
def test_a_silent_attempt_that_fails_shows_nothing_but_is_in_the_log(tmp_path, stream):
    r = Reporter(stream=stream, heartbeat=0.1)
    r.open_log(tmp_path / "create.log")
    with pytest.raises(BuildError):
        r.run(py("import time\nfor i in range(6): print('working', i, flush=True); time.sleep(0.2)\nraise SystemExit(1)"),
              label="install", silent_until=lambda line: line.startswith("resolved"))
    assert stream.getvalue() == ""
    assert "working 5" in log_text(r)


def test_a_silent_attempt_shows_itself_once_its_marker_line_comes(tmp_path):
    stream, seen = io.StringIO(), []
    r = Reporter(stream=stream, heartbeat=0.1)

    def announce(line: str) -> bool:
        seen.append(line)
        if line == "resolved":
            r.step("install", "announced")
            return True
        return False

    r.run(py("import time\nprint('before', flush=True); time.sleep(0.8); print('resolved', flush=True)\n"
             "time.sleep(0.8); print('after', flush=True)"), label="install", silent_until=announce)
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("] install: announced") and "install: still running" in lines[-1]
    assert seen == ["before", "resolved"]       # asked until it said yes, then no more
