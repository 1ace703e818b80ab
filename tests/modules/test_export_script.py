"""``envmod export --format bash|csh|fish`` against the real Lmod and Environment Modules: sourcing
the script in a bare shell (``env -i``: no module system) changes the environment exactly as
``module load`` changes it in a module shell, a central module's variables included, with hostile
values intact and nothing of the module tool's own state; csh refuses what it cannot hold in
one line; the script refuses another architecture unless forced."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import ModuleShell, require_tool
from tests.unit.test_cli import one_error_line
from tests.unit.test_record import make_record

from bridge.discover.loadeffect import is_tool_state
from bridge.emit.quoting import lua_string, tcl_string
from bridge.store.record import ModuleRecord, write_record

pytestmark = pytest.mark.modules

HOSTILE = "it's \"q\" $HOME `id` $(id) \\ ; * {x} ~ ü [set y] ]] %s"
ODD_DIR = "/opt/with space/it's"
SHELLS = ("bash", "csh", "fish")
BARE = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "NEWLIST": "/pre", "UNSETME": "1"}


def hostile_env(root: Path, name: str = "hostile", value: str = HOSTILE) -> str:
    """A stored env whose module (hand-written, Lua and Tcl) loads the site's openmpi and sets,
    extends, creates and unsets variables, one value hostile; its module name."""
    prefix = root / "envs" / name
    prefix.mkdir(parents=True)
    module = f"{name}/1.0"
    write_record(make_record(prefix, name=name, module=ModuleRecord(name=module, type="lmod",
                                                                     depends_on=["openmpi/4.1.4"])), prefix)
    mdir = root / "modules" / name
    mdir.mkdir(parents=True)
    (mdir / "1.0.lua").write_text(f"""depends_on("openmpi/4.1.4")
setenv("HOSTILE_SET", {lua_string(value)})
prepend_path("PATH", {lua_string(ODD_DIR)})
append_path("NEWLIST", "/x/y")
append_path("FRESHLIST", "/fresh")
unsetenv("UNSETME")
""", encoding="utf-8")
    (mdir / "1.0").write_text(f"""#%Module
depends-on openmpi/4.1.4
setenv HOSTILE_SET {tcl_string(value)}
prepend-path PATH {tcl_string(ODD_DIR)}
append-path NEWLIST /x/y
append-path FRESHLIST /fresh
unsetenv UNSETME
""", encoding="utf-8")
    return module


def visible_diff(before: dict[str, str], after: dict[str, str]) -> dict[str, str | None]:
    """What changed, None for a removed variable; the module tools' state left out."""
    names = {k for k in set(before) | set(after) if before.get(k) != after.get(k) and not is_tool_state(k)}
    return {k: after.get(k) for k in names}


def _read_env(path: Path) -> dict[str, str]:
    return dict(item.split("=", 1) for item in path.read_bytes().decode().split("\0") if "=" in item)


def source_in(shell: str, script: Path, tmp: Path, extra_env: dict | None = None,
              then: str = "") -> tuple[subprocess.CompletedProcess, dict[str, str], dict[str, str]]:
    """Source ``script`` in ``shell`` started by ``env -i`` (no module system), then run ``then``;
    the process, and the environment before and after sourcing."""
    before, after = tmp / f"{shell}.before", tmp / f"{shell}.after"
    if shell == "bash":
        argv = [require_tool("bash"), "--noprofile", "--norc", "-c",
                f'env -0 > {before}; . {script}; rc=$?; env -0 > {after}; [ $rc = 0 ] || exit $rc; {then}']
    elif shell == "csh":
        argv = [require_tool("tcsh"), "-f", "-c",
                f"env -0 > {before}; source {script}; set rc=$status; env -0 > {after}; "
                f"if ($rc != 0) exit $rc; {then}"]
    else:
        argv = [require_tool("fish"), "--no-config", "-c",
                f"env -0 > {before}; source {script}; set rc $status; env -0 > {after}; "
                f"test $rc = 0; or exit $rc; {then}"]
    proc = subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in {"HOME": str(tmp), **BARE, **(extra_env or {})}.items()),
                           *argv], capture_output=True, text=True, timeout=300)
    return proc, _read_env(before), _read_env(after)


