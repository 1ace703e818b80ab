"""The venv backend: a standard virtual environment with the central site-packages visible.

It writes what ``python -m venv --without-pip --system-site-packages`` writes: the layout, links
and ``pyvenv.cfg`` in-process, the activate scripts by the central Python's own ``venv`` (one
short interpreter start). pip is the central Python's own (visible through the system
site-packages); small ``pip`` launchers in ``bin/`` make a bare ``pip`` install into the env
rather than into the central Python.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

from ...discover.pyinfo import PythonInfo
from ...errors import ConfigError, DiscoveryError
from .base import Backend

_PIP_LAUNCHER = """{shebang}
# envmod: pip from the central Python, installing into this environment.
import sys
from pip._internal.cli.main import main
if __name__ == "__main__":
    sys.exit(main())
"""


#: the kernel reads at most this much of a #! line (127 before Linux 5.1)
_SHEBANG_MAX = 127


def script_shebang(python: Path) -> str:
    """A #! line running ``python``. The kernel splits a #! line at white space and cuts it short,
    so a script under such a path starts through /bin/sh, as pip's own launchers do: the second
    line is shell to sh and a string to Python."""
    text = str(python)
    if not any(c.isspace() for c in text) and len(text) + 2 <= _SHEBANG_MAX:
        return f"#!{text}"
    if "'''" in text:
        raise ConfigError(f"cannot write a launcher for {text}: the path holds '''", hint="choose another envmod root")
    quoted = '"' + re.sub(r'([\\"$`])', r"\\\1", text) + '"'
    return "#!/bin/sh\n'''exec' " + quoted + ' "$0" "$@"\n' + "' '''"


def write_pip_launchers(bindir: Path, final: Path, short_version: str) -> None:
    """``pip``, ``pip3`` and ``pipX.Y`` in ``bindir``: the central pip installing into the env
    that will live at ``final``."""
    launcher = _PIP_LAUNCHER.format(shebang=script_shebang(final / "bin" / "python"))
    for alias in ("pip", "pip3", f"pip{short_version}"):
        (bindir / alias).write_text(launcher)
        os.chmod(bindir / alias, 0o755)


class VenvBackend(Backend):
    name = "venv"

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        self._scripts: subprocess.Popen | None = None      # the activate scripts' writer, while it runs
        self._python = ""                                   # the central Python that writes them

    def python(self, prefix: Path) -> Path:
        return prefix / "bin" / "python"

    def create(self, python: PythonInfo, target: Path, final: Path, env_name: str) -> None:
        self.start_create(python, target, final, env_name)
        self.finish_create()

    def start_create(self, python: PythonInfo, target: Path, final: Path, env_name: str) -> None:
        """The env's layout, links and pyvenv.cfg (what pip needs), with its activate scripts
        still being written (a Python start and venv's import: 20 ms that pip's install overlaps)."""
        _check_activate_path(final)
        short = python.short_version
        bindir = target / "bin"
        bindir.mkdir(parents=True, exist_ok=True)
        (target / "include").mkdir(exist_ok=True)
        (target / "lib" / f"python{short}" / "site-packages").mkdir(parents=True, exist_ok=True)
        if os.sep == "/" and not (target / "lib64").exists():
            os.symlink("lib", target / "lib64")
        base = python.executable
        (target / "pyvenv.cfg").write_text(
            f"home = {os.path.dirname(base)}\n"
            "include-system-site-packages = true\n"
            f"version = {python.version}\n"
            f"executable = {os.path.realpath(base)}\n"
            f"command = envmod create {env_name} (venv over {base})\n")
        os.symlink(base, bindir / "python")
        for alias in ("python3", f"python{short}"):
            os.symlink("python", bindir / alias)
        if python.has_pip:
            write_pip_launchers(bindir, final, short)
        self._python = python.executable
        self._scripts = self._start_activate_scripts(python, bindir, final, env_name)

    def finish_create(self) -> None:
        proc, self._scripts = self._scripts, None
        if proc is None:
            return
        try:
            _, stderr = proc.communicate(timeout=120)
        finally:
            if proc.returncode is None:      # timed out, or we were interrupted
                proc.kill()
                proc.communicate()
        if proc.returncode != 0:
            last = (stderr.strip().splitlines() or ["no message"])[-1]
            raise DiscoveryError(f"the central Python {self._python} could not write the env's activate "
                                 f"scripts with its venv module: {last}")

    def close(self) -> None:
        proc, self._scripts = self._scripts, None
        if proc is not None:
            proc.kill()
            proc.communicate()

    @staticmethod
    def _start_activate_scripts(python: PythonInfo, bindir: Path, final: Path,
                                env_name: str) -> subprocess.Popen | None:
        """The activate scripts, being written by the central Python's own venv, naming the final path.

        The env is built in staging and renamed into place, and these scripts hold the path quoted
        for each shell, so they are written for the final path at once rather than relocated.
        """
        scripts = Path(python.base_prefix) / "lib" / f"python{python.short_version}" / "venv" / "scripts"
        if not scripts.is_dir():
            return None     # a central Python without venv's scripts: an env without activate, as venv's own
        return subprocess.Popen([python.executable, "-I", "-S", "-c", _WRITE_ACTIVATE_SCRIPTS,
                                 str(bindir), str(final), env_name], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")


# Run by the central Python: its venv fills its own activate templates (``EnvBuilder.setup_scripts``)
# for the final path, written into staging's bin/. ``context.prompt`` is what venv itself sets:
# '(name) ' until 3.13, whose templates add the parentheses themselves.
_WRITE_ACTIVATE_SCRIPTS = """
import os, sys, types, venv
bin_path, env_dir, env_name = sys.argv[1:]
prompt = env_name if sys.version_info >= (3, 13) else "(%s) " % env_name
context = types.SimpleNamespace(env_dir=env_dir, env_name=env_name, prompt=prompt, bin_path=bin_path,
                                bin_name="bin", env_exe=os.path.join(env_dir, "bin", "python"))
