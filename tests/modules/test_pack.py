"""``envmod pack`` (issue #14) with real module tools, no Slurm: the image's env works from its
node-local path with the shared env renamed away, the module uses a staged copy only where it is
there, a changed env makes the image stale (``check``), and a pack that fails leaves nothing.
Staging in a real Slurm job: tests/slurm."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.conftest import envmod_command, require_tool, write_wheel

pytestmark = pytest.mark.modules

PKG_INIT = b'''import sys
VALUE = 42
def main():
    print("prefix", sys.prefix)
    print("module", __file__)
    print("cached", __cached__)
'''


def wheel(directory: Path, name: str = "packpkg") -> Path:
    dist = f"{name}-1.0.dist-info"
    return write_wheel(directory / f"{name}-1.0-py3-none-any.whl", {
        f"{name}/__init__.py": PKG_INIT,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/entry_points.txt": f"[console_scripts]\n{name}-where = {name}:main\n".encode(),
    })


def unpack(manifest: dict, images: Path) -> Path:
    """The image put at its node-local path, as 'stage' does on a node without FUSE."""
    staged = Path(manifest["staged_prefix"])
    staged.parent.mkdir(parents=True, exist_ok=True)
    image = images / manifest["image"]
    if manifest["format"] == "squashfs":
        subprocess.run([require_tool("unsquashfs"), "-no-progress", "-quiet", "-d", str(staged), str(image)],
                       check=True, capture_output=True)
    else:
        staged.mkdir()
        subprocess.run(["tar", "-xzf", str(image), "-C", str(staged)], check=True)
    return staged


@pytest.fixture
def stage_base(tmp_path: Path) -> Path:
    base = tmp_path / "node-local"
    base.mkdir()
    return base


@pytest.mark.parametrize("backend,image_format", [("venv", "squashfs"), ("uv", "tar.gz")])
def test_packed_env_runs_from_its_node_local_path_with_the_shared_env_gone(lmod_shell, tmp_path, stage_base,
                                                                          backend, image_format):
    if image_format == "squashfs":
        require_tool("mksquashfs")
    whl = wheel(tmp_path)
    env = {"ENVMOD_STAGE_BASE": str(stage_base), "UV_CACHE_DIR": str(tmp_path / "uv-cache")}
    lmod_shell.run(f"""
module load python/3.11
$ENVMOD create penv -q --backend {backend} --with {whl}
$ENVMOD pack penv --format {image_format}
""", extra_env=env).check()
    root = lmod_shell.root
    manifest = json.loads((root / "images/penv.json").read_text())
    assert manifest["format"] == image_format and manifest["modules"] == ["python/3.11"]
    assert manifest["staged_prefix"] == f"{stage_base}/envmod-stage/{getpass.getuser()}/penv-{manifest['image_id']}"
    staged = unpack(manifest, root / "images")
    shared = root / "envs/penv"
    # nothing in the image names the shared env (its record, too, names the copy's path)
    named = [str(p.relative_to(staged)) for p in staged.rglob("*")
             if p.is_file() and not p.is_symlink() and str(shared).encode() in p.read_bytes()]
    assert named == []
    assert list(staged.rglob("packpkg/__pycache__/__init__.cpython-311.pyc")), "byte code compiled in advance"
    shared.rename(tmp_path / "away")            # the shared env is gone: only the copy can answer
    try:
        where = subprocess.run([str(staged / "bin/packpkg-where")], capture_output=True, text=True,
                               env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"})
        assert where.returncode == 0, where.stderr
        lines = dict(line.split(" ", 1) for line in where.stdout.splitlines())
        assert lines["prefix"] == str(staged)
        assert lines["module"] == f"{staged}/lib/python3.11/site-packages/packpkg/__init__.py"
        activate = subprocess.run(["bash", "-c", f". {staged}/bin/activate && echo $VIRTUAL_ENV && "
                                   "python -c 'import sys, packpkg; print(sys.prefix)' && pip --version"],
                                  capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
        assert activate.returncode == 0, activate.stderr
        out = activate.stdout.splitlines()
        assert out[0] == str(staged) and out[1] == str(staged)
        assert f"{staged}/lib/python3.11/site-packages" in out[2] or "python 3.11" in out[2]
        # a byte-code file names the staged source, so tracebacks point at the copy
        boom = subprocess.run([str(staged / "bin/python"), "-c", "import packpkg, inspect; "
                               "print(packpkg.main.__code__.co_filename)"], capture_output=True, text=True)
        assert boom.stdout.strip() == f"{staged}/lib/python3.11/site-packages/packpkg/__init__.py"
    finally:
        (tmp_path / "away").rename(shared)


def test_module_uses_the_staged_copy_only_where_it_is_there(shell, tmp_path, stage_base):
    whl = wheel(tmp_path)
    env = {"ENVMOD_STAGE_BASE": str(stage_base)}
    shell.run(f"""
