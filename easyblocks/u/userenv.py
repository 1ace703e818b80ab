##
# UserEnv: an envmod user environment as an EasyBuild installation.
#
# Part of envmod (MIT licence). Use it with EasyBuild 5 as a generic easyblock:
#     eb MyEnv-1.0.eb --include-easyblocks=/path/to/envmod/easyblocks/u/userenv.py
##
"""
EasyBuild support for envmod user environments: a personal Python environment created over the
site's central Python, with the packages that need it (mpi4py, h5py, ...) compiled against the
central MPI and HDF5, installed as a module that loads exactly the central modules it was built
against (the easyconfig's ``dependencies``).

The work is done by envmod's library (the Python package ``bridge``), the same code behind
``envmod create``, so the environment carries the same record (``envmod.yaml``) and
``envmod list/show`` see it. This easyblock only maps EasyBuild's steps onto the library:

* ready      import the library (a clear error if the Python running EasyBuild cannot)
* prepare    EasyBuild loads the dependency modules (the central stack)
* configure  discover the stack from the loaded modules, plan (Python, build rules); a rule
             package whose MPI/HDF5 is not among the dependencies fails here, naming the module
* install    create the environment in the install dir with the Python dependency's interpreter,
             install the packages (rule packages compiled from source, see envmod's build rules)
* postproc   scan what the environment's ELF files link (envmod's ELF scanner, when the library
             has it) and check it against the dependencies: a central library from a module that
             is not a dependency fails the build naming the module to add; a dependency nothing
             uses is a warning. Then write the record.
* sanity     import the requested packages inside the new module
* module     EasyBuild writes the module (its depends_on lines); this easyblock adds VIRTUAL_ENV,
             PYTHONNOUSERSITE, ENVMOD_ENV/ENVMOD_RECORD and the envmod family, then registers
             the environment with envmod (a symlink <envmod root>/envs/<name> -> install dir)

How the library is found, first hit wins:
1. ``$ENVMOD_LIBRARY``: an envmod checkout or its ``src`` directory (os.pathsep-separated list);
2. the Python running EasyBuild, if envmod is installed into it
   (``$EB_PYTHON -m pip install /path/to/envmod``; ci/eb-site.sh does this for its site);
3. the checkout this file lives in (``--include-easyblocks`` links the file, so its real path
   is still inside the checkout): ``<checkout>/src``.
The library's own dependencies (PyYAML, Jinja2, packaging, archspec) must be importable too.
"""
import contextlib
import dataclasses
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from easybuild.framework.easyblock import EasyBlock
from easybuild.framework.easyconfig import CUSTOM
from easybuild.tools.build_log import EasyBuildError, print_msg, print_warning
from easybuild.tools.filetools import mkdir

RECORD_FILE = 'envmod.yaml'
ENVMOD_FAMILY = 'envmod'
# Prefixes and library directories that belong to the operating system, not to one module:
# a module rooted at /usr (Debian's OpenMPI through SystemMPI) owns only its own files there.
SYSTEM_PREFIXES = ('/', '/usr', '/usr/local', '/opt')
SYSTEM_LIBDIR = re.compile(r'^(/usr)?/lib(32|64|x32)?(/[a-z0-9_]+-linux-gnu[a-z0-9_]*)?/?$')
LIBRARY_HINT = ("make envmod importable by the Python running EasyBuild (%s): install it there "
                "(%s -m pip install /path/to/envmod), or set $ENVMOD_LIBRARY to an envmod checkout "
                "(or its src directory) whose dependencies (PyYAML, Jinja2, packaging, archspec) that Python has")


def import_library(environ=None, here=None):
    """Import envmod's library; return a namespace of the modules this easyblock uses.

    Raises ImportError with the places looked at when it cannot be imported.
    """
    environ = os.environ if environ is None else environ
    here = os.path.realpath(here or __file__)
    tried = []
    for entry in [e for e in environ.get('ENVMOD_LIBRARY', '').split(os.pathsep) if e]:
        entry = os.path.abspath(os.path.expanduser(entry))
        src = os.path.join(entry, 'src') if os.path.isdir(os.path.join(entry, 'src', 'bridge')) else entry
        tried.append('$ENVMOD_LIBRARY=%s' % entry)
        if not os.path.isdir(os.path.join(src, 'bridge')):
            raise ImportError("$ENVMOD_LIBRARY entry %s holds no envmod library (no bridge/ package in it "
                              "or in its src/)" % entry)
        if src not in sys.path:
            sys.path.insert(0, src)
    tried.append('the Python running EasyBuild')
    checkout_src = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(here))), 'src')
    try:
        import bridge  # noqa: F401
    except ImportError:
        tried.append(checkout_src)
        if os.path.isdir(os.path.join(checkout_src, 'bridge')):
            sys.path.append(checkout_src)
    try:
        import bridge
        from bridge import config, errors, record, rules, session, stack, store
        from bridge.backends import get_backend
        from bridge.install import check_requirements, direct_rule_packages
        from bridge.progress import Reporter
    except ImportError as err:
        raise ImportError("%s (looked in: %s)" % (err, ', '.join(tried))) from err
    try:
        from bridge import elf
    except ImportError:   # the ELF scanner is newer than some copies of the library
        elf = None
    ns = dict(bridge=bridge, config=config, errors=errors, record=record, rules=rules, session=session,
              stack=stack, store=store, elf=elf, get_backend=get_backend, check_requirements=check_requirements,
              direct_rule_packages=direct_rule_packages, Reporter=Reporter)
    return type('EnvmodLibrary', (), ns)


