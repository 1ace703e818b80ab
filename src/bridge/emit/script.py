"""``envmod export NAME --format bash|csh|fish``: an env for a shell without a module system.

The script sets exactly what loading the env's module sets, its central modules included
(``PATH``, ``LD_LIBRARY_PATH``, ``HDF5_DIR``, ...), as the site's module tool itself does it
(:func:`bridge.discover.loadeffect.load_effect`), and nothing of the tool's own state. Its
header says where it came from; it refuses to run on a host of another architecture (``uname
-m``) unless ``ENVMOD_FORCE_ARCH=1``. The microarchitecture the env was built on is written in
the header only: packages are compiled with the compiler's default (generic) target, so another
CPU of the same architecture runs them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Mapping, Sequence

from .. import __version__
from ..errors import UsageError
from ..store.record import EnvRecord

SHELLS = ("bash", "csh", "fish")


def record_machine(record: EnvRecord) -> str:
    """The architecture (``uname -m``) the env's compiled code is for: that of its Python's
    platform (``linux-x86_64``), else this host's."""
    platform = record.python.platform or ""
    return platform.split("-", 1)[1] if "-" in platform else os.uname().machine


def render_script(record: EnvRecord, shell: str, modules_dir: Path, templates: Path | None = None,
                  cache_dir: Path | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The ``shell`` script reproducing ``module load`` of ``record``'s module, learnt from the
    module tool initialised in ``environ`` with its ``MODULEPATH`` and the envmod root's
    ``modules_dir``."""
    from ..discover.loadeffect import load_effect
    from ..discover.modsys import detect_module_system
    from .templating import TemplateFailure, render_template

    environ = os.environ if environ is None else environ
    system = detect_module_system(environ)
    modulepath: Sequence[str] = [*environ.get("MODULEPATH", "").split(":"), str(modules_dir)]
    changes = load_effect(system, record.module.name, modulepath, environ)
    machine = record_machine(record)
    context = {
        "name": record.name, "module": record.module.name, "loads": " ".join(record.module.depends_on) or "nothing else",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "host": os.uname().nodename,
        "machine": machine, "microarchitecture": record.created.microarchitecture or "an unrecorded CPU",
        "version": __version__, "tool": f"{system.name} {system.version or ''}".strip(),
        "refusal": f"envmod: this set-up of {record.name} is for {machine} hosts; this one is ",
        "refusal_end": " (set ENVMOD_FORCE_ARCH=1 to use it anyway)",
        "changes": changes,
    }
    try:
        return render_template(f"export/script.{shell}.j2", context, templates, cache_dir)
    except ValueError as exc:
        raise UsageError(f"cannot export {record.name} for {shell}: {exc}",
                         hint="nothing was written; another --format may hold it") from exc
    except TemplateFailure as exc:
        raise exc.config_error(f"the {shell} export of {record.name!r}", templates) from None
