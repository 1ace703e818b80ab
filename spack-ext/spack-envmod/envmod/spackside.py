"""What ``spack envmod`` asks Spack: installed specs (upstreams included) or those of the active
Spack environment, and the module Spack wrote for each, in the terms of envmod's library
(:mod:`bridge.spack.stack`). Everything else is the library's.

Runs inside Spack (imported as ``spack.extensions.envmod.spackside``), after ``bridge`` was
made importable by the command.
"""

import os
from typing import Dict, List, Optional, Sequence

import spack.cmd
import spack.config
import spack.modules
import spack.modules.common
import spack.store

from bridge.spack import stack as ss
from bridge.errors import DiscoveryError, UsageError


def facts(spec) -> ss.SpecFacts:
    """One concrete Spack spec as the library's SpecFacts."""
    mpi = None
    if spec.name == "hdf5":
        try:
            mpi = spec["mpi"]
        except KeyError:
            mpi = None
    parallel = None
    if spec.name == "hdf5" and "mpi" in spec.variants:
        parallel = bool(spec.variants["mpi"].value)
    return ss.SpecFacts(
        name=spec.name, version=str(spec.version), dag_hash=spec.dag_hash(), prefix=str(spec.prefix),
        external=bool(spec.external), parallel=parallel,
        mpi_name=mpi.name if mpi is not None else None, mpi_hash=mpi.dag_hash() if mpi is not None else None,
        dependency_hashes=tuple(d.dag_hash() for d in spec.traverse(root=False)))


class SpackSite:
    """The installed specs (or the active environment's) and Spack's module configuration."""

    def __init__(self, env=None) -> None:
        """``env``: the Spack environment to take specs from (None: every installed spec)."""
        self.env = env
        # str(): Spack's config strings are a str subclass that plain YAML dumpers refuse
        self.enabled: List[str] = [str(t) for t in spack.config.get("modules:default:enable") or []]
        self._specs: Dict[str, object] = {}          # DAG hash -> Spack spec
        self._not_installed: Dict[str, List[str]] = {}

    @property
    def where(self) -> str:
        return f"installed specs of Spack environment {self.env.name}" if self.env is not None else "installed"

    # ---- specs ---------------------------------------------------------------------------
    def candidates(self, role: str) -> List[ss.SpecFacts]:
        if self.env is None:
            pool = spack.store.STORE.db.query(role, installed=True)
        else:
            pool, missing = {}, []
            for spec in self.env.all_specs():
                if spec.satisfies(role):
                    if spec.installed:
                        pool[spec.dag_hash()] = spec
                    else:
                        missing.append(spec.format("{name}@{version}/{hash:7}"))
            pool = list(pool.values())
            self._not_installed[role] = missing
        for spec in pool:
            self._specs[spec.dag_hash()] = spec
        return [facts(s) for s in pool]

    def not_installed(self, role: str) -> List[str]:
        return self._not_installed.get(role, [])

    def matching(self, role: str, text: Optional[str], pool: Sequence[ss.SpecFacts]) -> Optional[List[ss.SpecFacts]]:
        """The candidates satisfying the user's SPEC (None when none was given)."""
        if text is None or text == "none":
            return None
        try:
            parsed = spack.cmd.parse_specs([text])
        except Exception as exc:      # Spack's spec syntax errors have several classes
            raise UsageError(f"--{role} {text!r} is not a Spack spec: {exc}") from None
        if len(parsed) != 1:
            raise UsageError(f"--{role} {text!r} names {len(parsed)} specs; give one")
        query = parsed[0]
        return [c for c in pool if self._specs[c.dag_hash].satisfies(query)]

    def spec(self, dag_hash: str):
        spec = self._specs.get(dag_hash)
        if spec is None:
            spec = spack.store.STORE.db.query_one(f"/{dag_hash}")
            self._specs[dag_hash] = spec
        return spec

    def dependencies(self, dag_hash: str) -> list:
        """The specs below one in its DAG (each once), known to :meth:`module` from then on."""
        out = list(self.spec(dag_hash).traverse(root=False))
        for dep in out:
            self._specs.setdefault(dep.dag_hash(), dep)
        return out

    def installed(self, dag_hash: str) -> Optional[str]:
        """``name@version/hash7`` of the installed spec with that hash (any upstream), else None."""
        _, record = spack.store.STORE.db.query_by_spec_hash(dag_hash)
        if record is None or not record.installed:
            return None
        return record.spec.format("{name}@{version}/{hash:7}")

    # ---- modules -------------------------------------------------------------------------
    def module_root(self, module_type: str) -> str:
        return spack.modules.common.root_path(module_type, "default")

    def module(self, dag_hash: str, module_type: str, required: bool = True) -> Optional[ss.SpackModule]:
        """The module Spack wrote for a spec: its name and file from Spack's own configuration
        (projections, hashes, the Lmod hierarchy), or from an upstream's module index."""
        spec = self.spec(dag_hash)
        label = spec.format("{name}@{version}/{hash:7}")
        try:
            path = spack.modules.get_module(module_type, spec, get_full_path=True, required=False)
            name = spack.modules.get_module(module_type, spec, get_full_path=False, required=False)
        except spack.modules.common.ModuleNotFoundError as exc:
            if not required:
                return None
            raise DiscoveryError(f"{exc}", hint=f"the site should run 'spack module {module_type} refresh'") from None
        if not path or not name:
            if not required:
                return None
            raise DiscoveryError(f"Spack has no {module_type} module for {label} "
                                 "(excluded by modules.yaml, or an upstream that wrote none)",
                                 hint="choose another spec, or ask your site to generate its module")
        names = {}
        for kind in self.enabled:
            try:
                other_path = spack.modules.get_module(kind, spec, get_full_path=True, required=False)
                other = spack.modules.get_module(kind, spec, get_full_path=False, required=False)
            except spack.modules.common.ModuleNotFoundError:
                other = other_path = None
            if other and other_path:
                names[kind] = {"name": str(other), "modulefile": str(other_path),
                               "modulepath": ss.modulepath_of(str(other_path), str(other))}
        unlocks: Sequence[str] = ()
        if module_type == "lmod":
            if spec.installed_upstream:
                unlocks = ss.unlocks_from_modulefile(path)
            else:
                layout = spack.modules.module_types["lmod"](spec, "default").layout
                unlocks = tuple(os.path.join(*parts) for parts in layout.unlocked_paths[None])
        name, path = str(name), str(path)
        return ss.SpackModule(use_name=name, path=path, modulepath=ss.modulepath_of(path, name),
                              unlocks=tuple(str(u) for u in unlocks), names=names)