class _LineWriter:
    """A text stream that hands complete lines to EasyBuild's output (for the library's Reporter)."""

    def __init__(self, emit):
        self.emit = emit
        self.buffer = ''

    def write(self, text):
        self.buffer += text
        while '\n' in self.buffer:
            line, self.buffer = self.buffer.split('\n', 1)
            if line.strip():
                self.emit(line.strip())

    def flush(self):
        pass

    @staticmethod
    def isatty():
        return False


# ---------------------------------------------------------------------------------------------
# What the environment links, and which central module each library comes from

def _under(path, root):
    root = root.rstrip('/') or '/'
    return path == root or path.startswith(root + '/') or root == '/'


def _is_system_libdir(path):
    return bool(SYSTEM_LIBDIR.match(os.path.realpath(path)))


def compiler_libdirs(mpicc):
    """The library directories an MPI compiler wrapper links from (Open MPI, MPICH and relatives)."""
    for args in ([mpicc, '--showme:libdirs'], [mpicc, '-show']):
        try:
            out = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode != 0 or not out.stdout.strip():
            continue
        words = out.stdout.split()
        if args[1] == '--showme:libdirs':
            return [w for w in words if os.path.isabs(w)]
        return [w[2:] for w in words if w.startswith('-L') and os.path.isabs(w[2:])]
    return []


class ModuleOwnership:
    """Which central module a library file belongs to.

    A module owns the tree under its prefix (unless the prefix is the operating system's, like
    /usr for Debian's OpenMPI) and every file in its own library directories (its LD_LIBRARY_PATH
    and LIBRARY_PATH entries, and for MPI the wrapper compiler's), compared by real path so a
    module that links system files into its tree (HDF5 here) still owns them. A file under
    ``<install root>/software/<name>/<version>/`` of an EasyBuild tree on $MODULEPATH belongs to
    module ``<name>/<version>`` even when that module is not loaded.
    """

    def __init__(self, modules, install_roots=(), libdirs_of=None):
        self.modules = list(modules)
        self.trees = []    # (real dir, module name)
        self.files = {}    # real file -> module name
        for module in self.modules:
            prefix = module.prefix
            if prefix and os.path.realpath(prefix) not in SYSTEM_PREFIXES:
                self.trees.append((os.path.realpath(prefix), module.name))
                if os.path.normpath(prefix) != os.path.realpath(prefix):
                    self.trees.append((os.path.normpath(prefix), module.name))
            dirs = list(module.paths.get('LD_LIBRARY_PATH', ())) + list(module.paths.get('LIBRARY_PATH', ()))
            if libdirs_of is not None:
                dirs += libdirs_of(module)
            for d in dirs:
                if not os.path.isdir(d) or _is_system_libdir(d):
                    continue
                for entry in os.listdir(d):
                    full = os.path.join(d, entry)
                    if os.path.isfile(full):
                        self.files.setdefault(os.path.realpath(full), module.name)
        self.trees.sort(key=lambda t: -len(t[0]))
        self.software = [os.path.join(root, 'software') for root in install_roots]

    def owner(self, path):
        """(module name, loaded) for ``path``, or (None, False) for the OS or the env itself."""
        candidates = [os.path.normpath(path), os.path.realpath(path)]
        for cand in candidates:
            for tree, name in self.trees:
                if _under(cand, tree):
                    return name, True
        for cand in candidates:
            if cand in self.files:
                return self.files[cand], True
        for cand in candidates:
            for software in self.software:
                if _under(cand, software):
                    parts = os.path.relpath(cand, software).split(os.sep)
                    if len(parts) >= 3:
                        return '%s/%s' % (parts[0], parts[1]), False
        return None, False


def install_roots(modulepath):
    """EasyBuild install roots of the $MODULEPATH entries: ROOT for ROOT/modules/<class>, when
    ROOT/software exists."""
    roots = []
    for entry in [e for e in (modulepath or '').split(':') if e]:
        parent = os.path.dirname(os.path.normpath(entry))
        root = os.path.dirname(parent)
        if os.path.basename(parent) == 'modules' and os.path.isdir(os.path.join(root, 'software')) \
                and root not in roots:
            roots.append(root)
    return roots