module load python/3.11
$ENVMOD create penv -q --with {whl}
$ENVMOD pack penv --format tar.gz
""", extra_env=env).check()
    root = shell.root
    manifest = json.loads((root / "images/penv.json").read_text())
    load = """
module purge
module use "$ENVMOD_ROOT/modules"
snap before
module load penv/py3.11
snap loaded
python -c 'import packpkg; print(packpkg.__file__)'
module unload penv/py3.11
snap after
"""
    plain = shell.run(load, extra_env=env).check()
    assert plain.snapshots["loaded"]["VIRTUAL_ENV"] == str(root / "envs/penv")
    staged = unpack(manifest, root / "images")
    job = shell.run(load, extra_env=env).check()
    loaded = job.snapshots["loaded"]
    assert loaded["VIRTUAL_ENV"] == str(staged)
    assert loaded["PATH"].split(":")[0] == f"{staged}/bin"
    assert str(root / "envs/penv") not in loaded["PATH"]
    assert job.stdout.strip().splitlines()[-1] == f"{staged}/lib/python3.11/site-packages/packpkg/__init__.py"
    # the central modules stay as they are; the unload takes back exactly what the load set
    assert "python/3.11" in loaded["LOADEDMODULES"]
    assert "VIRTUAL_ENV" not in job.snapshots["after"]
    assert job.snapshots["after"]["PATH"] == job.snapshots["before"]["PATH"]
    # once unstaged (the copy is gone), the module is the shared env's again
    shutil.rmtree(staged)
    again = shell.run(load, extra_env=env).check()
    assert again.snapshots["loaded"]["VIRTUAL_ENV"] == str(root / "envs/penv")


def test_changed_env_makes_the_image_stale_until_packed_again(lmod_shell, tmp_path, stage_base):
    whl, other = wheel(tmp_path), wheel(tmp_path, "otherpkg")
    env = {"ENVMOD_STAGE_BASE": str(stage_base)}
    result = lmod_shell.run(f"""
module load python/3.11
$ENVMOD create penv -q --with {whl}
$ENVMOD pack penv
$ENVMOD check penv && echo fresh-ok
"$ENVMOD_ROOT/envs/penv/bin/pip" install -q --no-index {other}
rc=0; $ENVMOD check penv || rc=$?; echo "stale-rc=$rc"
$ENVMOD module penv
grep -c envmod-stage "$ENVMOD_ROOT/modules/penv/py3.11.lua" || true
$ENVMOD pack penv
$ENVMOD check penv && echo repacked-ok
grep -c envmod-stage "$ENVMOD_ROOT/modules/penv/py3.11.lua"
""", extra_env=env).check()
    lmod_shell.run("$ENVMOD remove penv --yes", extra_env=env).check()
    assert list((lmod_shell.root / "images").iterdir()) == [], "remove takes the image and its manifest"
    out = result.stdout
    assert "fresh-ok" in out and "stale-rc=1" in out and "repacked-ok" in out
    assert "the env changed after it was packed" in out
    lines = out.splitlines()
    # a module written again while the image is stale no longer looks for a staged copy
    assert lines[lines.index("stale-rc=1") + 2] == "0"
    assert int(lines[-1]) > 0


def test_pack_that_fails_leaves_nothing_and_keeps_the_old_image(lmod_shell, tmp_path, stage_base):
    whl = wheel(tmp_path)
    env = {"ENVMOD_STAGE_BASE": str(stage_base)}
    lmod_shell.run(f"""
