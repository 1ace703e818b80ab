"""Install packages into a new environment with pip, compiling what the rule table names
against the central stack.

In the common case nothing of the rule table is involved, and one pip run does it all (see
:meth:`PipInstaller._install_in_one_pass`); otherwise, or if that attempt fails in any way before
pip has resolved, the order of work is:
1. resolve: ``pip install --dry-run --report`` says exactly which distributions pip would add
   (direct and indirect), so indirect rule packages are caught too;
2. compile each rule package alone, from its sdist (``--no-binary``), with its rule's build
   environment and ``--no-cache-dir`` (pip's wheel cache is keyed by the sdist, not by the
   MPI/HDF5 it was built against, so a cached wheel could come from another stack);
3. install everything requested, still refusing binary wheels for every rule package.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

from ..discover.pyinfo import PythonInfo
from ..discover.stack import CentralStack
from ..errors import BuildError, EnvmodError, PlanError, UsageError
from ..fsutil import scratch_dir
from ..progress import Reporter
from .rules import BuildRule, SourceBuild, canonical_name, resolve_rule
from .wheelcache import CacheRequest, WheelCache


@dataclass
class Installed:
    name: str
    version: str
    from_wheel: bool
    requested: bool
    build: SourceBuild | None = None
    cached: str | None = None          # the cached wheel reused instead of compiling


@dataclass
class InstallResult:
    packages: list[Installed] = field(default_factory=list)
    builds: list[SourceBuild] = field(default_factory=list)


def pip_environment(extra: Mapping[str, str] | None = None, find_links: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # The user's ~/.local must neither satisfy requirements nor receive packages.
    env.update({"PYTHONNOUSERSITE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"})
    env.pop("PIP_USER", None)
    if find_links:
        # Wheels compiled earlier in this create come first: a later build that needs one at
        # build time (h5py with MPI needs mpi4py) then uses it instead of compiling it again.
        env["PIP_FIND_LINKS"] = " ".join(filter(None, [find_links, env.get("PIP_FIND_LINKS")]))
    env.update(extra or {})
    return env


#: The version a constraint pins every rule package to in the one-pass attempt: no release has it,
#: so pip finds no candidate and no installed copy satisfies it.
UNRESOLVABLE = "0+envmod.compiled.separately"
#: pip's first lines once it has resolved everything (its wheel builds and installs follow).
_RESOLVED = ("Building wheels for collected packages:", "Installing collected packages:")


class PipInstaller:
    #: Install in one pip run when no rule package is involved. An installer that installs pip's
    #: plan with another tool (uv) needs the dry run's plan first, and says False.
    one_pass = True

    def __init__(self, python: Path, reporter: Reporter, rules: Mapping[str, BuildRule],
                 stack: CentralStack, python_info: PythonInfo, wheel_cache: WheelCache | None = None) -> None:
        self.python = str(python)
        self.reporter = reporter
        self.rules = rules
        self.stack = stack
        self.python_info = python_info
        self.wheel_cache = wheel_cache
        self.local_wheels: str | None = None
        self.scratch: str | None = None     # every temporary file of this install, pip's included

    @contextlib.contextmanager
    def _scratch(self) -> Iterator[None]:
        """One directory for everything temporary, pip's and its builds' own (``TMPDIR``) too:
        a pip stopped mid-build cannot clean up after itself, so envmod removes the whole
        directory on any exit, failure or interruption alike."""
        with scratch_dir("install") as path:
            scratch = str(path)
            try:
                os.mkdir(os.path.join(scratch, "tmp"))
                os.mkdir(os.path.join(scratch, "wheels"))
                self.scratch, self.local_wheels = scratch, os.path.join(scratch, "wheels")
                yield
            finally:
                self.scratch = self.local_wheels = None

    def _temporary_dir(self, prefix: str) -> tempfile.TemporaryDirectory:
        return tempfile.TemporaryDirectory(prefix=prefix, dir=self.scratch)

    def _env(self, extra: Mapping[str, str] | None = None, find_links: bool = True) -> dict[str, str]:
        """pip's environment, its temporary files in the scratch directory."""
        env = pip_environment(extra, self.local_wheels if find_links else None)
        if self.scratch:
            tmp = os.path.join(self.scratch, "tmp")
            env.update(TMPDIR=tmp, TEMP=tmp, TMP=tmp)
        return env

    def _pip(self, args: Sequence[str], label: str, env: Mapping[str, str] | None = None,
             silent_until: Callable[[str], bool] | None = None) -> list[dict]:
        with self._temporary_dir("envmod-pip-") as tmp:
            report = os.path.join(tmp, "report.json")
            self.reporter.run([self.python, "-m", "pip", "install", "--report", report, *args],
                              label=label, env=self._env(env), silent_until=silent_until)
            try:
                with open(report, encoding="utf-8") as fh:
                    return json.load(fh).get("install", [])
            except (OSError, ValueError):
                return []

    def install(self, requirements: Sequence[str], requirement_files: Sequence[Path]) -> InstallResult:
        with self._scratch():
            return self._install(requirements, requirement_files)

    def _install(self, requirements: Sequence[str], requirement_files: Sequence[Path]) -> InstallResult:
        reqs = list(requirements)
        for path in requirement_files:
            reqs += ["-r", str(path)]
        if not reqs:
            return InstallResult()
        one_pass = self._install_in_one_pass(reqs, requirements)
        if one_pass is not None:
            return one_pass
        plan = self._pip(["--dry-run", "--quiet", *reqs], label="resolve")
        wanted = {canonical_name(item["metadata"]["name"]): item for item in plan}
        requested = {canonical_name(item["metadata"]["name"]) for item in plan if item.get("requested")}
        builds = self._planned_builds(wanted)
        summary = ", ".join(f"{canonical_name(i['metadata']['name'])} {i['metadata']['version']}" for i in plan)
        self.reporter.step("resolve", summary or "everything requested is already provided")

        built: dict[str, SourceBuild] = {}
        cached: dict[str, str] = {}
        for build in builds:
            reused = self._compile(build, wanted[build.package]["metadata"]["version"])
            if reused:
                cached[build.package] = reused
            built[build.package] = build
        rest = [name for name in wanted if name not in built]
        if rest or requirement_files:
            self._install_rest(reqs, rest, builds, wanted)
        result = InstallResult(builds=builds)
        result.packages += [self._installed(name, item, requested, built, cached) for name, item in wanted.items()]
        return result

    def names_a_rule_package(self, requirements: Sequence[str]) -> bool:
        """A requirement given by name is a rule package's: it is compiled, so no attempt that
        must never reach one is worth making."""
        return any(requirement_name(text) in self.rules for text in requirements)

    def _install_in_one_pass(self, reqs: Sequence[str], requirements: Sequence[str]) -> InstallResult | None:
        """Resolve and install in one pip run, with a constraint no rule package can meet: it
        succeeds only when no rule package is needed, directly or not, and its report is then
        the plan the dry run would have given. None when it is not tried, or failed while pip
        was still resolving (pip installs nothing before it has resolved everything): the caller
        then takes the full path, which gives today's behaviour and messages. Silent on the
        terminal until pip has resolved; a failure after that is the install's own, and raised."""
        if not self.one_pass or self.names_a_rule_package(requirements):
            return None
        resolved: list[str] = []

        def announce(line: str) -> bool:
            if not line.startswith(_RESOLVED):
                return False
            resolved.append(line)
            self.reporter.step("install", line.split(":", 1)[1].strip() + " (one pass: nothing to compile)")
            return True

        before = self._installed_files()
        with self._temporary_dir("envmod-constraints-") as tmp:
            constraints = os.path.join(tmp, "rule-packages.txt")
            with open(constraints, "w", encoding="utf-8") as fh:
                fh.writelines(f"{name}=={UNRESOLVABLE}\n" for name in sorted(self.rules))
            try:
                plan = self._pip(["--no-binary", ",".join(sorted(self.rules)), "--constraint", constraints, *reqs],
                                 label="install", silent_until=announce)
            except EnvmodError:
                if resolved or self._installed_files() != before:
                    raise
                self.reporter.note("(the one-pass install stopped before installing anything: "
                                   "a rule package is needed, or pip failed; resolving on its own)")
                return None
        if not resolved:
            self.reporter.step("resolve", "everything requested is already provided")
        requested = {canonical_name(item["metadata"]["name"]) for item in plan if item.get("requested")}
        result = InstallResult()
        result.packages += [self._installed(canonical_name(item["metadata"]["name"]), item, requested, {}, {})
                            for item in plan]
        return result

    def _installed_files(self) -> set[str]:
        """What the env's site-packages holds (where pip installs every package before its
        scripts): a failed attempt that changed it must not be taken for one that installed
        nothing. Not ``bin/``: venv's activate scripts may still be being written there."""
        prefix = Path(self.python).parent.parent
        return {str(entry) for place in prefix.glob("lib*/python*/site-packages") if place.is_dir()
                for entry in place.iterdir()}

    def _planned_builds(self, wanted: dict[str, dict]) -> list[SourceBuild]:
        """The source builds of the rule packages in ``wanted`` (pip's plan, by canonical name), plus
        those of the rule packages a build needs (added to ``wanted``), in the order to compile:
        what other builds use first, then MPI bindings, then the rest."""
        builds = [resolve_rule(self.rules[name], self.stack) for name in wanted if name in self.rules]
        needed = sorted({n for b in builds for n in b.build_with if n not in wanted})
        if needed:
            # A build needs another rule package of this env (h5py with MPI imports mpi4py).
            for item in self._pip(["--dry-run", "--quiet", *needed], label="resolve"):
                name = canonical_name(item["metadata"]["name"])
                wanted[name] = item
                if name in self.rules:
                    builds.append(resolve_rule(self.rules[name], self.stack))
        used = {n for b in builds for n in b.build_with}
        builds.sort(key=lambda b: (b.package not in used, "mpi" not in [m.kind for m in b.modules]))
        return builds

    def _install_rest(self, reqs: Sequence[str], rest: Sequence[str], builds: Sequence[SourceBuild],
                      wanted: Mapping[str, dict] | None = None) -> None:
        """Install everything requested with pip; the rule packages were compiled already and
        are never taken from a binary wheel, and their build settings stay in the environment.
        ``wanted`` is pip's plan by canonical name (another installer installs exactly that)."""
        self.reporter.step("install", ", ".join(rest) or "requirements")
        union: dict[str, str] = {}
        for build in builds:
            union.update(build.env)
        self._pip(["--no-binary", ",".join(sorted(self.rules)), *reqs], label="install", env=union)

    @staticmethod
    def _installed(name: str, item: dict, requested: set[str], built: Mapping[str, SourceBuild],
                   cached: Mapping[str, str]) -> Installed:
        """One package of pip's plan as installed: how it came in (wheel, compiled, cached build)."""
        url = (item.get("download_info") or {}).get("url", "")
        return Installed(name=item["metadata"]["name"], version=item["metadata"]["version"],
                         from_wheel=url.endswith(".whl") and name not in built,
                         requested=name in requested, build=built.get(name), cached=cached.get(name))

    def rebuild(self, builds: Sequence[tuple[SourceBuild, str]]) -> dict[str, str | None]:
        """Compile installed packages again in place (same versions) against ``build.modules``;
        returns the cached wheel reused for each, if any."""
        with self._scratch():
            return {build.package: self._compile(build, version, reinstall=True) for build, version in builds}

    def _compile(self, build: SourceBuild, version: str, reinstall: bool = False) -> str | None:
        """Install ``build.package`` compiled against its modules: from the wheel cache when a
        cached build links exactly the libraries the modules provide now, else from source.
        Returns the cached wheel's path when one was reused."""
        request = CacheRequest(build.package, version, self.python_info.soabi, self.python_info.platform, build)
        against = ", ".join(build.module_names)
        wheel, why = self.wheel_cache.lookup(request) if self.wheel_cache else (None, "")
        again = ["--force-reinstall", "--no-deps"] if reinstall else []
        if wheel is not None:
            self.reporter.step(f"reuse {build.package} {version}", f"{why} ({against})")
            self._pip([*again, str(wheel)], label=f"install {build.package}")
            self._keep(wheel)
            return str(wheel)
        self.reporter.step(f"compile {build.package} {version}", f"from source against {against}"
                           + (f"; {why}" if why else ""))
        with self._temporary_dir("envmod-wheel-") as out:
            if build.build_with:
                self._wheel_in_build_env(build, version, Path(out))
            else:
                self.reporter.run([self.python, "-m", "pip", "wheel", "--no-binary", build.package, "--no-deps",
                                   "--no-cache-dir", "--verbose", "--wheel-dir", out, f"{build.package}=={version}"],
                                  label=f"compile {build.package}", env=self._env(build.env))
            wheels = sorted(Path(out).glob("*.whl"))
            if not wheels:
                log = str(self.reporter.log_path) if self.reporter.log_path else None
                raise BuildError(f"compile {build.package} produced no wheel", log=log)
            self._pip([*again, str(wheels[0])], label=f"install {build.package}")
            self._keep(wheels[0])
            if self.wheel_cache is not None:
                stored = self.wheel_cache.store(request, wheels[0], time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
                self.reporter.step(f"cache {build.package} {version}",
                                   f"stored {stored}" if stored else "wheel cache not writable; not stored")
        return None

    def _wheel_in_build_env(self, build: SourceBuild, version: str, out: Path) -> None:
        """Compile in a throwaway env over the central Python holding the sdist's declared build
        requirements and this env's own builds of ``build.build_with`` (pip's isolated build would
        fetch, and compile, whatever version the package pins for its build instead)."""
        from .backends.venv import VenvBackend

        with self._temporary_dir("envmod-build-") as tmp:
            work = Path(tmp)
            # pip prepares the sdist's metadata to download it; with the build's knobs (HDF5_MPI
            # set by a module, say) that alone would compile the pinned build requirements.
            quiet = {k: v for k, v in self._env(find_links=False).items() if k not in build.env}
            self.reporter.run([self.python, "-m", "pip", "download", "--no-deps", "--no-binary", build.package,
                               "--no-cache-dir", "--dest", str(work / "sdist"), f"{build.package}=={version}"],
                              label=f"download {build.package}", env=quiet)
            sdist = next((work / "sdist").iterdir())
            requires = [r for r in build_requirements(sdist) if requirement_name(r) not in build.build_with]
            own = [str(w) for w in Path(self.local_wheels or work).glob("*.whl")
                   if canonical_name(w.name.split("-")[0]) in build.build_with]
            VenvBackend().create(self.python_info, work / "env", work / "env", f"build-{build.package}")
            python = str(work / "env" / "bin" / "python")
            self.reporter.run([python, "-m", "pip", "install", *requires, *own],
                              label=f"prepare {build.package} build", env=self._env(find_links=False))
            self.reporter.run([python, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-cache-dir",
                               "--verbose", "--wheel-dir", str(out), str(sdist)],
                              label=f"compile {build.package}", env=self._env(build.env, find_links=False))

    def _keep(self, wheel: Path) -> None:
        """Offer a wheel compiled (or reused) here to the builds that follow."""
        if self.local_wheels:
            shutil.copy2(wheel, self.local_wheels)


def requirement_name(text: str) -> str:
    return canonical_name(re.split(r"[\s<>=!~;\[(@]", text.strip(), maxsplit=1)[0])


def build_requirements(sdist: Path) -> list[str]:
    """``[build-system] requires`` of an sdist's pyproject.toml (setuptools if it has none)."""
    import tarfile
    import zipfile

    text = None
    if sdist.name.endswith(".zip"):
        with zipfile.ZipFile(sdist) as zf:
            names = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith("/pyproject.toml")]
            text = zf.read(names[0]).decode() if names else None
    else:
        with tarfile.open(sdist) as tf:
            member = next((m for m in tf.getmembers() if m.name.count("/") == 1
                           and m.name.endswith("/pyproject.toml")), None)
            # extractfile gives None for a member that is no regular file (a link, a directory)
            handle = tf.extractfile(member) if member else None
            text = handle.read().decode() if handle else None
    if text is None:
        return ["setuptools>=40.8.0", "wheel"]
    try:
        import tomllib
    except ModuleNotFoundError:       # Python < 3.11
        import tomli as tomllib
    return list(tomllib.loads(text).get("build-system", {}).get("requires", ["setuptools>=40.8.0", "wheel"]))


