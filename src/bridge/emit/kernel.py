"""``envmod kernel``: a Jupyter kernelspec that loads the env's module before starting ipykernel.

A kernelspec is a directory ``<kernels>/<name>/`` holding ``kernel.json`` and, here, a bash
launcher (templates ``kernels/kernel.json.j2`` and ``kernels/launcher.sh.j2``). The launcher
initialises the site's module tool (Lmod from its ``init/bash``, Environment Modules with its
``autoinit``), purges, loads the env's module, which loads the central modules it was built
against, and execs ``<prefix>/bin/python -m ipykernel_launcher``. A module that does not load
ends the launcher with a message on stderr, never a fallback to another Python.

Written against the record only (its prefix and module), so it serves every backend. The
kernels installed are recorded (``EnvRecord.kernels``) so ``envmod remove`` and ``envmod list``
find them. A kernelspec of the same name not made for this env is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Mapping

from .. import __version__
from ..discover.modsys import EnvironmentModules, ModuleSystem, detect_module_system
from ..errors import EnvExists, UsageError
from ..fsutil import new_dir
from ..store.record import EnvRecord

LAUNCHER = "envmod-kernel.sh"


def kernel_name(env_name: str) -> str:
    """The kernelspec's name: Jupyter folds kernel names to lower case when it looks them up."""
    return f"envmod-{env_name.lower()}"


def user_kernels_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Jupyter's per-user kernels directory: jupyter_core's own answer where it is installed,
    else the same rule (``$JUPYTER_DATA_DIR``, else ``$XDG_DATA_HOME/jupyter`` or
    ``~/.local/share/jupyter``, Linux)."""
    environ = os.environ if environ is None else environ
    if environ is os.environ:
        try:
            from jupyter_core.paths import jupyter_data_dir

            return Path(jupyter_data_dir()) / "kernels"
        except ImportError:
            pass
    if environ.get("JUPYTER_DATA_DIR"):
        return Path(environ["JUPYTER_DATA_DIR"]).expanduser() / "kernels"
    data_home = environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data_home) / "jupyter" / "kernels"


def prefix_kernels_dir(prefix: Path) -> Path:
    """Where ``jupyter kernelspec install --prefix DIR`` puts kernels (``DIR/share/jupyter/kernels``)."""
    return Path(prefix).absolute() / "share" / "jupyter" / "kernels"


def env_python(record: EnvRecord) -> Path:
    return Path(record.prefix) / "bin" / "python"


def _check_ipykernel(record: EnvRecord, system: ModuleSystem, environ: Mapping[str, str], modules_dir: Path) -> None:
    """ipykernel must be importable by the env's Python as the kernel runs it: with the env's
    module loaded (its own packages, or a central module's)."""
    python = env_python(record)
    probe = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('ipykernel') else 3)"
    env = {**environ, "MODULEPATH": ":".join(p for p in (environ.get("MODULEPATH", ""), str(modules_dir)) if p)}
    load = system.run(["load", record.module.name], env)
    failure = system.failure(load)
    if failure:
        raise UsageError(f"cannot load {record.module.name} to check {record.name}'s Python: {failure}")
    proc = subprocess.run(["bash", "--noprofile", "--norc", "-c", 'eval "$1" >&2 && exec "$2" -c "$3"', "bash",
                           load.stdout, str(python), probe], capture_output=True, text=True, env=env)
    if proc.returncode == 3:
        raise UsageError(f"ipykernel is not installed in {record.name}, so it cannot run a Jupyter kernel",
                         hint=f"create it with ipykernel: envmod create {record.name} --force --with ipykernel ... "
                              "(or create --kernel, which adds it)")
    if proc.returncode != 0:
        raise UsageError(f"cannot run {record.name}'s Python {python}: "
                         f"{' '.join(proc.stderr.split())[:200] or f'exit status {proc.returncode}'}")


