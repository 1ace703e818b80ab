"""The environment record: one versioned YAML file inside each env, the single source of truth.

Every front end (the ``envmod`` CLI, ``spack envmod``, the EasyBuild easyblock) writes and reads
environments only through this module, so they all agree on what an environment is.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from ..errors import RecordError

SCHEMA_VERSION = 1
RECORD_FILE = "envmod.yaml"

# Every dataclass here has a docstring: without one, @dataclass makes its __doc__ from
# inspect.signature(), a cost each command (a create included) pays at import.


@dataclass
class PythonRecord:
    """The central Python the env runs on."""

    version: str
    executable: str
    module: str | None = None
    implementation: str = "CPython"
    soabi: str = ""
    platform: str = ""

    @classmethod
    def of(cls, python: Any, version: str, module: str | None) -> "PythonRecord":
        """The record of the central Python (a ``pyinfo.PythonInfo``) an env of ``version`` runs
        on, loaded by ``module``."""
        return cls(version=version, executable=python.executable, module=module,
                   implementation=python.implementation, soabi=python.soabi, platform=python.platform)


@dataclass
class CentralModuleRecord:
    """A central module that was loaded when the env was built, as discovery saw it."""

    name: str
    kind: str
    modulefile: str | None = None
    version: str | None = None
    prefix: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, module: Any) -> "CentralModuleRecord":
        """The record of a discovered central module (a ``stack.CentralModule``)."""
        return cls(name=module.name, kind=module.kind, modulefile=module.modulefile, version=module.version,
                   prefix=module.prefix, facts=dict(module.facts))


@dataclass
class PackageRecord:
    """A package installed into the env, and how it was built."""

    name: str
    version: str
    install: str                      # "source" (compiled here) or "wheel"
    requested: bool = False
    built_against: list[str] = field(default_factory=list)
    build_env: dict[str, str] = field(default_factory=dict)
    cached_wheel: str | None = None   # compiled earlier against the same libraries, reused


@dataclass
class LinkEvidence:
    """One fact from the ELF scan: an env file needs a library, found here, provided by whom."""

    file: str                          # the env file, relative to the env prefix
    needs: str                         # its DT_NEEDED entry (or the needing library's, with `via`)
    path: str | None                   # where the loader finds it with the env's modules loaded
    provider: str                      # a central module's name, "system", "env", or "missing"
    soname: str | None = None
    via: str | None = None             # for an indirect need: the library that needs it
    sha256: str | None = None


@dataclass
class RequirementEvidence:
    """An installed package requires a Python package that a central module provides."""

    package: str
    requires: str
    provider: str                      # a central module's name
    location: str                      # where the required package was found


@dataclass
class ModuleRecord:
    """The env's own module: its name, what it loads, the files written for it."""

    name: str                          # e.g. "myenv/py3.11"
    type: str                          # "lmod" or "tcl": the last one written
    depends_on: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)   # module type -> path written
    keep_loaded: bool = False          # created with --keep-loaded: depends on every module loaded then


@dataclass
class Provenance:
    """When, where, by whom and with what an env was created (or rebuilt)."""

    at: str
    by: str
    host: str
    envmod_version: str
    microarchitecture: str | None = None
    module_system: str | None = None
    log: str | None = None
    front_end: str | None = None       # "envmod", "spack" or "easybuild" (bridge.frontends); None: envmod

    @classmethod
    def now(cls, *, microarchitecture: str | None, module_system: str | None, log: str | None,
            front_end: str | None = None) -> "Provenance":
        """What a create or rebuild happening now records: the time (UTC), the user, the host and
        this envmod's version, with what the caller knows of the rest."""
        import os
        import time

        from .. import __version__

        return cls(at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), by=_user(), host=os.uname().nodename,
                   envmod_version=__version__, microarchitecture=microarchitecture, module_system=module_system,
                   log=log, front_end=front_end)


def _user() -> str:
    import os
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return os.environ.get("USER") or str(os.getuid())


def central_module_records(modules: Any, keep: Any = ()) -> list[CentralModuleRecord]:
    """The records of ``modules`` (``stack.CentralModule`` s), then those of ``keep`` (records
    already held, e.g. by a rebuilt env) that name a module not among them."""
    out = [CentralModuleRecord.of(m) for m in modules]
    names = {m.name for m in out}
    return out + [m for m in keep if m.name not in names]


@dataclass
class CondaRecord:
    """The conda side of a conda or rattler env: exactly what was asked, from where, and what came."""

    engine: dict[str, Any] = field(default_factory=dict)    # CondaEngine.describe(): tool, version, executable, solver, module
    channels: list[str] = field(default_factory=list)       # in priority order, labels included
    specs: list[str] = field(default_factory=list)          # the explicit conda specs (the user's, plus envmod's MPI pin)
    packages: list[dict[str, str]] = field(default_factory=list)   # CondaPackage.as_dict() of each installed package
    mpi_pin: str | None = None          # the external-MPI placeholder spec envmod added for the central MPI
    conda_mpi_allowed: bool = False     # created with --allow-conda-mpi: a conda MPI was accepted knowingly
    activate_env: dict[str, str] = field(default_factory=dict)     # what the env's activate.d scripts set, carried into the module


@dataclass
class SharedRecord:
    """A group-shared env (``create --shared``): its group, and the one user who may change it."""

    group: str
    maintainer: str


