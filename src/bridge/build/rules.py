"""The build-rule table: which packages compile against which central modules, and how.

The table is data (``data/build_rules.yaml`` plus the site's own file); this module only
reads it and fills in a rule from the central stack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from packaging.utils import canonicalize_name

from ..discover.stack import CentralModule, CentralStack
from ..errors import ConfigError, MissingCentralKind, PlanError, UsageError

_FIELD = re.compile(r"\{(\w+)\.(\w+)\}")
# A distribution name as PEP 508 spells it: what a list of packages to compile may hold.
_PACKAGE_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")


def canonical_name(name: str) -> str:
    """PEP 503 normalisation (packaging's), so 'H5Py' and 'h5py' name one package."""
    return str(canonicalize_name(name))


@dataclass(frozen=True)
class BuildRule:
    package: str
    against: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    when: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class SourceBuild:
    """A rule filled in from the loaded modules: what to build with, against which modules."""

    package: str
    modules: tuple[CentralModule, ...]
    env: Mapping[str, str]
    # Packages compiled here that the build must use instead of what pip's isolated build
    # environment would fetch (h5py with MPI pins an old mpi4py for its build).
    build_with: tuple[str, ...] = ()

    @property
    def module_names(self) -> list[str]:
        return [m.name for m in self.modules]


def _rules_from(data: Any, source: str) -> dict[str, BuildRule]:
    if not isinstance(data, Mapping):
        raise ConfigError(f"build rules {source} must be a mapping of package names")
    rules = {}
    for package, body in data.items():
        if not isinstance(body, Mapping) or not isinstance(body.get("against", []), list):
            raise ConfigError(f"build rules {source}: entry {package!r} needs 'against: [kinds]'")
        when = tuple(body.get("when") or ())
        if not isinstance(body.get("env") or {}, Mapping):
            raise ConfigError(f"build rules {source}: 'env' of {package!r} must be a mapping of VAR: value")
        for variant in when:
            if not isinstance(variant, Mapping) or "if" not in variant:
                raise ConfigError(f"build rules {source}: a 'when' variant of {package!r} needs 'if: kind.fact'")
            if not isinstance(variant.get("env") or {}, Mapping):
                raise ConfigError(f"build rules {source}: 'env' in a 'when' variant of {package!r} must be a mapping")
        rules[canonical_name(str(package))] = BuildRule(
            canonical_name(str(package)), tuple(body.get("against", [])),
            {str(k): str(v) for k, v in (body.get("env") or {}).items()}, when)
    return rules


def load_rules(extra_files: Iterable[Path] = ()) -> dict[str, BuildRule]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    builtin = Path(__file__).parent.parent / "data" / "build_rules.yaml"
    with open(builtin, encoding="utf-8") as fh:
        rules = _rules_from(yaml.load(fh, Loader=loader), str(builtin))
    for path in extra_files:
        try:
            with open(path, encoding="utf-8") as fh:
                rules.update(_rules_from(yaml.load(fh, Loader=loader) or {}, str(path)))
        except OSError as exc:
            raise ConfigError(f"cannot read build rules {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"build rules {path} are not valid YAML") from exc
    return rules


def select_rules(rules: Mapping[str, BuildRule], names: Sequence[str] | None) -> dict[str, BuildRule]:
    """The packages to compile from source: the whole table (``names`` None), or only the named
    ones, each with the table's rule where it has one. A name the table lacks still compiles
    from source, against no central module in particular (a front end asked for it by name:
    EasyBuild's ``compile_against_stack``)."""
    if names is None:
        return dict(rules)
    if isinstance(names, str):      # a lone string would be taken letter by letter
        raise UsageError(f"packages to compile from source must be a list of names, not the string {names!r}")
    chosen: dict[str, BuildRule] = {}
    for name in names:
        if not isinstance(name, str) or not _PACKAGE_NAME.match(name):
            raise UsageError(f"{name!r} is not a package name (packages to compile from source are named "
                             "without versions or extras, e.g. 'mpi4py')")
        key = canonical_name(name)
        chosen[key] = rules.get(key) or BuildRule(key, ())
    return chosen


_MISSING_FACT_HINT = "the module should set a *_ROOT/*_DIR variable or put its tools on PATH"
# Where discovery looks for each fact (stack.describe_module), as the error's hint says it.
_MISSING_FACT_HINTS = {"mpicc": "the module should set MPICC, or a *_ROOT/*_DIR variable naming a prefix "
                                "with bin/mpicc, or put mpicc on PATH"}


def _fact(stack: CentralStack, ref: str) -> Any:
    kind, _, attr = ref.partition(".")
    module = stack.first(kind)
    if module is None:
        return None
    return getattr(module, attr) if attr in ("prefix", "name", "version") else module.facts.get(attr)


def resolve_rule(rule: BuildRule, stack: CentralStack) -> SourceBuild:
    """Fill ``rule`` in from the loaded modules, or say which module is missing."""
    against = list(rule.against)
    env = dict(rule.env)
    build_with: list[str] = []
    for variant in rule.when:
        if _fact(stack, str(variant["if"])):
            against += [k for k in variant.get("against", []) if k not in against]
            env.update({str(k): str(v) for k, v in (variant.get("env") or {}).items()})
            build_with += [canonical_name(str(p)) for p in variant.get("build_with", [])]
    modules = []
    for kind in against:
        module = stack.first(kind)
        if module is None:
            raise MissingCentralKind(rule.package, kind,
                                     f"{rule.package} must be compiled against the site's {kind.upper()} "
                                     f"but no {kind} module is loaded",
                                     hint=f"load your site's {kind} module first (see 'module avail')")
        modules.append(module)

    def fill(match: re.Match) -> str:
        value = _fact(stack, f"{match.group(1)}.{match.group(2)}")
        if not value:
            module = stack.first(match.group(1))
            where = module.name if module else f"the {match.group(1)} module"
            raise PlanError(f"{rule.package}: cannot tell {match.group(1)}.{match.group(2)} from {where}",
                            hint=_MISSING_FACT_HINTS.get(match.group(2), _MISSING_FACT_HINT))
        return str(value)

    return SourceBuild(rule.package, tuple(modules), {k: _FIELD.sub(fill, v) for k, v in env.items()},
                       tuple(build_with))
