"""bridge.build.backends.venv: a real venv over the base interpreter, built in staging and moved."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from test_pyinfo import base_python
from tests.conftest import require_tool

from bridge.build.backends import BACKENDS, get_backend
from bridge.build.backends.venv import VenvBackend, relocate, script_shebang
from bridge.discover.pyinfo import interrogate
from bridge.errors import ConfigError, UsageError

PROBE = "import json, sys, sysconfig; print(json.dumps({'prefix': sys.prefix, 'base': sys.base_prefix, " \
        "'purelib': sysconfig.get_paths()['purelib'], 'path': sys.path}))"


@pytest.fixture(scope="module")
def base_info():
    return interrogate(base_python())


@pytest.fixture
def env(tmp_path, base_info):
    """A venv created in staging, then renamed to its final path as the store does."""
    staging, final = tmp_path / "staging", tmp_path / "envs" / "myenv"
    final.parent.mkdir()
    VenvBackend().create(base_info, staging, final, "myenv")
    os.rename(staging, final)
    return final


def probe(python: Path) -> dict:
    proc = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_created_python_runs_with_the_env_as_prefix(env, base_info):
    facts = probe(env / "bin" / "python")
    assert facts["prefix"] == str(env)
    assert facts["base"] == base_info.prefix


def test_env_site_packages_is_on_the_path(env, base_info):
    facts = probe(env / "bin" / "python")
    assert facts["purelib"] == str(env / "lib" / f"python{base_info.short_version}" / "site-packages")
    assert facts["purelib"] in facts["path"]


def test_central_site_packages_stay_visible(env, base_info):
    assert base_info.purelib in probe(env / "bin" / "python")["path"]


@pytest.mark.parametrize("alias", ["python3", "python{short}"])
def test_python_aliases_run_the_env(env, base_info, alias):
    assert probe(env / "bin" / alias.format(short=base_info.short_version))["prefix"] == str(env)


def test_pyvenv_cfg_names_the_base_and_allows_system_site_packages(env, base_info):
    cfg = dict(line.split(" = ", 1) for line in (env / "pyvenv.cfg").read_text().splitlines())
    assert cfg["home"] == os.path.dirname(base_info.executable)
    assert cfg["include-system-site-packages"] == "true"
    assert cfg["version"] == base_info.version


def test_backend_python_path(tmp_path):
    assert VenvBackend().python(tmp_path) == tmp_path / "bin" / "python"


def test_pip_launcher_points_at_the_final_python(env, base_info):
    if not base_info.has_pip:
        pytest.skip("the base interpreter has no pip")
    launcher = env / "bin" / "pip"
    assert launcher.read_text().splitlines()[0] == f"#!{env / 'bin' / 'python'}"
    assert stat.S_IMODE(launcher.stat().st_mode) & 0o111
    assert (env / "bin" / "pip3").is_file() and (env / "bin" / f"pip{base_info.short_version}").is_file()


def test_pip_launcher_runs_central_pip_for_the_env(env, base_info):
    if not base_info.has_pip:
        pytest.skip("the base interpreter has no pip")
    proc = subprocess.run([str(env / "bin" / "pip"), "--version"], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("pip ")


def test_activate_script_names_the_final_env(env, base_info):
    scripts = Path(base_info.base_prefix) / "lib" / f"python{base_info.short_version}" / "venv" / "scripts"
    if not (scripts / "common" / "activate").is_file():
        pytest.skip("the base interpreter ships no venv activate scripts")
    text = (env / "bin" / "activate").read_text()
    assert str(env) in text and "__VENV_DIR__" not in text and "(myenv) " in text


def test_activate_script_works_in_bash(env, base_info):
    if not (env / "bin" / "activate").is_file():
        pytest.skip("no activate script")
    proc = subprocess.run(["bash", "--noprofile", "--norc", "-c",
                           f'source "{env}/bin/activate" && printf "%s\\n%s" "$VIRTUAL_ENV" "$(command -v python)"'],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "HOME": str(env)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [str(env), str(env / "bin" / "python")]


def test_lib64_points_at_lib(env):
    assert os.readlink(env / "lib64") == "lib"


def test_get_backend_by_name():
    assert isinstance(get_backend("venv"), VenvBackend)
    assert "venv" in BACKENDS


def test_unknown_backend_is_a_usage_error_listing_the_known():
    with pytest.raises(UsageError, match="unknown backend 'pipenv'; available: conda, rattler, uv, venv"):
        get_backend("pipenv")


# ---- relocate ----------------------------------------------------------------------------

@pytest.fixture
def staged_tree(tmp_path):
    old, new = tmp_path / "staging" / "myenv@x", tmp_path / "envs" / "myenv"
    (old / "bin").mkdir(parents=True)
    site = old / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    return old, new, site


def test_relocate_rewrites_a_script_shebang(staged_tree):
    old, new, _ = staged_tree
    script = old / "bin" / "tool"
    script.write_text(f"#!{old}/bin/python\nimport sys\n")
    script.chmod(0o755)
    assert relocate(old, old, new) == 1
    assert script.read_text() == f"#!{new}/bin/python\nimport sys\n"


def test_relocate_keeps_the_file_mode(staged_tree):
    old, new, _ = staged_tree
    script = old / "bin" / "tool"
    script.write_text(f"#!{old}/bin/python\n")
    script.chmod(0o750)
    relocate(old, old, new)
    assert stat.S_IMODE(script.stat().st_mode) == 0o750


def test_relocate_rewrites_pth_files(staged_tree):
    old, new, site = staged_tree
    pth = site / "__editable__.pkg.pth"
    pth.write_text(f"{old}/src\n")
    relocate(old, old, new)
    assert pth.read_text() == f"{new}/src\n"


def test_relocate_leaves_other_files_alone(staged_tree):
    old, new, _ = staged_tree
    other = old / "bin" / "plain"
    other.write_text("#!/usr/bin/env python3\n")
    link = old / "bin" / "python"
    os.symlink(sys.executable, link)
    assert relocate(old, old, new) == 0
    assert other.read_text() == "#!/usr/bin/env python3\n"
    assert os.readlink(link) == sys.executable


def test_relocate_leaves_no_temporary_files(staged_tree):
    old, new, _ = staged_tree
    (old / "bin" / "tool").write_text(f"#!{old}/bin/python\n")
    relocate(old, old, new)
    assert sorted(p.name for p in (old / "bin").iterdir()) == ["tool"]


def test_relocated_pip_script_runs_from_the_final_path(tmp_path, base_info):
    # A console script pip writes in staging must run once the env is renamed into place.
    staging, final = tmp_path / "staging", tmp_path / "envs" / "myenv"
    final.parent.mkdir()
    VenvBackend().create(base_info, staging, final, "myenv")
    script = staging / "bin" / "where"
    script.write_text(f"#!{staging}/bin/python\nimport sys\nprint(sys.prefix)\n")
    script.chmod(0o755)
    relocate(staging, staging, final)
    os.rename(staging, final)
    proc = subprocess.run([str(final / "bin" / "where")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(final)


def make_wheel(directory: Path, name: str = "envmod_probe_pkg", version: str = "0.1") -> Path:
    """A minimal pure-Python wheel, written by hand (no build tools, no index)."""
    import zipfile

    dist = f"{name}-{version}.dist-info"
    files = {f"{name}.py": "VALUE = 42\n",
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: envmod-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{dist}/RECORD"] = "".join(f"{path},,\n" for path in files) + f"{dist}/RECORD,,\n"
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


def test_bare_pip_installs_into_the_env_not_the_central_python(env, base_info, tmp_path):
    if not base_info.has_pip:
        pytest.skip("the base interpreter has no pip")
    wheel = make_wheel(tmp_path)
    central = Path(base_info.purelib) / "envmod_probe_pkg.py"
    assert not central.exists()
    run_env = {"PATH": f"{env / 'bin'}:/usr/bin:/bin", "PYTHONNOUSERSITE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
               "HOME": str(tmp_path)}
    try:
        proc = subprocess.run(["pip", "install", "--no-index", "--no-deps", str(wheel)], capture_output=True,
                              text=True, timeout=120, env=run_env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert not central.exists()
        assert (env / "lib" / f"python{base_info.short_version}" / "site-packages" / "envmod_probe_pkg.py").is_file()
    finally:
        if central.exists():   # the bug under test would have put it in the central Python: undo that
            subprocess.run([base_info.executable, "-m", "pip", "uninstall", "-y", "envmod_probe_pkg"],
                           capture_output=True)


# ---- activate scripts over a hostile root --------------------------------------------------
# The central Python's own venv writes the activate scripts. CPython fills its templates in two
# generations: before gh-124651 the placeholders sit inside double quotes and are filled raw (the
# site's 3.11.2), since then venv quotes each value for its shell (Debian's 3.11.2 in
# /usr/lib/python3.11). A root may hold anything check_root lets through (it refuses $, `, ",
# backslash and control characters): spaces, single quotes and every other shell metacharacter
# must give activate scripts that work in each shell and run nothing. ("!" is refused by the
# backend: csh reads it as a history reference inside any quotes.)

HOSTILE = "my envs (x) it's; a&b|c *?[d]{e} ~#% <f>"


def _site_python() -> str:
    from tests.conftest import require_site, site_dir

    require_site()
    return str(site_dir() / "software/python/3.11.2/bin/python3")


def _system_python() -> str:
    if not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("no /usr/bin/python3")
    return "/usr/bin/python3"


def _activate_template(info) -> str:
    path = Path(info.base_prefix) / "lib" / f"python{info.short_version}" / "venv" / "scripts" / "common" / "activate"
    if not path.is_file():
        pytest.skip(f"{info.executable} ships no venv activate template")
    return path.read_text()


@pytest.fixture(params=[_site_python, _system_python], ids=["site-3.11.2", "usr-bin-python3"])
def hostile_env(request, tmp_path):
    info = interrogate(request.param())
    _activate_template(info)
    place = tmp_path / HOSTILE
    staging, final = place / "staging", place / "envs" / "myenv"
    final.parent.mkdir(parents=True)
    VenvBackend().create(info, staging, final, "myenv")
    os.rename(staging, final)
    return info, final


def _run_shell(argv: list, env: Path, tmp_path: Path) -> list:
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=env.parent, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert list(tmp_path.rglob("pwned*")) == [], "sourcing activate ran code from the root's name"
    return proc.stdout.splitlines()


def test_activate_in_bash_over_a_root_with_spaces_and_shell_syntax(hostile_env, tmp_path):
    info, env = hostile_env
    script = ('PS1="base$ "; PATH=/usr/bin:/bin; source "$1/bin/activate" || exit 9\n'
              'printf "%s\\n" "$VIRTUAL_ENV" "$PS1" "$VIRTUAL_ENV_PROMPT" "$PATH" "$(command -v python)"\n'
              'deactivate\n'
              'printf "%s\\n" "$PS1" "${VIRTUAL_ENV-unset}" "$PATH" "$(type -t deactivate || echo gone)"\n')
    assert _run_shell(["bash", "--noprofile", "--norc", "-c", script, "bash", str(env)], env, tmp_path) == [
        str(env), "(myenv) base$ ", "(myenv) ", f"{env}/bin:/usr/bin:/bin", str(env / "bin" / "python"),
        "base$ ", "unset", "/usr/bin:/bin", "gone"]


def test_activate_in_zsh_over_a_hostile_root(hostile_env, tmp_path):
    require_tool("zsh")
    _, env = hostile_env
    script = ('PATH=/usr/bin:/bin; source "$1/bin/activate" || exit 9\n'
              'printf "%s\\n" "$VIRTUAL_ENV" "$PATH" "$(command -v python)"\n'
              'deactivate\nprintf "%s\\n" "${VIRTUAL_ENV-unset}" "$PATH"\n')
    assert _run_shell(["zsh", "-f", "-c", script, "zsh", str(env)], env, tmp_path) == [
        str(env), f"{env}/bin:/usr/bin:/bin", str(env / "bin" / "python"), "unset", "/usr/bin:/bin"]


def test_activate_in_csh_over_a_hostile_root(hostile_env, tmp_path):
    csh = require_tool("tcsh")
    _, env = hostile_env
    # The path comes in the environment, and csh quotes it itself (":q"); one command a line, as
    # csh expands an alias (deactivate) only on lines read after it was defined.
    script = tmp_path / "probe.csh"
    script.write_text('set prompt = "base> "\nset path = (/usr/bin /bin)\nsource "$ENV_DIR:q/bin/activate.csh"\n'
                      'printf "%s\\n" "$VIRTUAL_ENV:q" "$PATH:q" "`which python`" "$prompt:q"\n'
                      'deactivate\nif ($?VIRTUAL_ENV) echo still-set\nprintf "%s\\n" "$PATH:q" "$prompt:q"\n')
    proc = subprocess.run([csh, "-f", str(script)], capture_output=True, text=True, cwd=env.parent, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ENV_DIR": str(env)})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.splitlines() == [str(env), f"{env}/bin:/usr/bin:/bin", str(env / "bin" / "python"),
                                        "(myenv) base> ", "/usr/bin:/bin", "base> "]
    assert list(tmp_path.rglob("pwned*")) == []


def test_activate_in_fish_over_a_hostile_root(hostile_env, tmp_path):
    require_tool("fish")
    _, env = hostile_env
    script = ('set -gx PATH /usr/bin /bin; source "$argv[1]/bin/activate.fish"; or exit 9\n'
              'printf "%s\\n" "$VIRTUAL_ENV" (string join : $PATH) (command -v python)\n'
              'deactivate\nset -q VIRTUAL_ENV; and echo still-set\nprintf "%s\\n" (string join : $PATH)\n')
    assert _run_shell(["fish", "--no-config", "-c", script, str(env)], env, tmp_path) == [
        str(env), f"{env}/bin:/usr/bin:/bin", str(env / "bin" / "python"), "/usr/bin:/bin"]


@pytest.mark.parametrize("python", [_site_python, _system_python], ids=["site-3.11.2", "usr-bin-python3"])
def test_activate_scripts_are_the_ones_venv_writes_for_the_final_path(tmp_path, python):
    # What a user gets from `python -m venv FINAL`, though the env was built in staging.
    info = interrogate(python())
    _activate_template(info)
    final = tmp_path / HOSTILE / "envs" / "myenv"
    subprocess.run([info.executable, "-m", "venv", "--without-pip", "--prompt", "myenv", str(final)],
                   check=True, capture_output=True)
    names = sorted(p.name for p in (final / "bin").iterdir() if p.name.startswith("activate") or p.name == "Activate.ps1")
    assert "activate" in names
    theirs = {name: (final / "bin" / name).read_text() for name in names}
    shutil.rmtree(final)
    VenvBackend().create(info, tmp_path / "staging", final, "myenv")
    assert {name: (tmp_path / "staging" / "bin" / name).read_text() for name in names} == theirs


@pytest.mark.parametrize("char", ["$", "`", '"', "\\", "\n", "!"])
def test_a_path_the_activate_scripts_cannot_carry_is_refused_before_anything_is_written(tmp_path, base_info, char):
    staging, final = tmp_path / "staging", tmp_path / f"envs{char}x" / "myenv"
    with pytest.raises(ConfigError, match="cannot write activate scripts for .*: the path holds"):
        VenvBackend().create(base_info, staging, final, "myenv")
    assert not staging.exists()


def test_pip_runs_in_an_env_under_a_root_with_spaces_and_shell_syntax(hostile_env, tmp_path):
    info, env = hostile_env
    if not info.has_pip:
        pytest.skip(f"{info.executable} has no pip")
    proc = subprocess.run([str(env / "bin" / "pip"), "--version"], capture_output=True, text=True,
                          cwd=env.parent, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"(python {info.short_version})" in proc.stdout
    assert list(tmp_path.rglob("pwned*")) == [], "starting pip ran code from the root's name"


@pytest.mark.parametrize("path, plain", [("/apps/envs/x/bin/python", True),
                                         ("/a b/bin/python", False),
                                         ("/" + "long/" * 30 + "bin/python", False),
                                         ('/q"$`\\/bin/python', True)])
def test_script_shebang_runs_the_python_through_sh_only_when_it_must(tmp_path, path, plain):
    line = script_shebang(Path(path))
    assert line.startswith("#!/bin/sh\n") != plain
    if plain:
        return
    # sh runs line 2 as "exec PYTHON $0 $@"; Python reads lines 2-3 as one string
    fake = tmp_path / "echo-args"
    fake.write_text("#!/bin/sh\nprintf '%s\\n' \"$0\" \"$@\"\n")
    fake.chmod(0o755)
    script = tmp_path / "launcher"
    script.write_text(line.replace(path, str(fake)) + "\nprint('python')\n")
    script.chmod(0o755)
    out = subprocess.run([str(script), "a b"], capture_output=True, text=True, timeout=30).stdout.splitlines()
    assert out == [str(fake), str(script), "a b"]
    ns: dict = {}
    exec(compile(line + "\nx = 1\n", "launcher", "exec"), ns)
    assert ns["x"] == 1


# -- the activate scripts, written while pip installs (start_create / finish_create) ----------------

def test_start_create_leaves_only_the_activate_scripts_for_finish_create(tmp_path, base_info):
    """What pip needs is there at once; the scripts (a Python start and venv's import) are
    written meanwhile, for the final path, and finish_create waits for them."""
    staging, final = tmp_path / "staging", tmp_path / "envs" / "myenv"
    backend = VenvBackend()
    backend.start_create(base_info, staging, final, "myenv")
    writer = backend._scripts
    assert writer is not None
    assert probe(staging / "bin" / "python")["prefix"] == str(staging)      # usable before the scripts
    backend.finish_create()
    assert backend._scripts is None and writer.returncode == 0
    assert str(final) in (staging / "bin" / "activate").read_text()
    backend.close()                                                       # nothing left to stop


def test_a_create_that_fails_first_stops_the_writer_and_reaps_it(tmp_path, base_info):
    backend = VenvBackend()
    backend.start_create(base_info, tmp_path / "staging", tmp_path / "envs" / "myenv", "myenv")
    writer = backend._scripts
    assert writer is not None
    backend.close()
    assert backend._scripts is None and writer.returncode is not None


def test_a_writer_that_dies_fails_the_create_in_one_line_at_finish_create(tmp_path, base_info):
    """The writer killed (for real, SIGKILL) before it is done: finish_create says so in one line."""
    import signal

    from bridge.errors import DiscoveryError

    backend = VenvBackend()
    backend.start_create(base_info, tmp_path / "staging", tmp_path / "envs" / "myenv", "myenv")
    assert backend._scripts is not None
    os.kill(backend._scripts.pid, signal.SIGKILL)
    with pytest.raises(DiscoveryError) as info:
        backend.finish_create()
    assert "could not write the env's activate scripts with its venv module" in info.value.one_line()
    assert "\n" not in info.value.one_line() and backend._scripts is None
