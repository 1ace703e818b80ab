"""``envmod export``: an env as a file another user, host or site can recreate it from.

Two formats, both from the record alone:

* ``yaml`` (default): what the env is: its Python, the central modules it loads, each package
  pinned with how it was installed (compiled against which modules), plus the Spack DAG hashes
  when the modules are Spack's. ``envmod create NAME --from FILE`` reads it back (``spack
  envmod create NAME --from FILE`` too, choosing the specs by their hashes).
* ``requirements``: a pip requirements file of every package pinned, its header naming the
  modules to load first, for ``envmod create NAME -r FILE`` or plain pip.
* ``conda-yaml`` (conda and rattler envs only): conda's environment.yml, every conda package
  pinned ``name=version=build`` (all of them, as ``conda env export`` does: an exact copy, not a
  new solve), the pip packages pinned in its ``pip:`` section, and a header naming the central
  modules. Its first line is a marker holding, as JSON, what the YAML cannot (the modules, the
  backend, the description), so ``envmod create --from`` recognises it and checks the modules;
  conda reads it as a plain environment file.

Each header names the command of the front end that made the env (:mod:`bridge.frontends`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import RecordError, UsageError
from ..frontends import command_for, user_command
from ..store.record import EnvRecord

if TYPE_CHECKING:
    from ..build.environment_file import EnvironmentFile

EXPORT_SCHEMA = 1
FORMATS = ("yaml", "requirements", "conda-yaml")
CONDA_EXPORT_SCHEMA = 1
#: the first line of a conda-yaml export: this, then JSON
CONDA_EXPORT_MARKER = "# envmod-conda-export: "
#: Facts of a central module worth carrying to another host: what identifies the build.
_PORTABLE_FACTS = ("spack_hash", "spack_spec", "spack_external")


def pinned_requirements(record: EnvRecord) -> list[str]:
    """Every package ``name==version``, the requested ones first (pip's order is irrelevant,
    a reader's is not)."""
    ordered = sorted(record.packages, key=lambda p: (not p.requested, p.name.lower()))
    return [f"{p.name}=={p.version}" for p in ordered]


def export_data(record: EnvRecord) -> dict[str, Any]:
    """The ``yaml`` export of ``record``."""
    from ..discover.mapping import describe_recorded, load_family_table

    families = load_family_table()

    def central(name: str) -> dict[str, Any]:
        module = record.central_module(name)
        out: dict[str, Any] = {"name": name}
        if module is not None:
            # What the module is, apart from its name, for another site to find its own (the name stays as a hint).
            out.update(describe_recorded(record, module, families).to_export())
            out.update({k: module.facts[k] for k in _PORTABLE_FACTS if k in module.facts})
        return out

    return {
        "envmod_export": EXPORT_SCHEMA,
        "name": record.name,
        "description": record.description,
        "backend": record.backend,
        "python": {"version": record.python.version, "module": record.python.module},
        "modules": [central(name) for name in record.module.depends_on],
        "packages": [{"name": p.name, "version": p.version, "requested": p.requested, "install": p.install,
                      **({"built_against": list(p.built_against)} if p.built_against else {})}
                     for p in record.packages],
        "requirements": pinned_requirements(record),
        "exported_from": {"host": record.created.host, "envmod_version": record.created.envmod_version,
                          "microarchitecture": record.created.microarchitecture},
    }


def render_export(record: EnvRecord, fmt: str = "yaml", templates: Path | None = None,
                  cache_dir: Path | None = None) -> str:
    """The text of ``record``'s export in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "yaml":
        import yaml

        return (f"# envmod export of {record.name}: {command_for(record)} create NEWNAME --from THIS_FILE "
                "(with the modules below loaded)\n" + yaml.safe_dump(export_data(record), sort_keys=False))
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
    if fmt == "conda-yaml":
        return _render(record, "export/environment.yml.j2", conda_export_context(record), templates, cache_dir)
    compiled = [f"{p.name} {p.version} against {', '.join(p.built_against) or 'the site'}"
                for p in record.packages if p.install == "source"]
    context = {"name": record.name, "modules": record.module.depends_on or ["(no central modules)"],
               "python": f"{record.python.version} from {record.python.module or record.python.executable}",
               "compiled": compiled, "requirements": pinned_requirements(record), "command": command_for(record)}
    return _render(record, "export/requirements.txt.j2", context, templates, cache_dir)


def _render(record: EnvRecord, template: str, context: Mapping[str, Any], templates: Path | None,
            cache_dir: Path | None) -> str:
    from .templating import TemplateFailure, render_template

    try:
        return render_template(template, context, templates, cache_dir)
    except ValueError as exc:
        raise RecordError(f"cannot export {record.name}: {exc}") from exc
    except TemplateFailure as exc:
        raise exc.config_error(f"the export of {record.name!r}", templates) from None


def _installed_by_pip(package: Mapping[str, Any]) -> bool:
    """``conda list --json`` lists pip's packages too, from the channel ``pypi``."""
    return package.get("channel") == "pypi" or str(package.get("build", "")).startswith("pypi_")


def conda_export_context(record: EnvRecord) -> dict[str, Any]:
    """What the ``conda-yaml`` template prints of ``record``, a conda or rattler env."""
    import json

    from packaging.utils import canonicalize_name

    from ..build.backends.conda_engine import CondaPackage

    if record.conda is None:
        raise UsageError(f"{record.name} is a {record.backend} env, not a conda one: conda-yaml exports conda and "
                         "rattler envs", hint="use --format yaml or --format requirements")
    conda = [CondaPackage.from_dict(p) for p in record.conda.packages if not _installed_by_pip(p)]
    from_conda = {canonicalize_name(p.name) for p in conda}
    pip = [line for line in pinned_requirements(record)
           if canonicalize_name(line.partition("==")[0]) not in from_conda]
    marker = {"schema": CONDA_EXPORT_SCHEMA, "name": record.name, "backend": record.backend,
              "modules": list(record.module.depends_on), "description": record.description,
              "specs": list(record.conda.specs)}
    return {"marker": json.dumps(marker, ensure_ascii=True), "name": record.name, "backend": record.backend,
            "modules": record.module.depends_on or ["(no central modules)"], "command": command_for(record),
            "asked": list(record.conda.specs) + [p.name for p in record.packages if p.requested] or ["nothing"],
            "channels": list(record.conda.channels), "conda": [p.pin for p in conda], "pip": pip}


class ExportedEnv:
    """An export read back: what ``create --from`` needs."""

    def __init__(self, path: Path, data: Mapping[str, Any]) -> None:
        from ..discover.mapping import describe_need

        self.path = path
        self.description = str(data.get("description") or "")
        self.modules = [str(m["name"]) for m in data.get("modules") or []]
        self.requirements = [str(r) for r in data.get("requirements") or []]
        self.python_version = str((data.get("python") or {}).get("version") or "")
        #: the backend that made the env: a create from this export makes it the same way
        #: unless told otherwise (an export without one is read as before: the default)
        self.backend: str | None = None
        if data.get("backend") is not None:
            from ..build.backends import check_backend_name

            self.backend = check_backend_name(data["backend"], f"{path}: backend")
        #: each central module as a need: kind, family, version (MPI ABI, parallel HDF5), its name a hint
        self.needs = [describe_need(m, self.python_version or None) for m in data.get("modules") or []]
        #: kind (python, mpi, hdf5) -> the Spack DAG hash of the module of that kind, where known
        self.spack_hashes = {str(m["kind"]): str(m["spack_hash"]) for m in data.get("modules") or []
                             if m.get("kind") and m.get("spack_hash")}
        #: a conda-yaml export: its conda specs and channels
        self.conda_specs: list[str] = []
        self.conda_channels: list[str] = []

    @classmethod
    def of_conda(cls, path: Path, marker: Mapping[str, Any], environment: "EnvironmentFile") -> "ExportedEnv":
        """A ``conda-yaml`` export: its marker's modules, backend and description, and the
        environment file it is (read and checked as ``-f`` reads one)."""
        exported = cls(path, {"description": marker.get("description"),
                              "modules": [{"name": m} for m in marker.get("modules") or []],
                              "requirements": environment.pip_requirements})
        exported.backend = str(marker.get("backend") or "conda")
        exported.conda_specs = list(environment.conda_specs)
        exported.conda_channels = list(environment.channels)
        return exported


def _shape_problem(data: Mapping[str, Any]) -> str | None:
    """What is wrong with the shape of an export (a hand edit), or None."""
    from ..discover.mapping import known_kinds

    typed: dict[str, Any] = {"name": str, "description": (str, type(None)), "python": dict, "modules": list,
                             "requirements": list}
    for key, types in typed.items():
        if key in ("name", "python", "modules", "requirements") and key not in data:
            return f"missing key {key!r}"
        if key in data and not isinstance(data[key], types):
            return f"{key!r} must be a {'mapping' if types is dict else getattr(types, '__name__', 'string')}"
    if not all(isinstance(r, str) for r in data["requirements"]):
        return "'requirements' must be a list of strings"
    kinds = known_kinds()
    return next((p for i, m in enumerate(data["modules"]) if (p := _module_problem(i, m, kinds))), None)


def _module_problem(i: int, module: Any, kinds: list[str]) -> str | None:
    if not isinstance(module, dict) or not isinstance(module.get("name"), str) or not module["name"]:
        return f"modules[{i}] must be a mapping with a 'name'"
    if "kind" in module and module["kind"] not in kinds:
        return f"modules[{i}] ({module['name']}) has unknown kind {module['kind']!r} (known: {', '.join(kinds)})"
    for key in ("family", "version", "abi"):
        if module.get(key) is not None and not isinstance(module[key], (str, int, float)):
            return f"modules[{i}] ({module['name']}): {key!r} must be a string"
    if module.get("parallel") is not None and not isinstance(module["parallel"], bool):
        return f"modules[{i}] ({module['name']}): 'parallel' must be true or false"
    return None


def read_export(path: Path) -> ExportedEnv:
    """An ``envmod export`` YAML file, checked enough that a bad one fails with its path named."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read export file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"export file {path} is not UTF-8 text (byte {exc.start})") from None
    if text.startswith(CONDA_EXPORT_MARKER):
        return read_conda_export(Path(path), text)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"export file {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if isinstance(data, dict) and "envmod_export" not in data and "dependencies" in data:
        raise UsageError(f"{path} is a conda environment file, not an envmod export",
                         hint=f"create from it with '{user_command()} create NAME -f {path}'")
    if not isinstance(data, dict) or "envmod_export" not in data:
        raise UsageError(f"{path} is not an envmod export (no 'envmod_export' key)",
                         hint=f"make one with '{user_command()} export NAME -o FILE'")
    schema = data["envmod_export"]
    if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
        raise UsageError(f"{path}: export schema {schema!r} is not a schema number")
    if schema > EXPORT_SCHEMA:
        raise UsageError(f"{path}: export schema {schema} is newer than this envmod reads (up to {EXPORT_SCHEMA})",
                         hint="upgrade envmod")
    problem = _shape_problem(data)
    if problem:
        raise UsageError(f"{path}: malformed envmod export: {problem}")
    return ExportedEnv(Path(path), data)


def read_conda_export(path: Path, text: str) -> ExportedEnv:
    """A ``conda-yaml`` export: the marker on its first line, the rest an environment file."""
    import json

    from ..build.environment_file import read_environment_file

    try:
        marker = json.loads(text.splitlines()[0][len(CONDA_EXPORT_MARKER):])
    except ValueError as exc:
        raise UsageError(f"{path}: its first line is not a readable envmod conda-yaml marker ({exc})") from None
    if not isinstance(marker, dict) or marker.get("schema") != CONDA_EXPORT_SCHEMA:
        raise UsageError(f"{path}: conda-yaml export schema {marker.get('schema') if isinstance(marker, dict) else marker!r}"
                         f" is not supported (this envmod reads {CONDA_EXPORT_SCHEMA})")
    if not all(isinstance(m, str) for m in marker.get("modules") or []):
        raise UsageError(f"{path}: the marker's modules are not a list of module names")
    return ExportedEnv.of_conda(path, marker, read_environment_file(path))
