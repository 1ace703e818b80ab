"""A user of the conda site as the conda tier's envmod tests see one: the site's conda module (and
nothing else) loaded in real Lmod, a root, caches and a conda package cache of their own, and
envmod run as a command. Loading an env's module happens in a fresh real module shell (Lmod or
Environment Modules), as a user would."""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bridge.store.record import EnvRecord, read_record
from tests.conda.conftest import CONDA_VERSION, conda_site, require_conda
from tests.conftest import ModuleShell, ShellResult, envmod_command, require_site

CONDA_MODULE = f"conda/{CONDA_VERSION}"


def conda_module_tree(system: str) -> Path:
    return conda_site() / "modules" / ("lua" if system == "lmod" else "tcl")


@dataclass
class CondaUser:
    root: Path
    cache: Path
    env: dict[str, str]

    @classmethod
    def make(cls, top: Path, pkgs: Path, loads: str = CONDA_MODULE, config: str | None = None) -> "CondaUser":
        """A user under ``top`` with ``loads`` loaded (from the site's and the conda site's
        modules); ``pkgs`` is the conda package cache (shared by a test session: warm)."""
        require_site()
        require_conda()
        home = top / "home"
        home.mkdir(parents=True, exist_ok=True)
        shell = ModuleShell("lmod", top / "root", top / "cache")
        env = shell.environment(f"module use {shlex.quote(str(conda_module_tree('lmod')))}\n"
                                + (f"module load {loads}\n" if loads else ""))
        env.update(ENVMOD_ROOT=str(shell.root), XDG_CACHE_HOME=str(shell.cache), HOME=str(home),
                   CONDA_PKGS_DIRS=str(pkgs), ENVMOD_CONFIG=str(home / "envmod.yaml"))
        if config is not None:
            (home / "envmod.yaml").write_text(config)
        return cls(shell.root, shell.cache, env)

    def argv(self, *args: str) -> list[str]:
        return [*shlex.split(envmod_command()), *args]

    def envmod(self, *args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), env={**self.env, **env}, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout)

    def start(self, *args: str, **env: str) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*args), env={**self.env, **env}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)

    def record(self, name: str) -> EnvRecord:
        return read_record(self.root / "envs" / name / "envmod.yaml")

    def in_module_shell(self, system: str, script: str) -> ShellResult:
        """``script`` in a fresh ``system`` shell (lmod, envmodules) that sees the conda site's
        modules and the user's envs' modules, nothing loaded."""
        if system == "envmodules":
            for name in (p.name for p in (self.root / "envs").iterdir() if not p.name.startswith(".")):
                if all(p.suffix == ".lua" for p in (self.root / "modules" / name).iterdir()):   # no Tcl one yet
                    written = self.envmod("module", name, "--module-type", "tcl")
                    assert written.returncode == 0, written.stderr
        shell = ModuleShell(system, self.root, self.cache)
        return shell.run(f"module use {shlex.quote(str(conda_module_tree(system)))}\n"
                         f"module use {shlex.quote(str(self.root / 'modules'))}\n" + script,
                         extra_env={"HOME": self.env["HOME"]})

    def visible(self) -> list[str]:
        """What a user sees of the root: the env names `envmod list` lists, and module directories."""
        listed = self.envmod("list", "--json")
        assert listed.returncode == 0, listed.stderr
        import json

        names = [row["name"] for row in json.loads(listed.stdout)]
        modules = sorted(p.name for p in (self.root / "modules").iterdir()) if (self.root / "modules").is_dir() else []
        envs = sorted(p.name for p in (self.root / "envs").iterdir() if not p.name.startswith(".")) \
            if (self.root / "envs").is_dir() else []
        return sorted(set(names) | {f"modules/{m}" for m in modules} | {f"envs/{e}" for e in envs})

    def leftovers(self, name: str) -> list[str]:
        """What a killed create of ``name`` may leave that no user sees: builds, staging, trash,
        links, modulefile temp files."""
        out = []
        for base in (self.root / "envs" / ".builds", self.root / ".envmod" / "staging", self.root / ".envmod" / "trash"):
            if base.is_dir():
                out += [str(p) for p in base.glob(f"{name}@*")]
        if (self.root / "envs").is_dir():
            out += [str(p) for p in (self.root / "envs").glob(f".{name}.*")]
        out += [str(p) for p in (self.root / "modules" / name).glob(".tmp-*")]
        return sorted(out)


def one_line(proc: subprocess.CompletedProcess) -> str:
    """The one error line of a refused command (no traceback)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("[")]
    assert len(lines) == 1 and lines[0].startswith("envmod: error: "), proc.stderr
    return lines[0]