# A URL a spec may be: scheme://... (pip also takes VCS schemes such as git+https://)
_URL_SPEC = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SPEC_HINT = ("a package is a requirement (name, extras, versions), a path or a URL; "
              "a directory whose name starts with '-' is written ./NAME")


def check_requirements(packages: Sequence[str]) -> list[str]:
    """Reject what pip would reject, and anything pip would take as an option, before anything is
    created; return the canonical names of the named requirements (local paths and URLs pass)."""
    names = [check_spec(text, f"--with {text!r}") for text in packages]
    return [name for name in names if name]


def check_spec(text: str, where: str) -> str | None:
    """One package spec (``--with``, Spack's ``--with``, UserEnv's ``packages``, a requirements
    file line): a requirement (its canonical name returned), a local path or a URL (None). Never
    a pip option: ``--index-url=...`` or a directory named ``--pre`` would reach pip as one."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError(f"{where}: an empty package spec", hint=_SPEC_HINT)
    if text.lstrip().startswith("-"):
        raise UsageError(f"{where} is a pip option, not a package; envmod passes no options to pip",
                         hint=_SPEC_HINT)
    if _URL_SPEC.match(text):
        _check_url(text, where)
        return None
    if os.path.exists(text):
        return None
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        raise PlanError(f"{where} is not a valid requirement: {exc}") from None
    if requirement.url:
        _check_url(requirement.url, where)
    return canonical_name(requirement.name)


def _check_url(url: str, where: str) -> None:
    """What pip would fail on with a traceback ('ERROR: Exception:'), said in one line."""
    from urllib.parse import urlsplit

    try:
        # urlsplit checks the host's brackets, reading .port its number: pip's own two crashes
        _ = urlsplit(url).port
    except ValueError as exc:
        raise PlanError(f"{where} is not a valid URL: {exc}") from None


# Options a requirements file may hold: more requirement/constraint files (checked the same way),
# an editable install of a path or URL, and a hash that pins a requirement. Everything else
# (-i/--index-url, --extra-index-url, -f/--find-links, --no-index, --trusted-host, --no-binary,
# --only-binary, --pre, --config-settings, ...) changes where packages come from or how envmod's
# rule packages are built, so it is refused: those are the site's and envmod's to set.
_FILE_OPTIONS_WITH_FILE = {"-r", "--requirement", "-c", "--constraint"}
_FILE_OPTIONS_WITH_SPEC = {"-e", "--editable"}
_REQUIREMENT_OPTIONS = {"--hash"}


def check_requirement_files(paths: Sequence[Path | str]) -> None:
    """Check every line of each requirements file (and of the files they include) as pip would
    read it, refusing options other than -r/-c/-e and a requirement's --hash."""
    for where, line in requirement_file_lines(paths):
        tokens = line.split()
        first_option = next((i for i, t in enumerate(tokens) if t.startswith("-")), len(tokens))
        if first_option:
            check_spec(" ".join(tokens[:first_option]), f"{where} {' '.join(tokens[:first_option])!r}")
            _check_requirement_options(tokens[first_option:], where)
            continue
        option, _, value = tokens[0].partition("=")
        value = value or " ".join(tokens[1:])
        if option in _FILE_OPTIONS_WITH_SPEC and value:
            check_spec(value, f"{where} {option} {value!r}")
        else:
            raise UsageError(f"{where}: option {option!r} is not allowed in a requirements file",
                             hint="only -r, -c, -e and a requirement's --hash are; where packages come from "
                                  "is the site's pip configuration")


