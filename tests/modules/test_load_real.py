"""Generated modulefiles loaded and unloaded in real Lmod and real Environment Modules.

Each test runs a bash script as a user would type it (module load, envmod create, module purge,
...) with one real module tool initialised, and compares the environment before, during and after.
"""

from __future__ import annotations

import os

import pytest
from tests.conftest import loaded, user_visible

pytestmark = pytest.mark.modules


def test_create_then_load_and_unload_restores_environment(shell):
    result = shell.run("""
module load python/3.11
$ENVMOD create plain --description "plain env"
module purge
module use "$ENVMOD_ROOT/modules"
snap before
module load plain/py3.11
snap during
python -c 'import sys, numpy; print("PREFIX", sys.prefix); print("NUMPY", numpy.__file__)'
module unload plain/py3.11
snap after
""").check()
    before, during, after = (result.snapshots[k] for k in ("before", "during", "after"))
    env_prefix = str(shell.root / "envs" / "plain")
    assert during["VIRTUAL_ENV"] == env_prefix
    assert during["PATH"].split(":")[0] == f"{env_prefix}/bin"
    assert during["PYTHONNOUSERSITE"] == "1"
    assert during["ENVMOD_ENV"] == "plain"
    assert "python/3.11" in loaded(during)
    assert not any(env_prefix in p for p in during.get("LD_LIBRARY_PATH", "").split(":"))
    assert f"PREFIX {env_prefix}" in result.stdout
    # The central Python's own packages stay visible through the env.
    assert "NUMPY " + os.environ.get("ENVMOD_SITE", "/opt/envmod-site") in result.stdout
    assert loaded(after) == loaded(before) == []
    assert user_visible(after) == user_visible(before)


def test_default_module_type_follows_module_system(shell):
    shell.run("module load python/3.11\n$ENVMOD create typed -q").check()
    lua = shell.root / "modules/typed/py3.11.lua"
    tcl = shell.root / "modules/typed/py3.11"
    if shell.system == "lmod":
        assert lua.is_file() and not tcl.exists()
    else:
        assert tcl.is_file() and not lua.exists()
        assert tcl.read_text().startswith("#%Module")


def test_unloading_env_keeps_dependencies_the_user_loaded_first(shell):
    result = shell.run("""
module load python/3.11
$ENVMOD create keep -q
module use "$ENVMOD_ROOT/modules"
module load keep/py3.11
snap during
module unload keep/py3.11
snap after
""").check()
    assert loaded(result.snapshots["during"])[:1] == ["python/3.11"]
    assert loaded(result.snapshots["after"]) == ["python/3.11"]


def test_dependencies_loaded_by_env_are_released_with_it(shell):
    result = shell.run("""
module load python/3.11
$ENVMOD create release -q
module purge
module use "$ENVMOD_ROOT/modules"
module load release/py3.11
snap during
module unload release/py3.11
snap after
""").check()
    assert "python/3.11" in loaded(result.snapshots["during"])
    assert loaded(result.snapshots["after"]) == []


def test_two_envmod_environments_never_load_together(shell):
    result = shell.run("""
module load python/3.11
$ENVMOD create one -q
$ENVMOD create two -q
module purge
module use "$ENVMOD_ROOT/modules"
module load one/py3.11
module load two/py3.11 || echo "SECOND LOAD REFUSED"
snap end
""")
    mods = loaded(result.snapshots["end"])
    assert not ("one/py3.11" in mods and "two/py3.11" in mods), mods
    if shell.system == "lmod":
        assert "two/py3.11" in mods          # Lmod's family swaps one out
    else:
        assert "one/py3.11" in mods and "SECOND LOAD REFUSED" in result.stdout + result.stderr


HOSTILE = 'x" ]] ]==] \'; $(touch {marker}) `touch {marker}` [exec touch {marker}] ${{HOME}} \\ {{ }} \\n end'


def test_hostile_description_is_text_in_both_tools(shell, tmp_path):
    marker = tmp_path / "pwned"
    description = HOSTILE.format(marker=marker)
    result = shell.run(f"""
module load python/3.11
$ENVMOD create hostile -q --description {_sh(description)}
module purge
module use "$ENVMOD_ROOT/modules"
module load hostile/py3.11
module whatis hostile/py3.11 2>&1
module help hostile/py3.11 2>&1
snap during
""").check()
    assert not marker.exists(), "a description ran code inside the modulefile"
    assert result.snapshots["during"]["ENVMOD_ENV"] == "hostile"
    assert f"Description: {description}" in result.stdout + result.stderr


def test_tcl_module_written_for_lmod_env_loads_in_environment_modules(lmod_shell, tcl_shell):
    lmod_shell.run("module load python/3.11\n$ENVMOD create both -q\n$ENVMOD module both --module-type tcl").check()
    tcl_shell.root = lmod_shell.root
    result = tcl_shell.run("""
module use "$ENVMOD_ROOT/modules"
module load both/py3.11
snap during
python -c 'import sys; print("PREFIX", sys.prefix)'
""").check()
    assert result.snapshots["during"]["VIRTUAL_ENV"] == str(lmod_shell.root / "envs/both")
    assert "python/3.11" in loaded(result.snapshots["during"])
    record = (lmod_shell.root / "envs/both/envmod.yaml").read_text()
    assert "tcl: " in record and "lmod: " in record


def _sh(text: str) -> str:
    import shlex

    return shlex.quote(text)
