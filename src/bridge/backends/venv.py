"""The venv backend: a standard virtual environment with the central site-packages visible.

It writes what ``python -m venv --without-pip --system-site-packages`` writes, in-process,
so creating an env costs no interpreter start. pip is the central Python's own (visible
through the system site-packages); small ``pip`` launchers in ``bin/`` make a bare ``pip``
install into the env rather than into the central Python.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..pyinfo import PythonInfo
from .base import Backend

_PIP_LAUNCHER = """#!{python}
# envmod: pip from the central Python, installing into this environment.
import sys
from pip._internal.cli.main import main
if __name__ == "__main__":
    sys.exit(main())
"""


class VenvBackend(Backend):
    name = "venv"

    def python(self, prefix: Path) -> Path:
        return prefix / "bin" / "python"

    def create(self, python: PythonInfo, target: Path, final: Path, env_name: str) -> None:
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
            launcher = _PIP_LAUNCHER.format(python=final / "bin" / "python")
            for alias in ("pip", "pip3", f"pip{short}"):
                (bindir / alias).write_text(launcher)
                os.chmod(bindir / alias, 0o755)
        self._activate_scripts(python, bindir, final, env_name)

    @staticmethod
    def _activate_scripts(python: PythonInfo, bindir: Path, final: Path, env_name: str) -> None:
        """venv's own activate scripts from the central Python, for users who source them."""
        scripts = Path(python.base_prefix) / "lib" / f"python{python.short_version}" / "venv" / "scripts"
        replacements = {"__VENV_DIR__": str(final), "__VENV_NAME__": env_name,
                        "__VENV_PROMPT__": f"({env_name}) ", "__VENV_BIN_NAME__": "bin",
                        "__VENV_PYTHON__": str(final / "bin" / "python")}
        for sub in ("common", "posix"):
            folder = scripts / sub
            if not folder.is_dir():
                continue
            for src in folder.iterdir():
                try:
                    text = src.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError):
                    continue
                for key, value in replacements.items():
                    text = text.replace(key, value)
                (bindir / src.name).write_text(text, encoding="utf-8")


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

