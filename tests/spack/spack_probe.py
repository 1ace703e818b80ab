"""Run by the Spack tests as ``spack -c config:extensions:[...] python spack_probe.py MODE ...``:
prints one line of JSON with what Spack (and the envmod extension inside it) says.

  site                               module roots, enabled types, installed python/mpi/hdf5 and
                                     their module names
  stack TYPE [ROLE=SPEC ...]         the CentralStack `spack envmod create` builds (as dicts)
"""

import json
import os
import sys

import spack.config
import spack.extensions
import spack.modules
import spack.modules.common
import spack.store

spack.extensions.load_extension("envmod")
from spack.extensions.envmod.cmd import envmod as command  # noqa: E402

command._import_bridge()
from spack.extensions.envmod import spackside  # noqa: E402

from bridge.spack.stack import modulepath_of  # noqa: E402


def module_dict(m):
    return {"name": m.name, "modulefile": m.modulefile, "kind": m.kind, "prefix": m.prefix,
            "paths": {k: list(v) for k, v in m.paths.items()}, "facts": m.facts}


def site():
    enabled = [str(t) for t in spack.config.get("modules:default:enable") or []]
    out = {"enabled": enabled, "roots": {t: spack.modules.common.root_path(t, "default") for t in enabled},
           "install_root": str(spack.store.STORE.root), "specs": {}, "modules": {}}
    for role in ("python", "mpi", "hdf5"):
        specs = spack.store.STORE.db.query(role, installed=True)
        out["specs"][role] = [s.format("{name}@{version}/{hash:7}") for s in specs]
        for s in specs:
            names = {}
            for t in enabled:
                path = spack.modules.get_module(t, s, get_full_path=True, required=False)
                name = spack.modules.get_module(t, s, get_full_path=False, required=False)
                names[t] = {"name": name, "path": path, "modulepath": modulepath_of(path, name) if path else None}
            out["modules"][s.dag_hash()] = {"role": role, "spec": s.format("{name}@{version}/{hash:7}"), **names}
    return out


def stack(module_type, *pairs):
    requested = {"python": None, "mpi": None, "hdf5": None}
    for pair in pairs:
        role, _, text = pair.partition("=")
        requested[role] = text
    built = spackside.central_stack(spackside.SpackSite(None), requested, module_type, need_libraries=True)
    return [module_dict(m) for m in built.modules]


mode, args = sys.argv[1], sys.argv[2:]
result = site() if mode == "site" else stack(*args)
sys.stdout.write(json.dumps(result) + "\n")
sys.stdout.flush()
os._exit(0)