def requirement_file_lines(paths: Sequence[Path | str]) -> Iterator[tuple[str, str]]:
    """Each logical line of each requirements file and of the files they include (``-r``/``-c``,
    read relative to the including file, as pip does), as (``FILE line N``, line), each file
    once; the include lines themselves are followed, not given. A file that cannot be read, or
    an include that is not a file, is a :class:`UsageError`."""
    seen: set[str] = set()
    for path in paths:
        yield from _file_lines(Path(path), seen)


def _file_lines(path: Path, seen: set[str]) -> Iterator[tuple[str, str]]:
    real = os.path.realpath(path)
    if real in seen:
        return
    seen.add(real)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read requirements file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    for number, line in _logical_lines(text):
        where = f"{path} line {number}"
        tokens = line.split()
        option, _, value = tokens[0].partition("=")
        value = value or " ".join(tokens[1:])
        if option in _FILE_OPTIONS_WITH_FILE and value:
            included = Path(value)
            if not included.is_absolute():
                included = path.parent / included     # pip reads them relative to this file
            if not included.is_file():
                raise UsageError(f"{where}: requirements file not found: {value}")
            yield from _file_lines(included, seen)
        else:
            yield where, line


def _check_requirement_options(tokens: Sequence[str], where: str) -> None:
    value_next = False          # '--hash ALGO:DIGEST' spelled with a space
    for token in tokens:
        if value_next:
            value_next = False
            continue
        option, equals, _ = token.partition("=")
        if option not in _REQUIREMENT_OPTIONS:
            raise UsageError(f"{where}: option {option!r} after a requirement is not allowed",
                             hint="only --hash=ALGO:DIGEST is")
        value_next = not equals


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """pip's reading of a requirements file: lines joined at a trailing backslash, comments
    (a '#' at the start or after white space) dropped, blank lines skipped."""
    lines: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        if raw.endswith("\\"):
            pending += raw[:-1]
            continue
        line = re.sub(r"(^|\s+)#.*$", "", pending + raw).strip()
        pending = ""
        if line:
            lines.append((start, line))
    if pending.strip():
        lines.append((start, re.sub(r"(^|\s+)#.*$", "", pending).strip()))
    return [(n, line) for n, line in lines if line]


def direct_rule_packages(names: Sequence[str], rules: Mapping[str, BuildRule], stack: CentralStack) -> list[SourceBuild]:
    """Fail early, before creating anything, when a named rule package lacks its central module."""
    return [resolve_rule(rules[n], stack) for n in names if n in rules]