@dataclasses.dataclass
class LinkReport:
    """What the environment's ELF files load, by central module."""
    used: dict = dataclasses.field(default_factory=dict)       # module -> [(env file, library)]
    direct: dict = dataclasses.field(default_factory=dict)     # module -> [(env file, library)], direct needs
    unloaded: dict = dataclasses.field(default_factory=dict)   # module not loaded -> [(env file, library)]
    not_found: list = dataclasses.field(default_factory=list)  # (env file, soname)
    files: int = 0


def scan_links(elf, prefix, python, ownership, ld_library_path=None, on_error=None):
    """Model the loader (envmod's ELF scanner) for every ELF file of the env at ``prefix``."""
    report = LinkReport()
    resolver = elf.Resolver()
    real_prefix = os.path.realpath(prefix)

    def inside(path):
        return _under(os.path.normpath(path), prefix) or _under(os.path.realpath(path), real_prefix)

    def short(path):
        return os.path.relpath(path, prefix) if _under(os.path.normpath(path), prefix) else path

    for info in elf.iter_elf_files(prefix, on_error=on_error):
        if not info.needed:
            continue
        report.files += 1
        extension = info.path.endswith('.so') and '/site-packages/' in info.path
        try:
            result = resolver.resolve_tree(info, ld_library_path=ld_library_path,
                                           executable=python if extension else None)
        except (elf.ElfError, OSError) as err:
            if on_error:
                on_error(info.path, err)
            continue
        for obj in result.objects:
            if inside(obj.path):        # the env's own libraries (wheels' bundled .libs)
                continue
            name, loaded = ownership.owner(obj.path)
            if name and loaded:
                report.used.setdefault(name, []).append((short(info.path), os.path.basename(obj.path)))
        for needer, res in result.edges:
            if not inside(needer):
                continue
            if not res.found:
                if res.how == elf.How.NOT_FOUND:
                    report.not_found.append((short(needer), res.name))
                continue
            if inside(res.path):
                continue
            name, loaded = ownership.owner(res.path)
            if name is None:
                continue
            target = report.direct if loaded else report.unloaded
            entry = (short(needer), res.name)
            if entry not in target.setdefault(name, []):
                target[name].append(entry)
    return report


def dependency_spec(module_name, external=False):
    """How to write a module as an easyconfig dependency."""
    if external or '/' not in module_name:
        return "('%s', EXTERNAL_MODULE)" % module_name
    name, version = module_name.split('/', 1)
    return "('%s', '%s')" % (name, version)


# ---------------------------------------------------------------------------------------------

