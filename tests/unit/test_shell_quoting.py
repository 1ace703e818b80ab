"""csh and fish quoting (bridge.emit.quoting) for the export scripts, read back by the REAL tcsh
and fish: every value csh can hold comes back exactly; what it cannot (``!``, a line break, any
control character) is refused, not written wrong. Variable names are refused unless every shell
takes them bare; JSON values are JSON."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from tests.conftest import require_tool
from tests.unit.test_quoting import HOSTILE, _split

from bridge.emit.quoting import csh_word, fish_word, json_value, variable_name

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - test_quoting.py fails the run without hypothesis
    given = None


def csh_refuses(value: str) -> bool:
    return "!" in value or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value)


CSH_HOSTILE = [v for v in HOSTILE if not csh_refuses(v)] + ["it's \\' a '' test", "$path:q ${HOME}:h `id`"]


def tcsh_read_back(values: list[str], tmp: Path) -> list[str]:
    script = tmp / "read.csh"
    script.write_text("".join(f"printf '%s\\0' {csh_word(v)}\n" for v in values), encoding="utf-8")
    proc = subprocess.run([require_tool("tcsh"), "-f", str(script)], capture_output=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": str(tmp)})
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return _split(proc.stdout, len(values))


def fish_read_back(values: list[str], tmp: Path) -> list[str]:
    script = tmp / "read.fish"
    script.write_text("".join(f"printf '%s\\0' {fish_word(v)}\n" for v in values), encoding="utf-8")
    proc = subprocess.run([require_tool("fish"), "--no-config", str(script)], capture_output=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": str(tmp)})
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return _split(proc.stdout, len(values))


def test_csh_word_reads_back_hostile_text_in_tcsh(tmp_path):
    assert tcsh_read_back(CSH_HOSTILE, tmp_path) == CSH_HOSTILE


@pytest.mark.parametrize("bad", [v for v in HOSTILE if csh_refuses(v)] + ["a!b", "x\ny"])
def test_csh_word_refuses_what_csh_cannot_hold(bad):
    with pytest.raises(ValueError, match="csh cannot hold"):
        csh_word(bad)


def test_fish_word_reads_back_hostile_text_in_fish(tmp_path):
    assert fish_read_back(HOSTILE, tmp_path) == HOSTILE


@pytest.mark.parametrize("name", ["PATH", "LD_LIBRARY_PATH", "_x1"])
def test_variable_name_passes_names_every_shell_takes_bare(name):
    assert variable_name(name) == name


@pytest.mark.parametrize("bad", ["", "1A", "A-B", "A B", "A;id", "BASH_FUNC_module%%", "$X", "A\nB"])
def test_variable_name_refuses_anything_else(bad):
    with pytest.raises(ValueError, match="not a variable name"):
        variable_name(bad)


def test_json_value_reads_back_hostile_text():
    assert [json.loads(json_value(v)) for v in HOSTILE] == HOSTILE


if given is not None:
    _FEW = settings(max_examples=10, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
    _ANY = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=30)
    _CSH = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="!\x7f"), max_size=30)

    @_FEW
    @given(values=st.lists(_CSH, min_size=1, max_size=30))
    def test_csh_word_round_trips_generated_text(tmp_path, values):
        assert tcsh_read_back(values, tmp_path) == values

    @_FEW
    @given(values=st.lists(_ANY, min_size=1, max_size=30))
    def test_fish_word_round_trips_generated_text(tmp_path, values):
        assert fish_read_back(values, tmp_path) == values