@pytest.fixture
def exported(shell: ModuleShell, tmp_path: Path):
    """The module's effect as the tool itself gives it in a module shell, and the three scripts
    envmod exported from that shell."""
    module = hostile_env(shell.root)
    run = shell.run(f"""
module use "$ENVMOD_ROOT/modules"
export PATH=/usr/bin:/bin NEWLIST=/pre UNSETME=1
snap before
module load {module}
snap after
module purge
for f in {' '.join(SHELLS)}; do $ENVMOD export hostile --format $f -o {tmp_path}/hostile.$f; done
""").check()
    return visible_diff(run.snapshots["before"], run.snapshots["after"]), tmp_path


@pytest.mark.parametrize("target", SHELLS)
def test_sourcing_the_script_without_a_module_system_does_what_module_load_does(exported, target, tmp_path):
    loaded, where = exported
    assert loaded["HOSTILE_SET"] == HOSTILE and loaded["UNSETME"] is None and loaded["FRESHLIST"] == "/fresh"
    assert loaded["OPENMPI_ROOT"].endswith("/openmpi/4.1.4")          # the central module's, too
    proc, before, after = source_in(target, where / f"hostile.{target}", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert visible_diff(before, after) == loaded


@pytest.mark.parametrize("target", SHELLS)
def test_the_script_holds_nothing_of_the_module_tools_state(exported, target):
    _, where = exported
    code = [line for line in (where / f"hostile.{target}").read_text().splitlines() if not line.startswith("#")]
    for state in ("LOADEDMODULES", "_LMFILES_", "_ModuleTable", "__LMOD", "__MODULES", "MODULEPATH", "FAMILY"):
        assert not [line for line in code if state in line], state
    header = (where / f"hostile.{target}").read_text().splitlines()[:8]
    assert any("module load hostile/1.0" in line for line in header)
    assert any("openmpi/4.1.4" in line for line in header)


@pytest.mark.parametrize("target", SHELLS)
def test_another_architecture_is_refused_in_one_line_unless_forced(exported, target, tmp_path):
    """FAKE: only the architecture is faked, by a `uname` that answers aarch64 put first on PATH
    (no aarch64 host to run on)."""
    _, where = exported
    fake_uname_dir = tmp_path / "fake-uname"
    fake_uname_dir.mkdir()
    (fake_uname_dir / "uname").write_text("#!/bin/sh\necho aarch64\n")
    (fake_uname_dir / "uname").chmod(0o755)
    path = {"PATH": f"{fake_uname_dir}:/usr/bin:/bin"}
    proc, before, after = source_in(target, where / f"hostile.{target}", tmp_path, path)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "envmod: this set-up of hostile is for x86_64 hosts; this one is aarch64 (set ENVMOD_FORCE_ARCH=1 to use it anyway)"]
    assert visible_diff(before, after) == {}
    proc, before, after = source_in(target, where / f"hostile.{target}", tmp_path,
                                    {**path, "ENVMOD_FORCE_ARCH": "1"})
    assert proc.returncode == 0, proc.stderr
    assert after["HOSTILE_SET"] == HOSTILE


def test_csh_refuses_a_value_it_cannot_hold_and_writes_nothing(shell: ModuleShell, tmp_path):
    hostile_env(shell.root, "bang", "wow! history")
    run = shell.run(f"""
module use "$ENVMOD_ROOT/modules"
$ENVMOD export bang --format csh -o {tmp_path}/bang.csh && exit 9
$ENVMOD export bang --format fish -o {tmp_path}/bang.fish
""")
    assert run.returncode == 0, run.stderr
    line = one_error_line(subprocess.CompletedProcess([], 2, "", run.stderr))
    assert "csh cannot hold 'wow! history'" in line and "nothing was written" in line
    assert not (tmp_path / "bang.csh").exists() and (tmp_path / "bang.fish").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")) == []


def test_export_script_without_a_module_system_is_one_line(tmp_path):
    root = tmp_path / "root"
    hostile_env(root)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ENVMOD_ROOT": str(root), "LANG": "C.UTF-8",
           "ENVMOD_CONFIG": str(tmp_path / "none.yaml")}
    proc = subprocess.run([sys.executable, "-m", "bridge", "export", "hostile", "--format", "bash"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode != 0 and proc.stdout == ""
    assert "no module system is initialised" in one_error_line(proc)