class UserEnv(EasyBlock):
    """An envmod user environment (a venv over the central Python) built by envmod's library."""

    @staticmethod
    def extra_options(extra_vars=None):
        """Custom easyconfig parameters of UserEnv (see `eb -a -e UserEnv`)."""
        extra = {
            'backend': ['venv', "How the environment is made, one of envmod's backends: 'venv' (a virtual "
                        "environment over the Python dependency's interpreter)", CUSTOM],
            'packages': [[], "Python packages to install, in pip's requirement syntax "
                         "(e.g. ['mpi4py', 'h5py>=3.10'])", CUSTOM],
            'requirements': [[], "pip requirements files to install (absolute, or relative to the "
                             "easyconfig's directory)", CUSTOM],
            'compile_against_stack': [None, "Packages compiled from source against the central stack "
                                      "(the dependencies) instead of installed from binary wheels. None: "
                                      "those of envmod's build-rule table (mpi4py against MPI, h5py against "
                                      "HDF5, plus the site's build_rules file); a list: only these, with "
                                      "the table's settings where it has them", CUSTOM],
            'system_site_packages': [True, "Let the environment see the central Python's site-packages "
                                     "(the Python dependency's extensions)", CUSTOM],
            'sanity_imports': [None, "Python modules the sanity check imports inside the new module. None: "
                               "the top-level modules of the requested packages", CUSTOM],
            'envmod_register': [True, "Register the environment with envmod (a symlink <envmod root>/envs/"
                                "<name>-<version> to the install dir) so 'envmod list' and 'envmod show' "
                                "see it", CUSTOM],
        }
        return EasyBlock.extra_options(dict(extra, **(extra_vars or {})))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lib = None
        self.session = None
        self.system = None
        self.plan = None
        self.record = None
        self.reporter = None
        self.env_name = '%s-%s%s' % (self.name, self.version, self.cfg['versionsuffix'])
        # The module puts only the env's bin/ on PATH: the venv's python finds its own
        # site-packages, and its libraries are reached through RPATHs, not the module.
        for var in list(self.module_load_environment):
            if var != 'PATH':
                delattr(self.module_load_environment, var)
        self.module_load_environment.PATH = ['bin']

    # ---- helpers ----------------------------------------------------------------------------
    def as_list(self, param):
        """A list parameter; a single string (as --try-amend=NAME=value gives) is split at commas."""
        value = self.cfg[param]
        if value is None:
            return None
        if isinstance(value, str):
            return [v for v in (w.strip() for w in value.split(',')) if v]
        return list(value)

    def library(self):
        if self.lib is None:
            try:
                self.lib = import_library()
            except ImportError as err:
                raise EasyBuildError("UserEnv cannot import envmod's library: %s; " + LIBRARY_HINT,
                                     err, sys.executable, sys.executable) from None
            self.log.info("envmod library %s from %s (ELF scanner: %s)", self.lib.bridge.__version__,
                          os.path.dirname(self.lib.bridge.__file__), 'yes' if self.lib.elf else 'no')
        return self.lib

    @contextlib.contextmanager
    def envmod_errors(self, what):
        """Turn the library's errors (one line a user can act on) into EasyBuild's."""
        lib = self.library()
        try:
            yield
        except lib.errors.EnvmodError as err:
            raise EasyBuildError("%s: %s", what, err.one_line()) from None

    @property
    def module_type(self):
        return 'tcl' if self.module_generator.SYNTAX == 'Tcl' else 'lmod'

    def runtime_deps(self):
        return [d for d in self.cfg.dependencies(runtime_only=True)]

    def dep_module_names(self):
        return [d['full_mod_name'] for d in self.runtime_deps()]

    def is_external(self, module_name):
        return any(d.get('external_module') and module_name.startswith(d['full_mod_name'])
                   for d in self.runtime_deps())

    def python_dependency(self):
        """(dependency, its python3) of the Python dependency; fails naming what to add."""
        lib = self.library()
        table = lib.stack.load_kind_table()
        for dep in self.runtime_deps():
            meta = dep.get('external_module_metadata') or {}
            names = [dep['name'], dep['full_mod_name']] + list(meta.get('name') or [])
            if any(lib.stack.classify(n, {}, table) == 'python' for n in names):
                return dep
        raise EasyBuildError("UserEnv needs the central Python among the dependencies: add one, e.g. %s",
                             self.suggest('python') or "('Python', '3.11.2')")

    def software_root(self, dep):
        from easybuild.tools.modules import get_software_root
        meta = dep.get('external_module_metadata') or {}
        for name in [dep['name']] + list(meta.get('name') or []):
            root = get_software_root(name)
            if root:
                return root
        return None

    def suggest(self, kind):
        """Available modules of a kind (python, mpi, hdf5), as easyconfig dependency specs."""
        lib = self.library()
        table = lib.stack.load_kind_table()
        try:
            available = self.modules_tool.available()
        except EasyBuildError:
            return ''
        found = [m for m in available if lib.stack.classify(m, {}, table) == kind and '/' in m]
        return ' or '.join(dependency_spec(m) for m in sorted(found)[-3:])

    def requirement_files(self):
        base = os.path.dirname(self.cfg.path) if getattr(self.cfg, 'path', None) else os.getcwd()
        files = []
        for entry in self.as_list('requirements') or []:
            path = entry if os.path.isabs(entry) else os.path.join(base, entry)
            if not os.path.isfile(path):
                raise EasyBuildError("requirements file not found: %s (relative paths are taken from the "
                                     "easyconfig's directory %s)", entry, base)
            files.append(path)
        return files

    def source_rules(self, stack):
        """The build rules for this env: the library's table, or the subset compile_against_stack names."""
        lib = self.library()
        table = lib.rules.load_rules(self.settings().build_rules)
        wanted = self.as_list('compile_against_stack')
        if wanted is None:
            return table, None
        chosen = {}
        for name in wanted:
            key = lib.rules.canonical_name(name)
            chosen[key] = table.get(key) or lib.rules.BuildRule(key, ())
        return chosen, sorted(chosen)

    def settings(self):
        lib = self.library()
        with self.envmod_errors("envmod configuration"):
            return lib.config.load_settings()

    # ---- steps ------------------------------------------------------------------------------
    def check_readiness_step(self):
        super().check_readiness_step()
        lib = self.library()
        with self.envmod_errors("easyconfig parameter 'backend'"):
            lib.get_backend(self.cfg['backend'])
        if not self.cfg['system_site_packages']:
            raise EasyBuildError("system_site_packages = False is not supported yet: envmod's venv backend "
                                 "always lets the environment see the central Python's site-packages (it uses "
                                 "the central pip from there)")
        if not (self.cfg['packages'] or self.cfg['requirements']):
            self.log.info("no packages requested: the environment holds only the central Python's packages")
        self.python_dependency()

    def configure_step(self):
        """Discover the central stack from the loaded dependency modules and plan the environment."""
        lib = self.library()
        rules, chosen = self.source_rules(None) if self.dry_run else (None, None)
        if self.dry_run:
            python = self.python_dependency()['full_mod_name']
            self.dry_run_msg("envmod: plan a %s environment over %s's python3 (the central stack is the loaded "
                             "dependency modules: %s)", self.cfg['backend'], python,
                             ', '.join(self.dep_module_names()))
            names = ', '.join(chosen) if chosen is not None else ', '.join(
                '%s (against %s)' % (r.package, '/'.join(r.against)) for r in rules.values())
            self.dry_run_msg("envmod: compiled from source against the stack, when requested: %s", names or 'none')
            return

        settings = self.settings()
        python_dep = self.python_dependency()
        root = self.software_root(python_dep)
        python_exe = os.path.join(root, 'bin', 'python3') if root else None
        request = lib.session.CreateRequest(
            name=self.env_name, packages=self.as_list('packages') or [],
            requirement_files=self.requirement_files(), python=python_exe,
            description=' '.join((self.cfg['description'] or '').split()), module_type=self.module_type,
            force=True, backend=self.cfg['backend'], module_name=self.full_mod_name)
        self.reporter = lib.Reporter(stream=_LineWriter(lambda line: print_msg('  >> envmod ' + line, log=self.log,
                                                                               silent=self.silent, prefix=False)),
                                     heartbeat=60.0)
        with self.envmod_errors("envmod could not read the central stack"):
            discovered = lib.session.CreateSession(request, settings, self.reporter)
            system, stack = discovered.discover()
            stack = self.complete_stack(stack)
        self.session = lib.session.CreateSession(request, settings, self.reporter, stack=stack,
                                                 module_system=system)
        self.system = system
        rules, chosen = self.source_rules(stack)
        try:
            if chosen is None:
                plan = self.session.plan(system, stack)
            elif 'source_builds' in {f.name for f in dataclasses.fields(lib.session.CreateRequest)}:
                request = dataclasses.replace(request, source_builds=chosen)
                self.session.request = request
                plan = self.session.plan(system, stack)
            else:
                # A library without CreateRequest.source_builds plans with its whole rule table:
                # plan without packages, then check and use the chosen rules here.
                self.session.request = dataclasses.replace(request, packages=(), requirement_files=())
                plan = self.session.plan(system, stack)
                self.session.request = request
                lib.direct_rule_packages(lib.check_requirements(request.packages), rules, stack)
                plan = dataclasses.replace(plan, request=request, rules=rules)
        except lib.errors.PlanError as err:
            raise EasyBuildError("%s", self.explain_plan_error(err, stack)) from None
        except lib.errors.EnvmodError as err:
            raise EasyBuildError("envmod could not plan %s: %s", self.env_name, err.one_line()) from None
        self.plan = plan
        self.check_rule_modules(plan, stack)
        print_msg("envmod: %s over %s (Python %s); compiled against the stack: %s" % (
            request.backend, plan.python_module.name if plan.python_module else plan.python.executable,
            plan.python.version, ', '.join(sorted(plan.rules)) or 'nothing'), log=self.log, silent=self.silent)

    def complete_stack(self, stack):
        """Fill in what EasyBuild knows and the modules may not say: prefixes ($EBROOT*) and tools.

        Debian's OpenMPI through SystemMPI puts nothing on PATH (it is /usr), so its mpicc is
        found from $EBROOTOPENMPI; external modules get their prefix from the metadata.
        """
        lib = self.library()
        roots = {}
        for dep in self.runtime_deps():
            root = self.software_root(dep)
            if root:
                roots[dep['full_mod_name']] = root
        completed = []
        for module in stack.modules:
            root = next((r for name, r in roots.items() if module.name == name or module.name.startswith(name + '/')),
                        None)
            prefix = module.prefix or root
            facts = dict(module.facts)
            if module.kind == 'mpi' and not facts.get('mpicc'):
                cands = [os.path.join(p, 'bin', 'mpicc') for p in (prefix, root) if p] + [shutil.which('mpicc')]
                facts['mpicc'] = next((c for c in cands if c and os.access(c, os.X_OK)), None)
            if module.kind == 'python' and not facts.get('python'):
                cands = [os.path.join(p, 'bin', 'python3') for p in (prefix, root) if p]
                facts['python'] = next((c for c in cands if os.access(c, os.X_OK)), None)
            facts = {k: v for k, v in facts.items() if v is not None}
            completed.append(dataclasses.replace(module, prefix=prefix, facts=facts))
        self.log.info("central stack: %s", ', '.join('%s (%s, %s)' % (m.name, m.kind, m.prefix) for m in completed))
        return lib.stack.CentralStack(stack.module_system, tuple(completed))

    def explain_plan_error(self, err, stack):
        """A rule package whose central library is missing: name the module to add."""
        text = err.one_line()
        match = re.search(r"no (\w+) module is loaded", err.message)
        if match:
            kind = match.group(1)
            package = err.message.split(' ', 1)[0]
            hint = self.suggest(kind)
            return ("%s is compiled from source against the site's %s (envmod's build rules), but no dependency "
                    "of %s provides one: add %s to dependencies%s" % (
                        package, kind.upper(), self.env_name, hint or ('a %s module' % kind),
                        '' if hint else ' (none found on $MODULEPATH)'))
        return "envmod cannot build %s: %s" % (self.env_name, text)

    def check_rule_modules(self, plan, stack):
        """Rule packages named directly must compile against modules that are dependencies."""
        lib = self.library()
        direct = set(self.dep_module_names())
        names = lib.check_requirements(list(plan.request.packages))
        with self.envmod_errors("envmod build rules"):
            builds = lib.direct_rule_packages(names, plan.rules, stack)
        self.fail_if_not_dependencies({m.name: ['%s is compiled against it' % b.package]
                                       for b in builds for m in b.modules if m.name not in direct})

    def fail_if_not_dependencies(self, missing):
        if not missing:
            return
        lines = []
        for module, why in sorted(missing.items()):
            lines.append("%s (%s)" % (module, '; '.join(why[:3]) + (', ...' if len(why) > 3 else '')))
        add = ', '.join(dependency_spec(m, self.is_external(m)) for m in sorted(missing))
        raise EasyBuildError("%s uses central modules that are not among its dependencies: %s. Add to "
                             "dependencies: %s", self.env_name, '; '.join(lines), add)

    def build_step(self):
        """Nothing to build apart from the install (pip compiles while installing)."""

    def install_step(self):
        """Create the environment in the install dir and install the packages (envmod's library)."""
        if self.dry_run:
            self.dry_run_msg("envmod: create a %s environment in %s over the Python dependency's interpreter",
                             self.cfg['backend'], self.installdir)
            packages, requirements = self.as_list('packages') or [], self.as_list('requirements') or []
            if packages or requirements:
                self.dry_run_msg("envmod: pip install %s (rule packages from source, with their build "
                                 "environment filled in from the loaded modules)",
                                 ' '.join(packages + ['-r %s' % r for r in requirements]))
            self.dry_run_msg("envmod: write the environment record %s", os.path.join(self.installdir, RECORD_FILE))
            return
        if self.plan is None:
            raise EasyBuildError("UserEnv: no plan (the configure step did not run)")
        target = os.path.realpath(self.installdir)
        log_path = os.path.join(self.builddir, 'envmod-build.log')
        self.reporter.open_log(Path(log_path))
        try:
            with self.envmod_errors("envmod could not build %s" % self.env_name):
                self.record = self.session.build(self.plan, Path(target), Path(target), self.system)
        finally:
            self.reporter.close_log()
        with open(log_path, encoding='utf-8', errors='replace') as fh:
            self.log.info("envmod build log (%s):\n%s", log_path, fh.read())

    def post_processing_step(self):
        """Check what the environment links against the dependencies; write the record."""
        super().post_processing_step()
        if self.dry_run:
            self.dry_run_msg("envmod: scan the environment's ELF files; a central library from a module that is "
                             "not a dependency fails the build, a dependency nothing uses is a warning")
            self.dry_run_msg("envmod: register the environment as %s with envmod", self.env_name)
            return
        if self.record is None:
            raise EasyBuildError("UserEnv: no environment record (the install step did not run)")
        self.check_dependencies_used()
        self.write_record()

    def check_dependencies_used(self):
        lib = self.library()
        direct = self.dep_module_names()
        python_dep = self.python_dependency()['full_mod_name']
        used = {python_dep: ['the interpreter']}
        missing = {}
        for pkg in self.record.packages:
            for module in pkg.built_against:
                used.setdefault(module, []).append('%s compiled against it' % pkg.name)
                if module not in direct:
                    missing.setdefault(module, []).append('%s is compiled against it' % pkg.name)
        if lib.elf is None:
            self.log.info("envmod's library has no ELF scanner: dependencies checked from the build record only")
        else:
            report = self.scan()
            for module, links in report.used.items():
                used.setdefault(module, []).append('linked')
            for module, links in list(report.direct.items()) + list(report.unloaded.items()):
                if module not in direct:
                    missing.setdefault(module, []).extend('%s needs %s' % link for link in links)
            for needer, soname in report.not_found[:10]:
                print_warning("envmod scan: %s needs %s, which neither the dependencies nor the system "
                              "provide", needer, soname, log=self.log, silent=self.silent)
            print_msg("envmod scan: %d ELF files; central modules linked: %s" % (
                report.files, ', '.join(sorted(report.used)) or 'none'), log=self.log, silent=self.silent)
        self.fail_if_not_dependencies(missing)
        for module in direct:
            if module not in used:
                print_warning("dependency %s is not used by %s: no package was compiled against it and nothing "
                              "in the environment links to it (it is still loaded with the module)",
                              module, self.env_name, log=self.log, silent=self.silent)

    def scan(self):
        lib = self.library()
        stack = self.plan.stack
        mpicc_dirs = {}

        def libdirs_of(module):
            mpicc = module.facts.get('mpicc') if module.kind == 'mpi' else None
            if mpicc and mpicc not in mpicc_dirs:
                mpicc_dirs[mpicc] = compiler_libdirs(mpicc)
            return mpicc_dirs.get(mpicc, []) if mpicc else []

        ownership = ModuleOwnership(stack.modules, install_roots(os.environ.get('MODULEPATH')), libdirs_of)
        python = os.path.join(self.installdir, 'bin', 'python')

        def on_error(path, err):
            self.log.info("envmod scan: skipped %s: %s", path, err)

        try:
            report = scan_links(lib.elf, self.installdir, python, ownership,
                                ld_library_path=os.environ.get('LD_LIBRARY_PATH', ''), on_error=on_error)
        except (AttributeError, TypeError) as err:   # a scanner with another interface
            print_warning("envmod's ELF scanner could not be used (%s): dependencies checked from the build "
                          "record only", err, log=self.log, silent=self.silent)
            return LinkReport()
        self.log.info("envmod scan: used %s; direct %s; unloaded %s; not found %s", report.used, report.direct,
                      report.unloaded, report.not_found)
        return report

    def write_record(self):
        lib = self.library()
        record = self.record
        record.module.name = self.full_mod_name
        record.module.type = self.module_type
        record.module.depends_on = self.dep_module_names()
        record.module.files = {self.module_type: self.mod_filepath}
        log_dir = os.path.join(self.installdir, 'easybuild')
        mkdir(log_dir, parents=True)
        final_log = os.path.join(log_dir, 'envmod-build.log')
        build_log = os.path.join(self.builddir, 'envmod-build.log')
        if os.path.exists(build_log):
            shutil.copy2(build_log, final_log)
            record.created.log = final_log
        with self.envmod_errors("envmod could not write the record"):
            path = lib.record.write_record(record)
        self.log.info("envmod record written: %s", path)

    def make_module_pythonpath(self):
        """A venv's python finds its own site-packages: no $PYTHONPATH, no $EBPYTHONPREFIXES."""
        return []

    def make_module_extra(self, *args, **kwargs):
        """envmod's extras: the venv, no user site, which env and record, one envmod env at a time."""
        txt = super().make_module_extra(*args, **kwargs)
        gen = self.module_generator
        txt += gen.set_environment('VIRTUAL_ENV', '', relpath=True)
        txt += gen.set_environment('PYTHONNOUSERSITE', '1')
        txt += gen.set_environment('ENVMOD_ENV', self.env_name)
        txt += gen.set_environment('ENVMOD_RECORD', RECORD_FILE, relpath=True)
        txt += self.family_guard()
        return txt

    def family_guard(self):
        """Two envmod environments on one PATH would shadow each other (as envmod's own modules)."""
        if self.module_generator.SYNTAX == 'Tcl':
            return '\n'.join([
                '',
                '# Two envmod environments on one PATH would shadow each other.',
                'if {[info commands family] ne {}} {',
                '    family %s' % ENVMOD_FAMILY,
                '} elseif {[module-info mode load] && [info exists ::env(ENVMOD_ENV)] && '
                '$::env(ENVMOD_ENV) ne {%s}} {' % self.env_name,
                '    error "envmod environment $::env(ENVMOD_ENV) is already loaded: unload it first"',
                '}',
                '',
            ])
        return '\n-- Two envmod environments on one PATH would shadow each other: Lmod swaps them instead.\n' \
               'family("%s")\n' % ENVMOD_FAMILY

    def make_module_step(self, fake=False):
        modpath = super().make_module_step(fake=fake)
        if not fake:
            if self.dry_run:
                if self.cfg['envmod_register']:
                    self.dry_run_msg("envmod: register %s -> %s under the envmod root", self.env_name, self.installdir)
            else:
                self.update_record_module()
                if self.cfg['envmod_register']:
                    self.register()
        return modpath

    def update_record_module(self):
        """--module-only may write the module elsewhere (--installpath-modules): keep the record in step."""
        lib = self.library()
        path = os.path.join(self.installdir, RECORD_FILE)
        if not os.path.isfile(path):
            print_warning("no envmod record in %s: rebuild the environment (--rebuild) so envmod sees it",
                          self.installdir, log=self.log, silent=self.silent)
            return
        with self.envmod_errors("envmod record %s" % path):
            record = lib.record.read_record(Path(path))
            wanted = ({self.module_type: self.mod_filepath}, self.module_type, self.full_mod_name,
                      self.dep_module_names())
            if (record.module.files, record.module.type, record.module.name, record.module.depends_on) != wanted:
                record.module.files, record.module.type, record.module.name, record.module.depends_on = wanted
                if os.access(self.installdir, os.W_OK):
                    lib.record.write_record(record)
                    self.log.info("envmod record updated for module %s", self.mod_filepath)

    def register(self):
        """A symlink <envmod root>/envs/<name> -> install dir: `envmod list/show` read the record there."""
        lib = self.library()
        try:
            settings = lib.config.load_settings()
            store = lib.store.Store(settings)
            link = store.env_path(self.env_name)
        except lib.errors.EnvmodError as err:
            print_warning("not registered with envmod: %s", err.one_line(), log=self.log, silent=self.silent)
            return
        target = os.path.realpath(self.installdir)
        if os.path.islink(link):
            if os.path.realpath(link) == target:
                return
        elif os.path.exists(link):
            print_warning("not registered with envmod: an environment named %s already exists at %s",
                          self.env_name, link, log=self.log, silent=self.silent)
            return
        try:
            os.makedirs(os.path.dirname(link), exist_ok=True)
            tmp = '%s.eb-%d' % (link, os.getpid())
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(target, tmp)
            os.replace(tmp, link)
        except OSError as err:
            print_warning("not registered with envmod (%s): %s", link, err, log=self.log, silent=self.silent)
            return
        print_msg("envmod: registered as %s ('envmod show %s')" % (link, self.env_name), log=self.log,
                  silent=self.silent)

    # ---- sanity check -----------------------------------------------------------------------
    def import_names(self):
        """Top-level modules of the requested packages (from their installed metadata)."""
        if self.cfg['sanity_imports'] is not None:
            return self.as_list('sanity_imports')
        requested = []
        record_path = os.path.join(self.installdir, RECORD_FILE)
        if not self.dry_run and os.path.isfile(record_path):
            try:
                record = self.library().record.read_record(Path(record_path))
                requested = [p.name for p in record.packages if p.requested]
            except Exception as err:  # the sanity check reports what it can
                self.log.warning("cannot read %s: %s", record_path, err)
        if not requested:
            requested = [re.split(r'[\s<>=!~;\[@]', p.strip(), 1)[0] for p in self.as_list('packages') or []
                         if p.strip() and '://' not in p and not os.path.exists(p)]
        names = []
        for dist in requested:
            for module in self.top_level_modules(dist):
                if module not in names:
                    names.append(module)
        return names

    def top_level_modules(self, dist):
        canonical = re.sub(r'[-_.]+', '_', dist).lower()
        pattern = os.path.join(self.installdir, 'lib', 'python*', 'site-packages', '*.dist-info')
        for info in glob.glob(pattern):
            if os.path.basename(info).split('-', 1)[0].lower().replace('.', '_') != canonical:
                continue
            top = os.path.join(info, 'top_level.txt')
            if os.path.isfile(top):
                with open(top, encoding='utf-8') as fh:
                    found = [line.strip() for line in fh if line.strip() and not line.startswith('_')]
                if found:
                    return found
            record = os.path.join(info, 'RECORD')
            if os.path.isfile(record):
                with open(record, encoding='utf-8') as fh:
                    tops = []
                    for line in fh:
                        first = line.split(',', 1)[0].split('/', 1)
                        if len(first) == 2 and first[1] == '__init__.py' and first[0] not in tops:
                            tops.append(first[0])
                if tops:
                    return tops
        return [canonical]

    def sanity_check_step(self, *args, **kwargs):
        """The env's files, then the packages imported inside the new module."""
        custom_paths = {'files': ['bin/python', 'pyvenv.cfg', RECORD_FILE], 'dirs': ['lib']}
        real = os.path.realpath(self.installdir)
        # the module's python is the environment's
        check = ("import os, sys; sys.exit(0 if os.path.realpath(sys.prefix) == %r "
                 "else 'python is not the environment: ' + sys.prefix)" % real)
        custom_commands = ['python -c %s' % shlex.quote(check)]
        custom_commands += ['python -c %s' % shlex.quote('import %s' % name) for name in self.import_names()]
        return super().sanity_check_step(custom_paths=custom_paths, custom_commands=custom_commands)
