"""``spack envmod`` with a real Spack 1.1 on the central Spack site (ci/spack-site.sh: Debian's
python, openmpi and hdf5+mpi as externals, Lmod and Tcl modules from ``spack module ... refresh``).

The extension is registered per call (``spack -c config:extensions:[spack-ext/spack-envmod]``)
and the library comes from this checkout (the extension's fallback when SPACK_PYTHON has no
envmod installed). Spack is found as conftest.py says, and these tests skip when it is absent
(fail with ENVMOD_REQUIRE_SPACK=1).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from spack_helpers import EXTENSION, HERE, Result, Spack, envmod_argv, fresh_shell, require_spack, site_facts

pytestmark = pytest.mark.spack


def module_of(site: dict, role: str, module_type: str) -> dict:
    [entry] = [m for m in site["modules"].values() if m["role"] == role]
    return {"hash": next(h for h, m in site["modules"].items() if m is entry), "spec": entry["spec"], **entry[module_type]}


def core_dir(site: dict) -> str:
    return module_of(site, "python", "lmod")["modulepath"]


def tcl_dir(site: dict) -> str:
    return module_of(site, "python", "tcl")["modulepath"]


def record_of(spack: Spack, name: str) -> dict:
    return yaml.safe_load((spack.root / "envs" / name / "envmod.yaml").read_text())


def standalone(spack: Spack, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in spack.environ().items() if not k.startswith("SPACK_")}
    return subprocess.run([*envmod_argv(), *args], capture_output=True, text=True, env=env, timeout=600)


# ------------------------------------------------------------------------------- the extension


def test_extension_registers_the_command(spack):
    out = spack("envmod", "--help").check().stdout
    for sub in ("create", "list", "show", "module", "remove", "check", "rebuild", "export"):
        assert sub in out
    assert "--mpi" in spack("envmod", "create", "--help").check().stdout


def test_without_the_library_the_command_says_what_to_do(spack, tmp_path):
    """An extension that is not inside an envmod checkout, run by a SPACK_PYTHON without envmod."""
    copy = tmp_path / "elsewhere" / "spack-envmod"
    shutil.copytree(EXTENSION, copy, ignore=shutil.ignore_patterns("__pycache__"))
    probe = Spack(spack.exe, spack.root, spack.cache, extension=copy)
    if probe("python", "-c", "import bridge").returncode == 0:
        pytest.skip("SPACK_PYTHON has envmod installed, so the library is always importable")
    result = probe("envmod", "list")
    assert result.returncode != 0
    text = " ".join((result.stdout + result.stderr).split())
    assert "needs envmod's library importable by the Python that runs Spack" in text
    assert "-m pip install" in text and "cannot import 'bridge'" in text


def test_export_of_a_missing_env_is_one_error_line(spack):
    result = spack("envmod", "export", "x")
    assert result.returncode == 4 and "no environment named 'x'" in result.stderr


# ------------------------------------------------------------------------------- create (no compiling)


def test_create_records_spack_modules_and_hashes(spack, site):
    spack("envmod", "create", "plain", "--module-type", "lmod", "-q").check()
    record = record_of(spack, "plain")
    py = module_of(site, "python", "lmod")
    assert record["python"]["module"] == py["name"]
    assert record["module"]["depends_on"] == [py["name"]]
    facts = {m["kind"]: m["facts"] for m in record["central_modules"]}
    for role, kind in (("python", "python"), ("mpi", "mpi"), ("hdf5", "hdf5")):
        entry = module_of(site, role, "lmod")
        assert facts[kind]["spack_hash"] == entry["hash"]
        assert facts[kind]["spack_spec"] == entry["spec"]
        assert facts[kind]["spack_modules"]["tcl"]["name"] == module_of(site, role, "tcl")["name"]
        assert facts[kind]["spack_modules"]["tcl"]["modulefile"] == module_of(site, role, "tcl")["path"]
    lua = (spack.root / "modules" / "plain" / "py3.11.lua").read_text()
    assert f'depends_on("{py["name"]}")' in lua


def test_both_front_ends_build_the_same_stack(spack, site):
    """spack envmod (Spack's API) and the standalone library (the files, no Spack) agree."""
    from tree_stack import stack_from_tree

    from bridge.spack.tree import ModuleIndex, SpackTree

    tree = SpackTree.open(site["install_root"])
    indexes = {t: ModuleIndex.open(root) for t, root in site["roots"].items()}
    for module_type in site["enabled"]:
        out = spack.python(HERE / "spack_probe.py", "stack", module_type).check().stdout
        from_spack = json.loads(out.strip().splitlines()[-1])
        from_tree = [{"name": m.name, "modulefile": m.modulefile, "kind": m.kind, "prefix": m.prefix,
                      "paths": {k: list(v) for k, v in m.paths.items()}, "facts": m.facts}
                     for m in stack_from_tree(tree, indexes, module_type=module_type).modules]
        assert from_spack == json.loads(json.dumps(from_tree))


def test_envs_are_shared_with_the_standalone_envmod(spack):
    spack("envmod", "create", "viaspack", "--module-type", "lmod", "-q").check()
    listed = json.loads(standalone(spack, "list", "--json").stdout)
    assert [e["name"] for e in listed] == ["viaspack"]
    shown = json.loads(standalone(spack, "show", "viaspack", "--json").stdout)
    assert shown["central_modules"][0]["facts"]["spack_hash"]

    made = standalone(spack, "create", "standalone", "--python", "/usr/bin/python3", "--module-type", "lmod", "-q")
    assert made.returncode == 0, made.stderr
    listed = json.loads(spack("envmod", "list", "--json").check().stdout)
    assert sorted(e["name"] for e in listed) == ["standalone", "viaspack"]
    assert "standalone: venv over" in spack("envmod", "show", "standalone").check().stdout
    spack("envmod", "remove", "standalone", "--yes").check()
    assert [e["name"] for e in json.loads(standalone(spack, "list", "--json").stdout)] == ["viaspack"]
    assert standalone(spack, "remove", "viaspack", "--yes").returncode == 0
    assert "no environments" in spack("envmod", "list").check().stdout


def test_backend_choice_reaches_the_library(spack, tmp_path):
    refused = spack("envmod", "create", "c1", "--backend", "pipenv", "-q")
    assert refused.returncode != 0 and "unknown backend 'pipenv'" in refused.stderr, refused.stderr
    assert not (spack.root / "envs" / "c1").exists()
    # uv as a site would name it in envmod's config: the one beside the tests' own Python
    uv = shutil.which("uv", path=str(Path(envmod_argv()[0]).parent)) or shutil.which("uv")
    assert uv, "uv comes with envmod's test extra"
    config = tmp_path / "config.yaml"
    config.write_text(f"uv: {uv}\n")
    spack("envmod", "create", "u1", "--backend", "uv", "--module-type", "lmod", "-q",
          extra_env={"ENVMOD_CONFIG": str(config)}).check()
    assert "u1: uv over" in spack("envmod", "show", "u1").check().stdout
    assert (spack.root / "envs/u1/bin/python").exists()

def test_export_is_the_library_export_with_dag_hashes(spack, site, tmp_path):
    spack("envmod", "create", "exp", "--module-type", "lmod", "-q").check()
    python = module_of(site, "python", "lmod")
    data = yaml.safe_load(spack("envmod", "export", "exp").check().stdout)
    assert data["modules"] == [{"name": python["name"], "kind": "python", "family": "cpython",
                                "version": data["python"]["version"], "spack_hash": python["hash"],
                                "spack_spec": python["spec"], "spack_external": True}]
    assert data == yaml.safe_load(standalone(spack, "export", "exp").stdout)
    out = tmp_path / "exp.txt"
    spack("envmod", "export", "exp", "--format", "requirements", "-o", str(out)).check()
    assert f"#   module load {python['name']}" in out.read_text().splitlines()
    again = spack("envmod", "export", "exp", "-o", str(out))
    assert again.returncode == 2 and "--force" in again.stderr


def test_create_from_an_export_uses_the_same_specs_and_spack_envmod_speaks_spack(spack, site, tmp_path):
    """Issue #9: the export of a Spack-made env tells users 'spack envmod create NEWNAME --from',
    which works: the new env is built against the specs of the DAG hashes the export names."""
    mpi = module_of(site, "mpi", "lmod")
    spack("envmod", "create", "orig", "--mpi", f"/{mpi['hash'][:7]}", "--hdf5", "none", "--keep-loaded",
          "--module-type", "lmod", "-q").check()
    exported = tmp_path / "orig.yaml"
    spack("envmod", "export", "orig", "-o", str(exported)).check()
    assert exported.read_text().startswith("# envmod export of orig: spack envmod create NEWNAME --from THIS_FILE")
    spack("envmod", "create", "copy", "--from", str(exported), "--keep-loaded", "--module-type", "lmod", "-q").check()
    orig, copy = record_of(spack, "orig"), record_of(spack, "copy")
    hashes = [m["facts"]["spack_hash"] for m in copy["central_modules"]]
    assert hashes == [m["facts"]["spack_hash"] for m in orig["central_modules"]]
    assert mpi["hash"] in hashes and copy["module"]["depends_on"] == orig["module"]["depends_on"]
    assert copy["created"]["front_end"] == "spack"
    # the module's help and header name the command this user has
    modulefile = Path(copy["module"]["files"]["lmod"]).read_text()
    assert "'spack envmod show copy' describes it" in modulefile and "'spack envmod module copy'" in modulefile
    # show prints the Spack builds in its text form, not only in --json
    shown = spack("envmod", "show", "copy").check().stdout
    python = module_of(site, "python", "lmod")
    assert "spack builds:" in shown and python["hash"] in shown and mpi["hash"] in shown
    assert python["spec"] in shown
    # hints name 'spack envmod' too; a bad export is one line
    missing = spack("envmod", "show", "nosuch")
    assert missing.returncode == 4 and "'spack envmod list' shows the environments" in missing.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\n")
    result = spack("envmod", "create", "x", "--from", str(bad))
    assert result.returncode == 2 and "make one with 'spack envmod export NAME -o FILE'" in result.stderr
    assert not (spack.root / "envs" / "x").exists()


def test_choices_that_match_nothing_list_the_candidates(spack, site):
    result = spack("envmod", "create", "bad", "--mpi", "mpich")
    assert result.returncode == 3
    text = " ".join(result.stderr.split())
    assert "--mpi mpich: no installed spec matches" in text
    assert module_of(site, "mpi", "lmod")["spec"] in text
    result = spack("envmod", "create", "bad", "--python", "none")
    assert result.returncode == 2 and "needs a Python" in result.stderr
    result = spack("envmod", "create", "bad", "--hdf5", "hdf5@@1")
    assert result.returncode == 2 and "is not a Spack spec" in result.stderr
    result = spack("envmod", "create", "bad", "--mpi", "openmpi hdf5")
    assert result.returncode == 2 and "names 2 specs" in result.stderr
    result = spack("envmod", "create", "bad", "--mpi", "none", "--hdf5", "none", "--with", "mpi4py")
    assert result.returncode == 3 and "--mpi none: mpi4py must be compiled against an MPI" in result.stderr
    assert not (spack.root / "envs" / "bad").exists()


def test_mpi_none_wins_over_the_mpi_of_an_installed_hdf5(spack, site):
    """Issue #9: with an hdf5+mpi installed, '--mpi none --with mpi4py' compiled mpi4py against
    the HDF5's MPI and exited 0. An explicit choice wins or the command refuses in one line."""
    assert module_of(site, "hdf5", "lmod")["spec"]          # the site has an HDF5 built against an MPI
    result = spack("envmod", "create", "nompi", "--mpi", "none", "--with", "mpi4py", timeout=300)
    assert result.returncode == 3, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "--mpi none: mpi4py must be compiled against an MPI" in errors[0]
    assert "or --mpi none" not in errors[0]
    assert not (spack.root / "envs" / "nompi").exists() and not (spack.root / "modules" / "nompi").exists()
    # without packages that need one, 'none' leaves out the MPI and the HDF5 built against it
    spack("envmod", "create", "nompi", "--mpi", "none", "-q").check()
    assert [m["kind"] for m in record_of(spack, "nompi")["central_modules"]] == ["python"]


def test_spec_selection_by_hash_and_none(spack, site):
    mpi = module_of(site, "mpi", "lmod")
    spack("envmod", "create", "picked", "--mpi", f"/{mpi['hash'][:7]}", "--hdf5", "none", "-q").check()
    kinds = [m["kind"] for m in record_of(spack, "picked")["central_modules"]]
    assert kinds == ["python", "mpi"]


def test_module_rewrite_switches_to_tcl_names(spack, site):
    spack("envmod", "create", "switch", "--module-type", "lmod", "-q").check()
    out = spack("envmod", "module", "switch", "--module-type", "tcl").check().stdout
    tcl = spack.root / "modules" / "switch" / "py3.11"
    assert f"wrote {tcl}" in out
    assert module_of(site, "python", "tcl")["name"] in tcl.read_text()
    record = record_of(spack, "switch")
    assert record["module"]["type"] == "tcl"
    assert record["module"]["depends_on"] == [module_of(site, "python", "tcl")["name"]]


def test_check_tells_a_module_now_points_at_another_build(spack, site):
    spack("envmod", "create", "drift", "--module-type", "lmod", "-q").check()
    result = spack("envmod", "check", "drift").check()
    assert result.stdout.startswith("drift: healthy")
    assert "only the Spack builds were checked" in result.stdout      # no module tool in this shell
    # pretend the env was built against another build of the Python that had the same module name
    path = spack.root / "envs" / "drift" / "envmod.yaml"
    record = yaml.safe_load(path.read_text())
    py = next(m for m in record["central_modules"] if m["kind"] == "python")
    py["facts"]["spack_hash"] = "a" * 32
    path.write_text(yaml.safe_dump(record, sort_keys=False))
    result = spack("envmod", "check", "drift", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    [finding] = [f for f in report["findings"] if f["code"].startswith("spack-build")]
    assert finding["code"] == "spack-build-changed" and "another build" in finding["detail"]
    assert module_of(site, "python", "lmod")["spec"] in finding["detail"]
    assert "envmod rebuild drift" in finding["advice"]



def test_check_all_goes_on_past_an_unreadable_record(spack, site):
    spack("envmod", "create", "fine", "--module-type", "lmod", "-q").check()
    broken = spack.root / "envs" / "broken"
    broken.mkdir()
    (broken / "envmod.yaml").write_text("schema: [unterminated\n")
    result = spack("envmod", "check", "--all", "--json")
    assert result.returncode == 2, result.stderr        # 2 (could not check) wins over the rest
    reports = {r["env"]: r for r in json.loads(result.stdout)}
    assert reports["fine"]["status"] == "healthy"
    assert reports["broken"]["status"] == "unchecked" and "not valid YAML" in reports["broken"]["unchecked"]
    result = spack("envmod", "check", "broken")
    assert result.returncode == 2 and result.stdout.startswith("broken: could not check")

@pytest.mark.modules
def test_check_with_lmod_runs_the_library_checks_too(spack, site):
    spack("envmod", "create", "chk", "--module-type", "lmod", "-q").check()
    argv = " ".join(shlex.quote(a) for a in spack.argv("envmod", "check", "chk"))
    env = {k: v for k, v in spack.environ().items() if k.startswith(("SPACK_", "ENVMOD_", "XDG_"))}
    result = fresh_shell("lmod", f"module purge\n{argv}\n", extra_env=env).check()
    assert result.stdout.startswith("chk: healthy (1 modules")
    assert "only the Spack builds" not in result.stdout


# ------------------------------------------------------------------------------- upstreams and environments


def personal_spack_scope(site: dict, tmp_path: Path) -> Path:
    """A config scope making a personal Spack chained to the site: its own install tree, the
    site's as an upstream (with its module roots)."""
    scope = tmp_path / "scope"
    scope.mkdir()
    (scope / "config.yaml").write_text(f"config:\n  install_tree:\n    root: {tmp_path / 'own'}\n")
    roots = "\n".join(f"      {t}: {root}" for t, root in site["roots"].items())
    (scope / "upstreams.yaml").write_text(
        f"upstreams:\n  site:\n    install_tree: {site['install_root']}\n    modules:\n{roots}\n")
    return scope


def test_specs_of_an_upstream_spack(spack, site, tmp_path):
    """A personal Spack chained to the site: every spec is an upstream one, names from its index."""
    scope = personal_spack_scope(site, tmp_path)
    spack("envmod", "create", "up", "--module-type", "lmod", "-q", scope=scope).check()
    record = record_of(spack, "up")
    assert record["module"]["depends_on"] == [module_of(site, "python", "lmod")["name"]]
    openmpi = next(m for m in record["central_modules"] if m["kind"] == "mpi")
    assert openmpi["name"] == module_of(site, "mpi", "lmod")["name"]
    assert openmpi["facts"]["spack_unlocks"]       # read from the upstream's modulefile


def test_two_installed_mpis_are_an_error_listing_both(spack, site, tmp_path):
    """A personal Spack chained to the site that registers Debian's MPICH as well: with two MPIs
    installed and a package to compile against one, envmod refuses to guess and names both
    (before anything is built); --mpi picks one."""
    scope = personal_spack_scope(site, tmp_path)
    (scope / "packages.yaml").write_text("packages:\n  mpich:\n    buildable: false\n"
                                         "    externals:\n    - spec: mpich@4.0.2\n      prefix: /usr\n")
    spack("install", "mpich", scope=scope, timeout=900).check()
    result = spack("envmod", "create", "two", "--hdf5", "none", "--with", "mpi4py", scope=scope)
    assert result.returncode == 3, result.stderr
    text = " ".join(result.stderr.split())
    assert "2 installed mpi specs" in text and "mpich@4.0.2" in text and "openmpi@4.1.4" in text
    assert "--mpi" in text                                # the hint says how to choose
    assert not (spack.root / "envs" / "two").exists()
    spack("envmod", "create", "two", "--mpi", "openmpi", "--hdf5", "none", "--module-type", "lmod", "-q",
          scope=scope).check()
    mpi = next(m for m in record_of(spack, "two")["central_modules"] if m["kind"] == "mpi")
    assert mpi["name"] == module_of(site, "mpi", "lmod")["name"]

def test_spack_environment_supplies_the_stack(spack, site, tmp_path):
    env_dir = tmp_path / "spackenv"
    env_dir.mkdir()
    (env_dir / "spack.yaml").write_text("spack:\n  specs: [python, openmpi]\n  view: false\n"
                                        "  concretizer:\n    unify: true\n")
    spack("concretize", env_dir=env_dir, timeout=900).check()
    spack("envmod", "create", "fromenv", "--module-type", "lmod", "-q", env_dir=env_dir).check()
    record = record_of(spack, "fromenv")
    assert sorted(m["kind"] for m in record["central_modules"]) == ["mpi", "python"]   # no hdf5 in the env
    result = spack("envmod", "create", "fromenv2", "--hdf5", "hdf5", env_dir=env_dir)
    assert result.returncode == 3 and "Spack environment" in result.stderr


# ------------------------------------------------------------------------------- fresh shells


@pytest.mark.modules
@pytest.mark.parametrize("system, module_type", [("lmod", "lmod"), ("envmodules", "tcl")])
def test_fresh_shell_loads_and_unloads_the_env_and_its_python(spack, site, system, module_type):
    """Only the site's root dir of Spack's modules and envmod's in MODULEPATH: Lmod with the Lua
    module, Environment Modules with the Tcl one."""
    name = f"fresh{module_type}"
    spack("envmod", "create", name, "--module-type", module_type, "-q").check()
    result = fresh_shell(system, f"""
export MODULEPATH={shlex.quote(core_dir(site) if module_type == "lmod" else tcl_dir(site))}
module use {shlex.quote(str(spack.root / 'modules'))}
module load {name}/py3.11
echo "LOADED=$LOADEDMODULES"
python -c 'import sys; print("prefix", sys.prefix)'
module unload {name}/py3.11
echo "AFTER=${{LOADEDMODULES:-}}"
""").check()
    assert f"LOADED={module_of(site, 'python', module_type)['name']}:{name}/py3.11" in result.stdout
    assert f"prefix {spack.root / 'envs' / name}" in result.stdout
    assert "AFTER=" in result.stdout.splitlines()


# ------------------------------------------------------------------------------- compiling


RANKS_SCRIPT = """
from mpi4py import MPI
comm = MPI.COMM_WORLD
names = comm.gather(MPI.Get_library_version().split(",")[0], root=0)
if comm.rank == 0:
    print("ranks", comm.size, "libraries", sorted(set(names)))
"""

H5_SCRIPT = """
from mpi4py import MPI
import h5py
comm = MPI.COMM_WORLD
with h5py.File("out.h5", "w", driver="mpio", comm=comm) as f:
    d = f.create_dataset("ranks", (comm.size,), dtype="i")
    d[comm.rank] = comm.rank
comm.Barrier()
if comm.rank == 0:
    with h5py.File("out.h5", "r") as f:
        print("written", f["ranks"][:].tolist(), "by", comm.size, "ranks; mpi", h5py.get_config().mpi)
"""


@pytest.fixture(scope="module")
def build_area(tmp_path_factory):
    """Where the compiling tests make their envs: one envmod root and one wheel cache, so the
    h5py env reuses the mpi4py build of the mpi4py env when the central libraries are the same."""
    exe = require_spack()
    base = tmp_path_factory.mktemp("compiled")
    spack = Spack(exe, base / "root", base / "cache")
    spack.root.mkdir()
    (base / "ranks.py").write_text(RANKS_SCRIPT)
    (base / "h5.py").write_text(H5_SCRIPT)
    return spack, site_facts(exe), base


@pytest.fixture(scope="module")
def mpi_env(build_area):
    """An env with mpi4py compiled from source against Spack's openmpi."""
    spack, _, _ = build_area
    spack("envmod", "create", "mpi", "--module-type", "lmod", "--with", "mpi4py", timeout=3000).check()
    return build_area


@pytest.fixture(scope="module")
def h5_env(build_area):
    """An env with h5py compiled from source against Spack's parallel hdf5 (and its openmpi)."""
    spack, _, _ = build_area
    spack("envmod", "create", "h5", "--module-type", "lmod", "--with", "mpi4py", "h5py",
          "--description", "parallel HDF5 over Spack's stack", timeout=3600).check()
    return build_area


def fresh_lmod(spack: Spack, site: dict, base: Path, body: str) -> Result:
    return fresh_shell("lmod", f"""
cd {shlex.quote(str(base))}
export MODULEPATH={shlex.quote(core_dir(site))}
module use {shlex.quote(str(spack.root / 'modules'))}
{body}
""", timeout=600).check()


@pytest.mark.slow
@pytest.mark.modules
def test_mpi4py_env_runs_two_ranks_in_a_fresh_lmod_shell(mpi_env):
    spack, site, base = mpi_env
    names = [module_of(site, r, "lmod")["name"] for r in ("python", "mpi")]
    record = record_of(spack, "mpi")
    assert record["module"]["depends_on"] == names          # the scan proved libmpi is openmpi's
    built = {p["name"]: p for p in record["packages"]}
    assert built["mpi4py"]["install"] == "source" and built["mpi4py"]["built_against"] == [names[1]]
    assert built["mpi4py"]["build_env"]["MPICC"].endswith("/bin/mpicc")
    assert f"→ {names[1]}" in spack("envmod", "show", "mpi").check().stdout
    result = fresh_lmod(spack, site, base, """
module load mpi/py3.11
echo "LOADED=$LOADEDMODULES"
mpirun -n 2 python ranks.py
""")
    assert f"LOADED={':'.join(names)}:mpi/py3.11" in result.stdout
    assert "ranks 2 libraries ['Open MPI v4.1.4']" in result.stdout


@pytest.mark.slow
@pytest.mark.modules
def test_mpi4py_env_as_tcl_under_environment_modules(mpi_env):
    spack, site, base = mpi_env
    spack("envmod", "module", "mpi", "--module-type", "tcl").check()
    names = [module_of(site, r, "tcl")["name"] for r in ("python", "mpi")]
    result = fresh_shell("envmodules", f"""
cd {shlex.quote(str(base))}
export MODULEPATH={shlex.quote(tcl_dir(site))}
module use {shlex.quote(str(spack.root / 'modules'))}
module load mpi/py3.11
echo "LOADED=$LOADEDMODULES"
mpirun -n 2 python ranks.py
module unload mpi/py3.11
echo "AFTER=${{LOADEDMODULES:-}}"
""", timeout=600).check()
    assert f"LOADED={':'.join(names)}:mpi/py3.11" in result.stdout
    assert "ranks 2 libraries ['Open MPI v4.1.4']" in result.stdout
    assert "AFTER=" in result.stdout.splitlines()


@pytest.mark.slow
@pytest.mark.modules
def test_parallel_h5py_env_loads_python_openmpi_and_hdf5(h5_env):
    spack, site, base = h5_env
    names = [module_of(site, r, "lmod")["name"] for r in ("python", "mpi", "hdf5")]
    record = record_of(spack, "h5")
    assert record["module"]["depends_on"] == names
    build_env = {p["name"]: p for p in record["packages"]}["h5py"]["build_env"]
    assert os.path.isfile(os.path.join(build_env["HDF5_DIR"], "include", "hdf5.h"))
    assert os.path.exists(os.path.join(build_env["HDF5_DIR"], "lib", "libhdf5.so"))
    assert build_env["HDF5_MPI"] == "ON"
    # the link evidence tells Debian's libmpi and libhdf5 apart although both live in /usr
    shown = spack("envmod", "show", "h5").check().stdout
    assert f"→ {names[1]}" in shown and f"→ {names[2]}" in shown
    result = fresh_lmod(spack, site, base, """
module load h5/py3.11
echo "LOADED=$LOADEDMODULES"
mpirun -n 2 python h5.py
""")
    assert f"LOADED={':'.join(names)}:h5/py3.11" in result.stdout
    assert "written [0, 1] by 2 ranks; mpi True" in result.stdout