@dataclass
class EnvRecord:
    """Everything envmod knows about one environment: the content of its record file."""

    name: str
    backend: str
    prefix: str
    python: PythonRecord
    module: ModuleRecord
    created: Provenance
    description: str = ""
    central_modules: list[CentralModuleRecord] = field(default_factory=list)
    packages: list[PackageRecord] = field(default_factory=list)
    requested: list[str] = field(default_factory=list)
    links: list[LinkEvidence] = field(default_factory=list)
    requirements: list[RequirementEvidence] = field(default_factory=list)
    rebuilt: list[Provenance] = field(default_factory=list)
    conda: CondaRecord | None = None    # conda and rattler envs only
    shared: SharedRecord | None = None  # group-shared envs only (store/shared.py)
    kernels: list[dict[str, str]] = field(default_factory=list)   # Jupyter kernelspecs installed: name, dir, display_name
    # made by 'create --from': {export: its path, substitutions: [{kind, exported, used, how}]}
    created_from: dict[str, Any] | None = None
    schema: int = SCHEMA_VERSION

    @property
    def path(self) -> Path:
        return Path(self.prefix) / RECORD_FILE

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("schema")
        # The schema version leads the file so a reader can refuse a newer one before parsing on.
        return {"envmod_record": self.schema, **data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "record") -> "EnvRecord":
        if not isinstance(data, Mapping) or "envmod_record" not in data:
            raise RecordError(f"{source} is not an envmod environment record")
        schema = data["envmod_record"]
        if not isinstance(schema, int) or schema > SCHEMA_VERSION:
            raise RecordError(f"{source} has record schema {schema!r}; this envmod reads up to {SCHEMA_VERSION}",
                              hint="upgrade envmod")
        try:
            return cls(
                name=data["name"], backend=data["backend"], prefix=data["prefix"],
                description=data.get("description") or "",
                python=_build(PythonRecord, data["python"]),
                module=_build(ModuleRecord, data["module"]),
                created=_build(Provenance, data["created"]),
                central_modules=[_build(CentralModuleRecord, m) for m in data.get("central_modules") or []],
                packages=[_build(PackageRecord, p) for p in data.get("packages") or []],
                requested=list(data.get("requested") or []),
                links=[_build(LinkEvidence, e) for e in data.get("links") or []],
                requirements=[_build(RequirementEvidence, e) for e in data.get("requirements") or []],
                rebuilt=[_build(Provenance, e) for e in data.get("rebuilt") or []],
                conda=_build(CondaRecord, data["conda"]) if data.get("conda") else None,
                shared=_build(SharedRecord, data["shared"]) if data.get("shared") else None,
                kernels=[dict(k) for k in data.get("kernels") or []],
                created_from=dict(data["created_from"]) if data.get("created_from") else None,
                schema=schema,
            )
        except (KeyError, TypeError) as exc:
            raise RecordError(f"{source} is incomplete or malformed: {exc}") from exc

    def central_module(self, name: str) -> CentralModuleRecord | None:
        return next((m for m in self.central_modules if m.name == name), None)


def _build(cls, data: Any):
    if not isinstance(data, Mapping):
        raise TypeError(f"{cls.__name__} must be a mapping")
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known})


def _yaml():
    import yaml

    return yaml, getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def dump_record(record: EnvRecord) -> str:
    import yaml

    header = f"# envmod environment record (schema {record.schema}); envmod reads and rewrites it.\n"
    data = record.to_dict()

    def dump(dumper: type) -> str:
        return yaml.dump(data, Dumper=dumper, sort_keys=False, allow_unicode=True, default_flow_style=False,
                         width=100)

    try:
        text = dump(getattr(yaml, "CSafeDumper", None) or _python_dumper())
    except UnicodeEncodeError:   # libyaml takes valid UTF-8 only; Python's emitter escapes a lone
        text = dump(_python_dumper())   # surrogate (os.fsdecode'd file name)
    return header + text


@functools.cache
def _python_dumper() -> type:
    """PyYAML's Python ``SafeDumper``, made to double-quote text holding NEL, LS or PS: it
    would write them raw inside single quotes, where a reader folds them into spaces."""
    import yaml

    class RecordDumper(yaml.SafeDumper):
        pass

    def represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
        style = '"' if any(c in text for c in "\x85\u2028\u2029") else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)

    RecordDumper.add_representer(str, represent_str)
    return RecordDumper


def write_record(record: EnvRecord, directory: Path | None = None) -> Path:
    """Write atomically into ``directory`` (default: the env's prefix). A record rewritten in place
    (a module or kernel added) keeps the modes of the one it replaces: the temp file's own 0600
    would shut out a group-shared env's members, who read it to make their modules."""
    import stat

    from ..fsutil import atomic_write_text

    path = Path(directory or record.prefix) / RECORD_FILE
    try:
        mode: int | None = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        mode = None
    return atomic_write_text(path, dump_record(record), mode)


def read_record(path: Path) -> EnvRecord:
    yaml, loader = _yaml()
    try:
        text = Path(path).read_text(encoding="utf-8")
        try:
            data = yaml.load(text, Loader=loader)
        except yaml.YAMLError:
            if loader is yaml.SafeLoader:
                raise
            # libyaml refuses the escaped lone surrogate that the writer uses for a file name
            # that is not UTF-8; PyYAML's own reader takes it, and fails the same on real damage.
            data = yaml.load(text, Loader=yaml.SafeLoader)
    except FileNotFoundError as exc:
        raise RecordError(f"no environment record at {path}") from exc
    except OSError as exc:
        raise RecordError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise RecordError(f"{path} is not valid UTF-8 text (byte {exc.start}: {exc.reason})") from exc
    except yaml.YAMLError as exc:
        raise RecordError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    return EnvRecord.from_dict(data, str(path))
