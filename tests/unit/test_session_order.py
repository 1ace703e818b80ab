"""bridge.session: everything that can fail happens before an env is put in place.

A broken site template (config ``templates:``) must fail ``envmod create`` with one line while
nothing is in place yet: no env, no module, no staging left behind, and with ``--force`` the old
env and its module exactly as they were. Runs the real ``python -m bridge create`` (no packages:
fast) over /usr/bin/python3, with no module system (``--python`` and ``--module-type`` given).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

PYTHON = "/usr/bin/python3"

BROKEN = {     # kind -> (module type, template file, its text, what the error says)
    "raw-value": ("lmod", "modulefiles/env.lua.j2", 'whatis("{{ name }}")\n', "unquoted value"),
    "syntax-error": ("lmod", "modulefiles/env.lua.j2", "{% if %}\nwhatis({{ name | lua }})\n",
                     "Expected an expression"),
    "undefined-name": ("tcl", "modulefiles/env.tcl.j2", "module-whatis {{ no_such_value | tcl }}\n",
                       "'no_such_value' is undefined"),
}


@pytest.fixture
def envmod(tmp_path):
    if not os.access(PYTHON, os.X_OK):
        pytest.skip(f"needs {PYTHON} (a Python that is not a venv)")
    home, root = tmp_path / "home", tmp_path / "root"
    home.mkdir()
    good = tmp_path / "site-good.yaml"
    good.write_text("module_type: lmod\n")

    def run(*args: str, site_config: Path = good, root: Path = root) -> subprocess.CompletedProcess:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "ENVMOD_ROOT": str(root),
               "XDG_CACHE_HOME": str(tmp_path / "cache"), "ENVMOD_CONFIG": str(home / "no-user-config.yaml"),
               "ENVMOD_SITE_CONFIG": str(site_config)}
        return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True, text=True,
                              timeout=120, env=env, stdin=subprocess.DEVNULL)

    run.root = root
    return run


def broken_site_config(tmp_path: Path, kind: str) -> tuple[str, Path, str]:
    module_type, name, text, says = BROKEN[kind]
    templates = tmp_path / "site templates"
    (templates / name).parent.mkdir(parents=True)
    (templates / name).write_text(text)
    config = tmp_path / "site-broken.yaml"
    config.write_text(f'templates: "{templates}"\n')
    return module_type, config, says


def create(envmod, name: str, module_type: str, *extra: str, **kw) -> subprocess.CompletedProcess:
    return envmod("create", name, "--python", PYTHON, "--module-type", module_type, "-q", *extra, **kw)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("envmod: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def snapshot(path: Path) -> dict:
    """Everything about a tree a replacement would change: its inode, every entry's contents
    (a link's target) and mode."""
    state = {".": (path.stat().st_ino, path.stat().st_mtime_ns)}
    for dirpath, dirnames, filenames in os.walk(path):
        for entry in dirnames + filenames:
            full = Path(dirpath, entry)
            info = full.lstat()
            content = os.readlink(full) if full.is_symlink() else full.read_bytes() if full.is_file() else None
            state[str(full.relative_to(path))] = (info.st_mode, info.st_ino, content)
    return state


def assert_no_leftovers(root: Path) -> None:
    for kind in ("staging", "trash"):
        place = root / ".envmod" / kind
        assert not place.exists() or list(place.iterdir()) == [], f"{kind} left behind: {list(place.iterdir())}"
    tmp = [p for p in (root / "modules").rglob(".tmp-*")] if (root / "modules").exists() else []
    assert tmp == []


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_site_template_fails_a_fresh_create_and_leaves_nothing(envmod, tmp_path, kind):
    module_type, config, says = broken_site_config(tmp_path, kind)
    proc = create(envmod, "fresh", module_type, site_config=config)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    assert f"cannot write the {module_type} modulefile of 'fresh'" in line and says in line
    assert str(tmp_path / "site templates") in line and "nothing was put in place" in line
    root = envmod.root
    assert not (root / "envs" / "fresh").exists()
    assert not (root / "modules" / "fresh").exists()
    assert_no_leftovers(root)


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_site_template_fails_a_force_create_and_keeps_the_old_env_and_module(envmod, tmp_path, kind):
    module_type, config, says = broken_site_config(tmp_path, kind)
    first = create(envmod, "sturdy", module_type, "--description", "the old one")
    assert first.returncode == 0, first.stderr
    root = envmod.root
    env = root / "envs" / "sturdy"
    modules = root / "modules" / "sturdy"
    env_before, modules_before = snapshot(env), snapshot(modules)
    assert len(modules_before) == 2      # the directory and the one modulefile

    proc = create(envmod, "sturdy", module_type, "--force", "--description", "the new one", site_config=config)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    assert f"cannot write the {module_type} modulefile of 'sturdy'" in line and says in line
    assert snapshot(env) == env_before
    assert snapshot(modules) == modules_before
    assert "the old one" in (env / "envmod.yaml").read_text()
    assert_no_leftovers(root)
    run = subprocess.run([str(env / "bin" / "python"), "-c", "import sys; print(sys.prefix)"],
                         capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == str(env)



@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_site_template_fails_envmod_module_and_keeps_the_modulefile(envmod, tmp_path, kind):
    module_type, config, says = broken_site_config(tmp_path, kind)
    assert create(envmod, "kept", module_type).returncode == 0
    modules = envmod.root / "modules" / "kept"
    before = snapshot(modules)
    proc = envmod("module", "kept", "--module-type", module_type, site_config=config)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    assert f"cannot write the {module_type} modulefile of 'kept'" in line and says in line
    assert snapshot(modules) == before

def test_a_broken_site_template_met_first_by_the_warm_up_is_still_the_renders_one_line(envmod, tmp_path):
    """The background warm-up (bridge.warmup) loads the site template first and fails on it: that
    is only a line in the create's log; the user sees the render's one-line error, as before."""
    module_type, config, says = broken_site_config(tmp_path, "syntax-error")
    proc = create(envmod, "warmed", module_type, site_config=config)
    assert proc.returncode == 2, proc.stderr
    assert says in one_error_line(proc) and "warm-up" not in proc.stderr
    [log] = (envmod.root).rglob("create-*.log")
    assert "warm-up (harmless, done again in its place): templates: TemplateSyntaxError" in log.read_text()
    assert_no_leftovers(envmod.root)


def test_a_good_site_template_is_still_written_after_the_env_is_in_place(envmod, tmp_path):
    templates = tmp_path / "site templates"
    (templates / "modulefiles").mkdir(parents=True)
    (templates / "modulefiles" / "env.lua.j2").write_text(
        '{% extends "builtin/modulefiles/env.lua.j2" %}\n'
        '{% block footer %}\nsetenv("SITE_NOTE", {{ ("see " ~ name) | lua }})\n{% endblock %}\n')
    config = tmp_path / "site-extends.yaml"
    config.write_text(f'templates: "{templates}"\n')
    proc = create(envmod, "fine", "lmod", site_config=config)
    assert proc.returncode == 0, proc.stderr
    [module] = (envmod.root / "modules" / "fine").glob("*.lua")
    assert module.read_text().rstrip().endswith('setenv("SITE_NOTE", "see fine")')
    assert module.stat().st_mode & 0o777 == 0o644
    assert (envmod.root / "envs" / "fine" / "envmod.yaml").is_file()
    assert_no_leftovers(envmod.root)


# ---- the success message -------------------------------------------------------------------

@pytest.mark.parametrize("root_name", ["plain-root", "my envmod root"])
def test_create_prints_a_module_use_line_a_shell_can_paste(envmod, tmp_path, root_name):
    root = tmp_path / root_name
    proc = create(envmod, "pasted", "lmod", root=root)
    assert proc.returncode == 0, proc.stderr
    [line] = [l for l in proc.stdout.splitlines() if l.startswith("load it with: ")]
    use = line.removeprefix("load it with: ").split("   (once)   ")[0]
    assert shlex.split(use) == ["module", "use", str(root / "modules")]
    if " " not in root_name:        # a path that needs no quotes prints as it is
        assert use == f"module use {root / 'modules'}"


def test_a_module_directory_that_cannot_be_made_fails_the_create_before_the_env_goes_live(envmod):
    """The module directory is made only after the env goes live (made before, a create killed in
    between leaves an empty module directory for no env): whether it can be made is asked first.
    A file in its place is refused in one line, even for root, whom permissions do not stop."""
    (envmod.root / "modules").mkdir(parents=True, exist_ok=True)
    (envmod.root / "modules" / "blocked").write_text("a file where the module directory goes\n")
    proc = create(envmod, "blocked", "lmod")
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    assert "cannot write to the envmod root" in line and "Not a directory" in line, line
    assert str(envmod.root / "modules" / "blocked") in line and "nothing was changed" in line
    assert not (envmod.root / "envs" / "blocked").exists()
    assert (envmod.root / "modules" / "blocked").read_text() == "a file where the module directory goes\n"
    assert_no_leftovers(envmod.root)
