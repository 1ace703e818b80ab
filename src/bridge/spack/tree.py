"""Read a Spack install tree and its module indexes without importing Spack.

Spack's own Python API needs Spack's interpreter, its config scopes and a second or more of
start-up; envmod only needs to know what a central Spack site has installed and which module
loads each spec. Both are in plain files that Spack keeps up to date:

* ``<install root>/.spack-db/index.json``: the database (format version 8: Spack 1.0 and later);
  Spack replaces it atomically, so it can be read without taking Spack's lock.
* ``<module root>/module-index.yaml``: DAG hash -> ``{path, use_name}`` of each generated
  modulefile; only ``spack module <kind> refresh`` rewrites it.

Typical use::

    tree = SpackTree.open("/opt/site/opt")
    hdf5 = tree.find("hdf5")[0]
    mpi = tree.dependency(hdf5, "mpi")          # the openmpi spec hdf5 was built with
    lmod = ModuleIndex.open("/opt/site/modules/lmod")
    lmod.module_for(mpi).use_name               # 'openmpi/4.1.4-d2lqwco'
"""

from __future__ import annotations

import json
import os
import types
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

__all__ = [
    "KNOWN_PROVIDERS",
    "SUPPORTED_DB_VERSIONS",
    "CorruptSpackData",
    "FrozenParameters",
    "ModuleEntry",
    "ModuleIndex",
    "NotASpackTree",
    "SpackDependency",
    "SpackSpec",
    "SpackTree",
    "SpackTreeError",
    "UnsupportedDatabaseVersion",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Database format versions this reader understands. Version 8 came with Spack 1.0 (compilers
#: became dependency nodes); 0.21 to 0.23 wrote version 7, which this reader has not been
#: checked against.
SUPPORTED_DB_VERSIONS = frozenset({"8"})

DB_DIRNAME = ".spack-db"
INDEX_FILENAME = "index.json"
MODULE_INDEX_FILENAME = "module-index.yaml"

#: Packages known to provide a virtual, as ``name`` or ``name+variant`` (a provider only when
#: that boolean variant is on: nvhpc is mostly installed as a compiler). The database only
#: names a virtual on the edge from a dependent, so this list is what identifies a provider
#: nothing depends on yet, e.g. an MPI installed on its own. Taken from the ``provides("mpi")``
#: declarations of the spack-packages release v2025.11.0, plus names that older releases used
#: and that databases may still hold.
KNOWN_PROVIDERS: Mapping[str, tuple[str, ...]] = types.MappingProxyType(
    {
        "mpi": (
            "openmpi",
            "mpich",
            "mvapich",
            "mvapich2",
            "mvapich-plus",
            "intel-oneapi-mpi",
            "cray-mpich",
            "cray-mvapich2",
            "hpcx-mpi",
            "spectrum-mpi",
            "fujitsu-mpi",
            "mpt",
            "msmpi",
            "mpilander",
            "mpi-serial",
            "nmad+mpi",
            "nvhpc+mpi",
            # older recipe names
            "intel-mpi",
            "intel-parallel-studio+mpi",
            "mvapich2-gdr",
            "mvapich2x",
            "mpitrampoline",
        ),
    }
)


# --------------------------------------------------------------------------- errors


class SpackTreeError(Exception):
    """A Spack install tree or module root could not be read."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class NotASpackTree(SpackTreeError):
    """The directory holds no Spack database (or no module index)."""


class UnsupportedDatabaseVersion(SpackTreeError):
    """The database was written in a format this reader does not know."""


class CorruptSpackData(SpackTreeError):
    """A database or module index exists but cannot be parsed or has the wrong shape."""


# --------------------------------------------------------------------------- specs


class FrozenParameters(dict):
    """A read-only dict: a spec's parameters. A dict subclass rather than a mapping proxy so
    that specs still pickle (for caches) and serialise to JSON."""

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("the parameters of a recorded Spack spec are read-only")

    __setitem__ = __delitem__ = __ior__ = _read_only  # type: ignore[assignment]
    clear = pop = popitem = setdefault = update = _read_only  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        # the default dict pickling refills through __setitem__, which is blocked
        return (type(self), (dict(self),))


@dataclass(frozen=True)
class SpackDependency:
    """One edge of the DAG: a direct dependency as recorded on the dependent."""

    name: str
    dag_hash: str
    deptypes: tuple[str, ...] = ()
    virtuals: tuple[str, ...] = ()

    def provides(self, virtual: str) -> bool:
        return virtual in self.virtuals


@dataclass(frozen=True)
class SpackSpec:
    """An installed (or registered external) spec, as the database records it.

    Two specs are equal when their fields are; ``parameters`` takes no part in equality or
    hashing since the DAG hash already covers it.
    """

    name: str
    version: str
    dag_hash: str
    prefix: Path
    external: bool = False
    external_path: Path | None = None
    external_modules: tuple[str, ...] = ()
    namespace: str | None = None
    platform: str | None = None
    os: str | None = None
    target: str | None = None
    dependencies: tuple[SpackDependency, ...] = ()
    installed: bool = True
    explicit: bool = False
    ref_count: int = 0
    deprecated_for: str | None = None
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: FrozenParameters(), compare=False, hash=False, repr=False
    )

    @property
    def short_hash(self) -> str:
        """The 7-character hash Spack puts in default module names."""
        return self.dag_hash[:7]

    @property
    def short_spec(self) -> str:
        """``name@version/hash7``: unambiguous on the command line of ``spack`` itself."""
        return f"{self.name}@{self.version}/{self.short_hash}"

    def edges(
        self, name_or_virtual: str | None = None, *, deptype: str | None = None
    ) -> list[SpackDependency]:
        """Direct dependency edges, optionally only those matching a name/virtual or deptype."""
        return [
            e
            for e in self.dependencies
            if (name_or_virtual is None or e.name == name_or_virtual or name_or_virtual in e.virtuals)
            and (deptype is None or deptype in e.deptypes)
        ]

    def __str__(self) -> str:
        return self.short_spec


def _freeze(value: Any) -> Any:
    # multi-valued variants and flags come as JSON lists; tuples keep the spec immutable
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return FrozenParameters({k: _freeze(v) for k, v in value.items()})
    return value


def _spec_from_record(dag_hash: str, record: Mapping[str, Any], where: Path) -> SpackSpec:
    try:
        node = record["spec"]
        name = node["name"]
        version = str(node["version"])
    except (KeyError, TypeError) as exc:
        raise CorruptSpackData(
            f"{where}: the record of {dag_hash} has no spec name or version ({exc!r})"
        ) from None

    arch = node.get("arch") or {}
    target = arch.get("target")
    if isinstance(target, dict):
        # a microarchitecture is recorded as a dict holding its name
        target = target.get("name")

    external = node.get("external") or None
    external_path: Path | None = None
    external_modules: tuple[str, ...] = ()
    if external:
        if external.get("path"):
            external_path = Path(external["path"])
        modules = external.get("module") or ()
        external_modules = (modules,) if isinstance(modules, str) else tuple(modules)

    deps = []
    for dep in node.get("dependencies") or ():
        try:
            params = dep.get("parameters") or {}
            deps.append(
                SpackDependency(
                    name=dep["name"],
                    dag_hash=dep["hash"],
                    deptypes=tuple(params.get("deptypes") or ()),
                    virtuals=tuple(params.get("virtuals") or ()),
                )
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise CorruptSpackData(
                f"{where}: a dependency of {name}/{dag_hash[:7]} is malformed ({exc!r})"
            ) from None

    # the record's path is where Spack put (or found) the files; for externals it equals
    # the external path
    prefix = record.get("path") or (str(external_path) if external_path else "")
    return SpackSpec(
        name=name,
        version=version,
        dag_hash=dag_hash,
        prefix=Path(prefix),
        external=external is not None,
        external_path=external_path,
        external_modules=external_modules,
        namespace=node.get("namespace"),
        platform=arch.get("platform"),
        os=arch.get("platform_os"),
        target=target,
        dependencies=tuple(deps),
        installed=bool(record.get("installed", True)),
        explicit=bool(record.get("explicit", False)),
        ref_count=int(record.get("ref_count") or 0),
        deprecated_for=record.get("deprecated_for"),
        parameters=_freeze(node.get("parameters") or {}),
    )


# --------------------------------------------------------------------------- install tree


def _db_dir(install_root: PathLike) -> Path:
    root = Path(install_root)
    return root if root.name == DB_DIRNAME else root / DB_DIRNAME


def _existing_db_dir(install_root: PathLike) -> Path:
    # a missing .spack-db is a wrong path, not an empty tree (that is a .spack-db never written)
    db = _db_dir(install_root)
    if not db.is_dir():
        raise NotASpackTree(
            f"{Path(install_root)} is not a Spack install tree: no {DB_DIRNAME} directory",
            hint="give the install_tree root from Spack's config.yaml",
        )
    return db


class SpackTree:
    """The specs recorded in one Spack install tree's database.

    A snapshot: it does not follow later writes by Spack.
    """

    def __init__(self, root: Path, db_version: str, specs: Mapping[str, SpackSpec]) -> None:
        self.root = root
        self.db_version = db_version
        self._by_hash: dict[str, SpackSpec] = dict(specs)
        # virtual -> hashes of specs that some dependent uses as that virtual
        self._virtuals: dict[str, set] = {}
        for spec in self._by_hash.values():
            for edge in spec.dependencies:
                for virtual in edge.virtuals:
                    self._virtuals.setdefault(virtual, set()).add(edge.dag_hash)

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, install_root: PathLike) -> SpackTree:
        """Load the database of the install tree at ``install_root`` (or its ``.spack-db``).

        A tree whose ``.spack-db`` exists but whose database was never written is empty.
        """
        db = _existing_db_dir(install_root)
        root = db.parent
        index = db / INDEX_FILENAME
        try:
            text = index.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls(root, "", {})
        except OSError as exc:
            raise SpackTreeError(f"cannot read {index}: {exc.strerror or exc}") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise CorruptSpackData(f"{index} is not valid JSON: {exc}") from None

        database = data.get("database") if isinstance(data, dict) else None
        if not isinstance(database, dict):
            raise CorruptSpackData(f"{index} has no 'database' object")
        version = str(database.get("version", ""))
        if version not in SUPPORTED_DB_VERSIONS:
            raise UnsupportedDatabaseVersion(
                f"{index} is a Spack database of format version {version or '(none)'}; "
                f"this reader supports {', '.join(sorted(SUPPORTED_DB_VERSIONS))}",
                hint="Spack 1.0 and later write version 8",
            )
        installs = database.get("installs")
        if not isinstance(installs, dict):
            raise CorruptSpackData(f"{index} has no 'installs' mapping")
        specs = {}
        for dag_hash, record in installs.items():
            if not isinstance(record, dict):
                raise CorruptSpackData(f"{index}: the record of {dag_hash} is not an object")
            specs[dag_hash] = _spec_from_record(dag_hash, record, index)
        return cls(root, version, specs)

    # ------------------------------------------------------------------ queries

    def __len__(self) -> int:
        return len(self._by_hash)

    def __iter__(self) -> Iterator[SpackSpec]:
        return iter(self.specs())

    def __contains__(self, dag_hash: object) -> bool:
        return dag_hash in self._by_hash

    def specs(
        self,
        name: str | None = None,
        *,
        include_missing: bool = False,
        include_deprecated: bool = False,
    ) -> list[SpackSpec]:
        """Specs, by name then version, like ``spack find``.

        Like ``spack find``, leaves out records whose files are gone (kept by Spack while
        other specs still depend on them) and deprecated specs, unless asked for.
        """
        out = [
            s
            for s in self._by_hash.values()
            if (name is None or s.name == name)
            and (include_missing or s.installed)
            and (include_deprecated or not s.deprecated_for)
        ]
        return sorted(out, key=_sort_key)

    def get(self, dag_hash: str) -> SpackSpec:
        """The spec of a full DAG hash, or of a unique prefix of one (``bsz4j7z``)."""
        spec = self._by_hash.get(dag_hash)
        if spec is not None:
            return spec
        matches = [s for h, s in self._by_hash.items() if h.startswith(dag_hash)] if dag_hash else []
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise KeyError(f"no spec with hash {dag_hash!r} in {self.root}")
        raise KeyError(f"hash prefix {dag_hash!r} matches {len(matches)} specs in {self.root}")

    def provides(self, spec: SpackSpec, virtual: str) -> bool:
        return spec.dag_hash in self._virtuals.get(virtual, ()) or _known_provider(spec, virtual)

    def find(self, name_or_virtual: str, *, include_missing: bool = False,
             include_deprecated: bool = False) -> list[SpackSpec]:
        """Specs named ``name_or_virtual``, or providing it as a virtual (``find("mpi")``).

        ``include_missing`` and ``include_deprecated`` as in :meth:`specs`.
        """
        return [
            s
            for s in self.specs(include_missing=include_missing, include_deprecated=include_deprecated)
            if s.name == name_or_virtual or self.provides(s, name_or_virtual)
        ]

    def dependency(self, spec: SpackSpec, name_or_virtual: str) -> SpackSpec | None:
        """The spec ``spec`` depends on as ``name_or_virtual`` (``"mpi"``, ``"python"``).

        Searches the whole DAG, nearest first, like Spack's ``spec["mpi"]``: an edge
        matches on the dependency's name or on a virtual recorded on it, then (for DAGs
        recorded without virtuals) on :data:`KNOWN_PROVIDERS`. ``spec`` itself matches
        its own name. None when nothing matches, or when the match is in another database
        (an upstream) that this tree does not hold.
        """
        if spec.name == name_or_virtual:
            return spec
        fallback: SpackSpec | None = None
        seen = {spec.dag_hash}
        queue = deque([spec])
        while queue:
            node = queue.popleft()
            for edge in node.dependencies:
                child = self._by_hash.get(edge.dag_hash)
                if edge.name == name_or_virtual or name_or_virtual in edge.virtuals:
                    return child
                if fallback is None and child is not None and _known_provider(child, name_or_virtual):
                    fallback = child
                if child is not None and child.dag_hash not in seen:
                    seen.add(child.dag_hash)
                    queue.append(child)
        return fallback

    def dependencies(self, spec: SpackSpec, *, deptype: str | None = None) -> list[SpackSpec]:
        """Direct dependencies held in this tree (optionally of one deptype: ``"link"``)."""
        return [
            self._by_hash[e.dag_hash]
            for e in spec.edges(deptype=deptype)
            if e.dag_hash in self._by_hash
        ]

    def traverse(self, spec: SpackSpec) -> list[SpackSpec]:
        """``spec`` and everything it depends on in this tree, breadth first, each once."""
        out = [spec]
        seen = {spec.dag_hash}
        i = 0
        while i < len(out):
            for edge in out[i].dependencies:
                child = self._by_hash.get(edge.dag_hash)
                if child is not None and child.dag_hash not in seen:
                    seen.add(child.dag_hash)
                    out.append(child)
            i += 1
        return out

    def __repr__(self) -> str:
        return f"SpackTree({str(self.root)!r}, {len(self)} specs)"


def _known_provider(spec: SpackSpec, virtual: str) -> bool:
    for entry in KNOWN_PROVIDERS.get(virtual, ()):
        name, _, variant = entry.partition("+")
        if spec.name == name and (not variant or spec.parameters.get(variant) is True):
            return True
    return False


def _version_key(version: str) -> tuple[tuple[int, Any], ...]:
    # numeric parts compare as numbers so that 1.10 sorts after 1.9; names like 'develop' sort first
    parts = version.replace("-", ".").replace("_", ".").split(".")
    return tuple((1, int(p)) if p.isdigit() else (0, p) for p in parts)


def _sort_key(spec: SpackSpec) -> tuple[Any, ...]:
    return (spec.name, _version_key(spec.version), spec.dag_hash)


# --------------------------------------------------------------------------- module index


@dataclass(frozen=True)
class ModuleEntry:
    """Where Spack wrote the modulefile of one spec, and the name that loads it."""

    dag_hash: str
    use_name: str
    path: Path


class ModuleIndex:
    """The ``module-index.yaml`` of one module root (one module type of one module set)."""

    def __init__(self, root: Path, entries: Mapping[str, ModuleEntry]) -> None:
        self.root = root
        self._entries: dict[str, ModuleEntry] = dict(entries)

    @classmethod
    def open(cls, module_root: PathLike) -> ModuleIndex:
        """Load ``<module_root>/module-index.yaml`` (or that file, given directly)."""
        path = Path(module_root)
        if path.name != MODULE_INDEX_FILENAME:
            path = path / MODULE_INDEX_FILENAME
        root = path.parent
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NotASpackTree(
                f"{root} has no {MODULE_INDEX_FILENAME}",
                hint="it is written by 'spack module lmod refresh' (or tcl); "
                "give the module root from Spack's modules.yaml",
            ) from None
        except OSError as exc:
            raise SpackTreeError(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            data = yaml.load(text, Loader=_YamlLoader)
        except yaml.YAMLError as exc:
            raise CorruptSpackData(f"{path} is not valid YAML: {exc}") from None
        if data is None:
            data = {}
        index = data.get("module_index", {}) if isinstance(data, dict) else None
        if index is None:
            index = {}
        if not isinstance(index, dict):
            raise CorruptSpackData(f"{path} has no 'module_index' mapping")
        entries = {}
        for dag_hash, entry in index.items():
            try:
                entries[str(dag_hash)] = ModuleEntry(
                    dag_hash=str(dag_hash), use_name=str(entry["use_name"]), path=Path(entry["path"])
                )
            except (KeyError, TypeError) as exc:
                raise CorruptSpackData(f"{path}: the entry of {dag_hash} is malformed ({exc!r})") from None
        return cls(root, entries)

    @property
    def kind(self) -> str | None:
        """``"lmod"`` when the modulefiles are Lua, ``"tcl"`` otherwise, None when empty."""
        if not self._entries:
            return None
        return "lmod" if all(e.path.suffix == ".lua" for e in self._entries.values()) else "tcl"

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, spec_or_hash: object) -> bool:
        key = spec_or_hash.dag_hash if isinstance(spec_or_hash, SpackSpec) else spec_or_hash
        return key in self._entries

    def entries(self) -> list[ModuleEntry]:
        return sorted(self._entries.values(), key=lambda e: e.use_name)

    def module_for(self, spec_or_hash: SpackSpec | str) -> ModuleEntry | None:
        """The module of a spec (or DAG hash); None when Spack wrote none for it."""
        key = spec_or_hash.dag_hash if isinstance(spec_or_hash, SpackSpec) else spec_or_hash
        return self._entries.get(key)

    def __repr__(self) -> str:
        return f"ModuleIndex({str(self.root)!r}, {len(self)} modules)"


# the C loader is many times faster on large indexes; not every PyYAML build has it
_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