def central_stack(site: SpackSite, requested: Dict[str, Optional[str]], module_type: str, need_libraries: bool,
                  module_system=None, needed: Optional[Dict[str, str]] = None):
    """The CentralStack of a ``spack envmod create``: Python, MPI and HDF5 chosen among the
    site's (or environment's) installed specs, named as Spack's modules of ``module_type``.
    ``needed``: role -> a requested package compiled against it (``none`` is refused there)."""
    candidates = {role: site.candidates(role) for role in ss.ROLES}
    for role in ss.ROLES:
        if site.env is not None and not candidates[role] and site.not_installed(role) and requested.get(role) != "none":
            raise DiscoveryError(f"the {role} of Spack environment {site.env.name} is not installed: "
                                 f"{', '.join(site.not_installed(role))}", hint=f"run 'spack -e {site.env.name} install'")
    matching = {role: site.matching(role, requested.get(role), candidates[role]) for role in ss.ROLES}
    chosen = ss.choose_specs(candidates, matching, requested, need_libraries=need_libraries, where=site.where,
                             needed=needed)
    modules = {s.dag_hash: site.module(s.dag_hash, module_type) for s in chosen.values()}
    extra: List[ss.SpecFacts] = []
    if module_type == "lmod":
        root = site.module_root("lmod")
        for spec in chosen.values():
            module = modules[spec.dag_hash]
            if ss.is_core_modulepath(module.modulepath, root):
                continue
            deps = []
            for dep in site.dependencies(spec.dag_hash):
                dep_module = modules.get(dep.dag_hash()) or site.module(dep.dag_hash(), "lmod", required=False)
                if dep_module is not None:
                    deps.append((facts(dep), dep_module))
            for dep in ss.openers(spec, module, root, deps):
                modules.setdefault(dep.dag_hash, dict((s.dag_hash, m) for s, m in deps)[dep.dag_hash])
                extra.append(dep)
    return ss.build_stack(chosen, modules, module_system, extra)