module load python/3.11
$ENVMOD create penv -q --with {whl}
$ENVMOD pack penv
""", extra_env=env).check()
    root = lmod_shell.root
    before = (root / "images/penv.json").read_text(), (root / "images/penv.sqfs").read_bytes()
    # a binary file naming the env's own path cannot be relocated: the pack is refused
    site = next((root / "envs/penv/lib").glob("python*/site-packages"))
    (site / "blob.bin").write_bytes(b"\0ELF\0" + str(root / "envs/penv").encode() + b"\0")
    result = lmod_shell.run("module load python/3.11\n$ENVMOD pack penv", extra_env=env)
    assert result.returncode != 0
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and "cannot be relocated" in err[0] and "blob.bin" in err[0], result.stderr
    assert sorted(p.name for p in (root / "images").iterdir()) == ["penv.json", "penv.sqfs"]
    assert ((root / "images/penv.json").read_text(), (root / "images/penv.sqfs").read_bytes()) == before


def test_stage_outside_slurm_and_an_unpacked_env_say_so_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["ENVMOD_ROOT"] = str(tmp_path / "root")
    out = subprocess.run(f"{envmod_command()} stage nosuch", shell=True, capture_output=True, text=True, env=env)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "envmod: error: 'envmod stage' runs inside a Slurm job (no SLURM_JOB_ID here) "
        "(call it in a batch script (sbatch) or under salloc)"]


def test_without_squashfs_tools_the_image_is_a_tarball_that_runs_from_its_node_local_path(lmod_shell, tmp_path,
                                                                                         stage_base):
    """No --format: where mksquashfs is not installed, pack falls back to a tar.gz by itself. The
    tools are real; what is missing is mksquashfs alone, on a PATH of every other program."""
    whl = wheel(tmp_path)
    env = {"ENVMOD_STAGE_BASE": str(stage_base)}
    lmod_shell.run(f"module load python/3.11\n$ENVMOD create penv -q --with {whl}", extra_env=env).check()
    no_squashfs = tmp_path / "bin-without-mksquashfs"
    no_squashfs.mkdir()
    for program in Path("/usr/bin").iterdir():
        if program.name != "mksquashfs":
            (no_squashfs / program.name).symlink_to(program)
    # /bin, /sbin and /usr/sbin are /usr/bin's on a merged-/usr system: leave them out too
    result = lmod_shell.run(f"""
module load python/3.11
export PATH="$(printf %s "$PATH" | tr ':' '\\n' | grep -v -x -E '(/usr)?/s?bin' | paste -sd:):{no_squashfs}"
command -v mksquashfs && exit 9
$ENVMOD pack penv
""", extra_env=env)
    assert result.returncode == 0, result.stderr
    root = lmod_shell.root
    manifest = json.loads((root / "images/penv.json").read_text())
    assert manifest["format"] == "tar.gz"
    assert sorted(p.name for p in (root / "images").iterdir()) == ["penv.json", "penv.tar.gz"]
    staged = unpack(manifest, root / "images")
    shared = root / "envs/penv"
    shared.rename(tmp_path / "away")
    try:
        where = subprocess.run([str(staged / "bin/packpkg-where")], capture_output=True, text=True,
                               env={"PATH": "/usr/bin:/bin"})
        assert where.returncode == 0, where.stderr
        assert dict(line.split(" ", 1) for line in where.stdout.splitlines())["prefix"] == str(staged)
    finally:
        (tmp_path / "away").rename(shared)
