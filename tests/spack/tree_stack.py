"""The CentralStack ``spack envmod create`` builds, read from the files of a Spack site without Spack.

The tests use it to check that the Spack extension (which asks Spack) and the plain files
(``.spack-db/index.json``, ``module-index.yaml``) describe a site alike; nothing in envmod needs it.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping

from bridge.discover.modsys import ModuleSystem
from bridge.discover.stack import CentralStack
from bridge.errors import DiscoveryError, PlanError, UsageError
from bridge.spack import stack as ss
from bridge.spack.stack import SpecFacts

_SELECTOR = re.compile(r"^\s*(?P<name>[A-Za-z0-9_][\w.-]*)?(?:@(?P<version>[^/\s+~]+))?"
                       r"(?P<variants>(?:[+~][\w-]+)*)\s*(?:/(?P<hash>[a-z0-9]+))?\s*$")


def matches_selector(spec: SpecFacts, text: str, provides: Callable[[SpecFacts, str], bool] = lambda s, v: False) -> bool:
    """Whether ``spec`` satisfies the small spec syntax :func:`stack_from_tree` selects with:
    ``name``, ``name@version`` (a version prefix: ``@3.11`` takes 3.11.2), ``+variant``/``~variant``
    (only ``mpi`` for HDF5 is known without Spack), ``/hash`` with or without a name."""
    m = _SELECTOR.match(text)
    if not m or not any(m.groupdict().values()):
        raise UsageError(f"cannot read the spec {text!r} without Spack",
                         hint="use name, name@version, name+mpi or /hash")
    name, version, variants, dag_hash = m.group("name"), m.group("version"), m.group("variants"), m.group("hash")
    if name and name != spec.name and not provides(spec, name):
        return False
    if version and not (spec.version == version or spec.version.startswith(version.rstrip(".") + ".")):
        return False
    if dag_hash and not spec.dag_hash.startswith(dag_hash):
        return False
    for sign, variant in re.findall(r"([+~])([\w-]+)", variants or ""):
        if variant != "mpi" or spec.parallel is None or spec.parallel != (sign == "+"):
            return False
    return True


def stack_from_tree(tree, indexes: Mapping[str, Any], *, module_type: str | None = None,
                    python: str | None = None, mpi: str | None = None, hdf5: str | None = None,
                    need_libraries: bool = True, module_system: ModuleSystem | None = None,
                    sysroot: str = "/") -> CentralStack:
    """The same CentralStack ``spack envmod create`` builds, from a :class:`bridge.spack.tree.SpackTree`
    and its :class:`bridge.spack.tree.ModuleIndex` es (module type -> index), without Spack.

    ``python``/``mpi``/``hdf5`` select specs in the syntax of :func:`matches_selector`
    (``none`` leaves one out).
    """
    if not indexes:
        raise DiscoveryError("no Spack module index given", hint="give the lmod or tcl module root")
    module_type = module_type or ss.choose_module_type(None, None, module_system, list(indexes),
                                                       source="the module indexes given")
    if module_type not in indexes:
        raise PlanError(f"no {module_type} module index given (have: {', '.join(indexes)})")
    facts = {s.dag_hash: ss.spec_facts_from_tree(tree, s) for s in tree.specs()}

    def provides(spec: SpecFacts, virtual: str) -> bool:
        return tree.provides(tree.get(spec.dag_hash), virtual)

    candidates = {role: [facts[s.dag_hash] for s in tree.find(role)] for role in ss.ROLES}
    requested = {"python": python, "mpi": mpi, "hdf5": hdf5}
    matching = {role: ([c for c in candidates[role] if matches_selector(c, text, provides)]
                       if text not in (None, "none") else None)
                for role, text in requested.items()}
    chosen = ss.choose_specs(candidates, matching, requested, need_libraries=need_libraries,
                             option=lambda role: role)
    modules = {s.dag_hash: ss.module_from_index(s, module_type, indexes) for s in chosen.values()}
    extra: list[SpecFacts] = []
    root = str(indexes[module_type].root)
    if module_type == "lmod":
        for spec in chosen.values():
            deps = []
            for dep_hash in spec.dependency_hashes:
                dep = facts.get(dep_hash)
                if dep is not None and indexes[module_type].module_for(dep_hash) is not None:
                    deps.append((dep, modules.get(dep_hash) or ss.module_from_index(dep, module_type, indexes)))
            dep_modules = {s.dag_hash: m for s, m in deps}
            for dep in ss.openers(spec, modules[spec.dag_hash], root, deps):
                modules.setdefault(dep.dag_hash, dep_modules[dep.dag_hash])
                extra.append(dep)
    return ss.build_stack(chosen, modules, module_system, extra, fs=ss._Fs(sysroot))
