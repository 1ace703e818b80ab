"""Install packages into a new environment with pip, compiling what the rule table names
against the central stack.

Order of work:
1. resolve: ``pip install --dry-run --report`` says exactly which distributions pip would add
   (direct and indirect), so indirect rule packages are caught too;
2. compile each rule package alone, from its sdist (``--no-binary``), with its rule's build
   environment and ``--no-cache-dir`` (pip's wheel cache is keyed by the sdist, not by the
   MPI/HDF5 it was built against, so a cached wheel could come from another stack);
3. install everything requested, still refusing binary wheels for every rule package.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from .errors import PlanError
from .progress import Reporter
from .rules import BuildRule, SourceBuild, canonical_name, resolve_rule
from .stack import CentralStack


@dataclass
class Installed:
    name: str
    version: str
    from_wheel: bool
    requested: bool
    build: SourceBuild | None = None


@dataclass
class InstallResult:
    packages: list[Installed] = field(default_factory=list)
    builds: list[SourceBuild] = field(default_factory=list)


def pip_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # The user's ~/.local must neither satisfy requirements nor receive packages.
    env.update({"PYTHONNOUSERSITE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"})
    env.pop("PIP_USER", None)
    env.update(extra or {})
    return env


class PipInstaller:
    def __init__(self, python: Path, reporter: Reporter, rules: Mapping[str, BuildRule],
                 stack: CentralStack) -> None:
        self.python = str(python)
        self.reporter = reporter
        self.rules = rules
        self.stack = stack

    def _pip(self, args: Sequence[str], label: str, env: Mapping[str, str] | None = None) -> list[dict]:
        with tempfile.TemporaryDirectory(prefix="envmod-pip-") as tmp:
            report = os.path.join(tmp, "report.json")
            self.reporter.run([self.python, "-m", "pip", "install", "--report", report, *args],
                              label=label, env=pip_environment(env))
            try:
                with open(report, encoding="utf-8") as fh:
                    return json.load(fh).get("install", [])
            except (OSError, ValueError):
                return []

    def install(self, requirements: Sequence[str], requirement_files: Sequence[Path]) -> InstallResult:
        reqs = list(requirements)
        for path in requirement_files:
            reqs += ["-r", str(path)]
        if not reqs:
            return InstallResult()
        no_binary = ",".join(sorted(self.rules))
        plan = self._pip(["--dry-run", "--quiet", *reqs], label="resolve")
        wanted = {canonical_name(item["metadata"]["name"]): item for item in plan}
        requested = {canonical_name(item["metadata"]["name"]) for item in plan if item.get("requested")}
        builds = [resolve_rule(self.rules[name], self.stack) for name in wanted if name in self.rules]
        # Build MPI bindings before packages that may use them at build time.
        builds.sort(key=lambda b: "mpi" not in [m.kind for m in b.modules])
        summary = ", ".join(f"{canonical_name(i['metadata']['name'])} {i['metadata']['version']}" for i in plan)
        self.reporter.step("resolve", summary or "everything requested is already provided")

        result = InstallResult(builds=builds)
        built: dict[str, SourceBuild] = {}
        for build in builds:
            version = wanted[build.package]["metadata"]["version"]
            self.reporter.step(f"compile {build.package} {version}",
                               f"from source against {', '.join(build.module_names)}")
            self._pip(["--no-binary", build.package, "--no-cache-dir", "--verbose",
                       f"{build.package}=={version}"], label=f"compile {build.package}", env=build.env)
            built[build.package] = build
        rest = [name for name in wanted if name not in built]
        if rest or requirement_files:
            self.reporter.step("install", ", ".join(rest) or "requirements")
            union: dict[str, str] = {}
            for build in builds:
                union.update(build.env)
            self._pip(["--no-binary", no_binary, *reqs], label="install", env=union)

        for name, item in wanted.items():
            url = (item.get("download_info") or {}).get("url", "")
            result.packages.append(Installed(
                name=item["metadata"]["name"], version=item["metadata"]["version"],
                from_wheel=url.endswith(".whl") and name not in built,
                requested=name in requested, build=built.get(name)))
        return result


def check_requirements(packages: Sequence[str]) -> list[str]:
    """Reject what pip would reject, before anything is created (local paths and URLs pass)."""
    if not packages:
        return []
    from packaging.requirements import InvalidRequirement, Requirement

    names = []
    for text in packages:
        if "://" in text or os.path.exists(text):
            continue
        try:
            names.append(canonical_name(Requirement(text).name))
        except InvalidRequirement as exc:
            raise PlanError(f"--with {text!r} is not a valid requirement: {exc}") from None
    return names


def direct_rule_packages(names: Sequence[str], rules: Mapping[str, BuildRule], stack: CentralStack) -> list[SourceBuild]:
    """Fail early, before creating anything, when a named rule package lacks its central module."""
    return [resolve_rule(rules[n], stack) for n in names if n in rules]