def made_for(kernel_dir: Path) -> str | None:
    """The env prefix the kernelspec in ``kernel_dir`` was made for by envmod; None if it was
    not made by envmod (or cannot be read)."""
    try:
        data = json.loads((kernel_dir / "kernel.json").read_text(encoding="utf-8"))
        return str(data["metadata"]["envmod"]["prefix"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _check_collision(record: EnvRecord, kernels_dir: Path, name: str) -> None:
    """Refuse a kernelspec of this name (in any case: Jupyter folds case) that is not this env's."""
    if not kernels_dir.is_dir():
        return
    for existing in kernels_dir.iterdir():
        if existing.name.lower() == name and made_for(existing) != record.prefix:
            raise EnvExists(f"a Jupyter kernel named {existing.name!r} exists at {existing} and was not made for "
                            f"{record.name}; nothing changed",
                            hint="remove it with 'jupyter kernelspec remove', or install this one with --prefix DIR")


def _tool_context(system: ModuleSystem, environ: Mapping[str, str]) -> dict[str, Any]:
    """How the launcher initialises ``system``, the module tool initialised in ``environ``."""
    if isinstance(system, EnvironmentModules):
        return {"tool": "envmodules", "autoinit": system.argv("bash", "autoinit"), "lmod_init": ""}
    package = environ.get("LMOD_PKG") or str(Path(system.command).resolve().parents[1])
    return {"tool": "lmod", "autoinit": [], "lmod_init": str(Path(package) / "init" / "bash")}


def _check_module_readable(record: EnvRecord, tool: str) -> None:
    if tool == "envmodules" and "tcl" not in record.module.files:
        raise UsageError(f"{record.name} has no Tcl modulefile, which Environment Modules needs to load it",
                         hint=f"write it first: envmod module {record.name} --module-type tcl")


def install_kernel(record: EnvRecord, kernels_dir: Path, modules_dir: Path, display_name: str | None = None,
                   templates: Path | None = None, cache_dir: Path | None = None,
                   environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Install the kernelspec of ``record`` in ``kernels_dir`` (atomically: built beside it and
    renamed into place; one of this env's replaced) and return what to record of it."""
    from .templating import TemplateFailure, render_template

    environ = os.environ if environ is None else environ
    name = kernel_name(record.name)
    _check_collision(record, kernels_dir, name)
    system = detect_module_system(environ)
    tool = _tool_context(system, environ)
    _check_module_readable(record, tool["tool"])
    _check_ipykernel(record, system, environ, modules_dir)
    target = kernels_dir / name
    display = display_name or f"{record.name} ({record.module.name})"
    context = {**tool, "kernel": name, "name": record.name, "prefix": record.prefix, "module": record.module.name,
               "display_name": display, "launcher": str(target / LAUNCHER), "python": str(env_python(record)),
               "modulepath": environ.get("MODULEPATH", ""), "modules_dir": str(modules_dir), "version": __version__}
    try:
        texts = {"kernel.json": render_template("kernels/kernel.json.j2", context, templates, cache_dir),
                 LAUNCHER: render_template("kernels/launcher.sh.j2", context, templates, cache_dir)}
    except ValueError as exc:
        raise UsageError(f"cannot write the kernel of {record.name}: {exc}") from exc
    except TemplateFailure as exc:
        raise exc.config_error(f"the Jupyter kernel of {record.name!r}", templates) from None
    _put_in_place(kernels_dir, target, texts)
    return {"name": name, "dir": str(target), "display_name": display}


def _put_in_place(kernels_dir: Path, target: Path, texts: Mapping[str, str]) -> None:
    """Write the kernelspec's files in a fresh directory beside ``target``, then rename it in:
    Jupyter never lists a half-written kernel, and a failure leaves nothing behind."""
    try:
        kernels_dir.mkdir(parents=True, exist_ok=True)
        staging = new_dir(kernels_dir, f".{target.name}.tmp-")
    except OSError as exc:
        raise UsageError(f"cannot write Jupyter kernels to {kernels_dir}: {exc.strerror}") from None
    old = None
    try:
        for file_name, text in texts.items():
            (staging / file_name).write_text(text, encoding="utf-8")
        (staging / LAUNCHER).chmod(0o755 & ~_umask())
        if target.exists():
            old = kernels_dir / f".{target.name}.old-{os.getpid()}"
            os.rename(target, old)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None and not target.exists():
            os.rename(old, target)
            old = None
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    from ..fsutil import current_umask

    return current_umask()


def remove_kernels(record: EnvRecord) -> list[str]:
    """Remove the kernelspecs recorded for ``record`` that are still this env's; their paths."""
    removed = []
    for kernel in record.kernels:
        directory = Path(kernel.get("dir", ""))
        if directory.is_dir() and made_for(directory) == record.prefix:
            shutil.rmtree(directory)
            removed.append(str(directory))
    return removed


def recorded_with(record: EnvRecord, entry: Mapping[str, str]) -> list[dict[str, str]]:
    """``record``'s kernels with ``entry`` added, replacing one installed in the same place."""
    return [k for k in record.kernels if k.get("dir") != entry["dir"]] + [dict(entry)]


def with_ipykernel(packages: list[str]) -> list[str]:
    """``packages`` with ipykernel added unless one of them names it (``create --kernel``: the
    kernel needs it, and installed at create it is pinned and recorded like any other package)."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    def names_ipykernel(spec: str) -> bool:
        try:
            return canonicalize_name(Requirement(spec).name) == "ipykernel"
        except InvalidRequirement:
            return False

    return packages if any(names_ipykernel(p) for p in packages) else [*packages, "ipykernel"]


def reinstall_kernels(record: EnvRecord, kernels: list[dict[str, str]], modules_dir: Path,
                      templates: Path | None = None, cache_dir: Path | None = None) -> list[str]:
    """After ``create --force`` replaced an env: install each kernel the old env had again, in the
    same place under the same display name (its launcher now names the new env's module), and
    record it in ``record``. One that cannot be (no ipykernel in the new env, say) is removed rather
    than left to fail; what happened to it is returned, one line each."""
    from ..errors import EnvmodError

    notes = []
    for kernel in kernels:
        directory = Path(kernel.get("dir", ""))
        if made_for(directory) != record.prefix:
            continue
        try:
            entry = install_kernel(record, directory.parent, modules_dir, kernel.get("display_name"), templates,
                                   cache_dir)
        except EnvmodError as exc:
            shutil.rmtree(directory, ignore_errors=True)
            notes.append(f"removed the Jupyter kernel {directory}: {exc.one_line()}")
            continue
        record.kernels = recorded_with(record, entry)
        notes.append(f"updated the Jupyter kernel {directory}")
    return notes
