"""bridge.discover.pyinfo: asking a real interpreter about itself, once."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from bridge.cache import JsonCache
from bridge.discover.pyinfo import interrogate
from bridge.errors import NoPython


def base_python() -> str:
    """The interpreter the running one (perhaps a venv's) was made from."""
    for candidate in (Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}",
                      Path(sys.base_prefix) / "bin" / "python3", Path(getattr(sys, "_base_executable", ""))):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.skip("cannot find the base interpreter of the running Python")


def script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_running_interpreter_reports_its_own_facts():
    info = interrogate(sys.executable)
    assert info.version == "%d.%d.%d" % sys.version_info[:3]
    assert info.short_version == "%d.%d" % sys.version_info[:2]
    assert info.prefix == sys.prefix
    assert info.base_prefix == sys.base_prefix
    assert info.implementation == "CPython" or info.implementation


def test_base_interpreter_is_not_a_venv():
    info = interrogate(base_python())
    assert not info.is_venv
    assert info.prefix == sys.base_prefix


def test_venv_interpreter_is_a_venv():
    if sys.prefix == sys.base_prefix:
        pytest.skip("tests are not running in a venv")
    assert interrogate(sys.executable).is_venv


def test_pip_presence_is_reported():
    info = interrogate(sys.executable)
    import importlib.util

    assert info.has_pip == (importlib.util.find_spec("pip") is not None)


def test_missing_interpreter_is_no_python(tmp_path):
    with pytest.raises(NoPython, match="not found or not executable"):
        interrogate(str(tmp_path / "python3"))


def test_non_executable_file_is_no_python(tmp_path):
    path = tmp_path / "python3"
    path.write_text("")
    path.chmod(0o644)
    with pytest.raises(NoPython, match="not found or not executable"):
        interrogate(str(path))


def test_failing_interpreter_reports_its_last_error_line(tmp_path):
    exe = script(tmp_path / "python3", "echo 'first line' >&2\necho 'it is broken' >&2\nexit 3\n")
    with pytest.raises(NoPython, match="not a working Python: it is broken"):
        interrogate(exe)


def test_program_printing_non_json_is_no_python(tmp_path):
    # A wrapper that exits 0 but prints something else (a banner, or not Python at all).
    exe = script(tmp_path / "python3", "echo 'Welcome to the cluster'\n")
    with pytest.raises(NoPython):
        interrogate(exe)


def test_answer_is_cached_and_the_interpreter_runs_once(tmp_path):
    count = tmp_path / "count"
    exe = script(tmp_path / "python3", f'echo run >> "{count}"\nexec "{sys.executable}" "$@"\n')
    cache = JsonCache(tmp_path / "cache")
    first = interrogate(exe, cache)
    second = interrogate(exe, cache)
    assert first == second
    assert count.read_text().count("run") == 1


def test_changed_interpreter_is_asked_again(tmp_path):
    count = tmp_path / "count"
    exe = script(tmp_path / "python3", f'echo run >> "{count}"\nexec "{sys.executable}" "$@"\n')
    cache = JsonCache(tmp_path / "cache")
    interrogate(exe, cache)
    script(tmp_path / "python3", f'echo run >> "{count}"\n# changed\nexec "{sys.executable}" "$@"\n')
    interrogate(exe, cache)
    assert count.read_text().count("run") == 2


def test_to_json_round_trips():
    from bridge.discover.pyinfo import PythonInfo

    info = interrogate(sys.executable)
    assert PythonInfo(**info.to_json()) == info