venv.EnvBuilder().setup_scripts(context)
"""

# Characters venv's activate scripts cannot carry in the env's path: the templates of Pythons
# before gh-124651 (the site's 3.11.2) put the path raw between double quotes, where sh, csh and
# fish expand $ ` " \; and csh reads "!" as a history reference inside any quotes, so no
# generation's activate.csh can hold it. check_root refuses all but "!" in a root already; this
# holds for every caller (an EasyBuild install directory too).
_UNQUOTABLE_IN_ACTIVATE = frozenset('$`"\\!')


def _check_activate_path(final: Path) -> None:
    bad = next((c for c in str(final) if c in _UNQUOTABLE_IN_ACTIVATE or not c.isprintable()), None)
    if bad is not None:
        raise ConfigError(f"cannot write activate scripts for {str(final)!r}: the path holds {bad!r}, which "
                          "venv's activate scripts would expand", hint="choose another envmod root")


def relocate(prefix: Path, old: Path, new: Path) -> int:
    """Point text files that name the staging path (pip's script shebangs) at the final path."""
    old_b, new_b = os.fsencode(str(old)), os.fsencode(str(new))
    candidates = [p for p in (prefix / "bin").iterdir() if p.is_file() and not p.is_symlink()]
    candidates += list(prefix.glob("lib/python*/site-packages/*.pth"))
    changed = 0
    for path in candidates:
        try:
            if path.stat().st_size > 1 << 20:
                continue
            data = path.read_bytes()
        except OSError:
            continue
        if old_b in data:
            mode = path.stat().st_mode
            tmp = path.with_name(path.name + ".envmod-tmp")
            tmp.write_bytes(data.replace(old_b, new_b))
            os.chmod(tmp, mode)
            os.replace(tmp, path)
            changed += 1
    return changed

