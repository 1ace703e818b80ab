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
             install the packages (rule packages compiled from source, see envmod's build rules),
             scan what its ELF files link (envmod's evidence)
* postproc   hold that evidence against the dependencies: a central module the environment uses
             that is not a dependency (loaded through another module, or installed under an
             EasyBuild tree on $MODULEPATH and not loaded) fails the build naming the module to
             add; a dependency nothing uses is a warning. Then write the record.
* sanity     import the requested packages inside the new module
* module     EasyBuild writes the module (its depends_on lines); this easyblock adds what every
             envmod module sets (VIRTUAL_ENV, PYTHONNOUSERSITE, ENVMOD_ENV/ENVMOD_RECORD) and
             envmod's family guard, both from the library, then registers the environment with
             envmod (a symlink <envmod root>/envs/<name> -> install dir)

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
import sys
from pathlib import Path

from easybuild.framework.easyblock import EasyBlock
from easybuild.framework.easyconfig import CUSTOM
from easybuild.tools.build_log import EasyBuildError, print_msg, print_warning
from easybuild.tools.filetools import convert_name, mkdir

RECORD_FILE = 'envmod.yaml'
# envmod's own dependencies (pyproject.toml's [project] dependencies, kept equal by a test): the
# module each is imported as, and its pip requirement. The library imports them only when a step
# needs them, so importing it proves nothing: they are looked for up front.
LIBRARY_DEPENDENCIES = (
    ('jinja2', 'jinja2>=3.0'),
    ('yaml', 'pyyaml>=5.4'),
    ('packaging', 'packaging>=21'),
    ('archspec', 'archspec>=0.2'),
)
if sys.version_info < (3, 11):
    LIBRARY_DEPENDENCIES += (('tomli', 'tomli>=1.1'),)
LIBRARY_HINT = ("make envmod importable by the Python running EasyBuild (%s): install it there "
                "(%s -m pip install /path/to/envmod), or set $ENVMOD_LIBRARY to an envmod checkout "
                "(or its src directory) whose dependencies (PyYAML, Jinja2, packaging, archspec) that Python has")


class LibraryDependenciesMissing(ImportError):
    """envmod's library is importable, but not the packages it needs."""

    def __init__(self, where, requirements):
        super().__init__("envmod's library at %s needs %s" % (where, ', '.join(requirements)))
        self.where = where
        self.requirements = requirements


def missing_library_dependencies():
    """The pip requirements of envmod's dependencies the running Python cannot import."""
    import importlib.util
    return [req for module, req in LIBRARY_DEPENDENCIES if importlib.util.find_spec(module) is None]


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
    except ImportError as err:
        raise ImportError("%s (looked in: %s)" % (err, ', '.join(tried))) from err
    missing = missing_library_dependencies()
    if missing:
        raise LibraryDependenciesMissing(os.path.dirname(bridge.__file__), missing)
    try:
        from bridge import config, errors, session
        from bridge.build import environment_file, rules
        from bridge.build.backends import get_backend
        from bridge.build.install import check_requirements, direct_rule_packages, requirement_name
        from bridge.discover import stack
        from bridge.emit import modulefile
        from bridge.progress import Reporter
        from bridge.scan import evidence
        from bridge.store import record
        from bridge.store import root as store
    except ImportError as err:
        raise ImportError("%s (looked in: %s)" % (err, ', '.join(tried))) from err
    # A library older than this easyblock (a site's copy not reinstalled) would fail mid-build.
    lacking = [name for name, have in [
        ('evidence.check_declared_modules', hasattr(evidence, 'check_declared_modules')),
        ('rules.select_rules', hasattr(rules, 'select_rules')),
        ('store.Store.register', hasattr(store.Store, 'register')),
        ('emit.modulefile.render_conflict', hasattr(modulefile, 'render_conflict')),
        ('errors.MissingCentralKind', hasattr(errors, 'MissingCentralKind')),
        ('emit.modulefile.conda_setenv', hasattr(modulefile, 'conda_setenv')),
    ] if not have]
    if lacking:
        raise ImportError("the envmod library at %s is older than this easyblock (it lacks %s)"
                          % (os.path.dirname(bridge.__file__), ', '.join(lacking)))
    ns = dict(bridge=bridge, config=config, errors=errors, evidence=evidence, record=record, rules=rules,
              environment_file=environment_file,
              session=session, stack=stack, store=store, modulefile=modulefile, get_backend=get_backend,
              check_requirements=check_requirements, direct_rule_packages=direct_rule_packages,
              requirement_name=requirement_name, Reporter=Reporter)
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


def dependency_spec(module_name, external=False):
    """How to write a module as an easyconfig dependency."""
    if external or '/' not in module_name:
        return "('%s', EXTERNAL_MODULE)" % module_name
    name, version = module_name.split('/', 1)
    return "('%s', '%s')" % (name, version)


class UserEnv(EasyBlock):
    """An envmod user environment (a venv over the central Python) built by envmod's library."""

    @staticmethod
    def extra_options(extra_vars=None):
        """Custom easyconfig parameters of UserEnv (see `eb -a -e UserEnv`)."""
        extra = {
            'backend': ['venv', "How the environment is made, one of envmod's backends: 'venv' (a virtual "
                        "environment over the Python dependency's interpreter), 'uv' (uv venv, ordinary "
                        "packages installed by uv pip; needs uv), 'conda' (a conda env made by the conda of a "
                        "dependency, e.g. the site's conda module) or 'rattler' (a conda env made by py-rattler)",
                        CUSTOM],
            'conda_packages': [[], "conda packages (match specs, e.g. ['numpy=1.26']) of a 'conda' or 'rattler' "
                               "environment; 'packages' are installed by pip inside it", CUSTOM],
            'conda_channels': [[], "conda channels of a 'conda' or 'rattler' environment, in priority order "
                               "(default: envmod's 'conda_channels:' config, else conda's own)", CUSTOM],
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
            'use_wheel_cache': [True, "Reuse mpi4py/h5py/... wheels envmod compiled earlier against the same "
                                "central libraries (envmod's wheel cache); False compiles every rule package "
                                "again, as 'envmod create --no-wheel-cache' does", CUSTOM],
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
            except LibraryDependenciesMissing as err:
                pip = ' '.join([sys.executable, '-m', 'pip', 'install'] + [shlex.quote(r) for r in err.requirements])
                raise EasyBuildError("UserEnv cannot use envmod's library at %s: the Python running EasyBuild (%s) "
                                     "lacks its dependencies %s: install them with: %s", err.where, sys.executable,
                                     ', '.join(err.requirements), pip) from None
            except ImportError as err:
                raise EasyBuildError("UserEnv cannot import envmod's library: %s; " + LIBRARY_HINT,
                                     err, sys.executable, sys.executable) from None
            self.log.info("envmod library %s from %s", self.lib.bridge.__version__,
                          os.path.dirname(self.lib.bridge.__file__))
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
        """Whether a module to add is not one EasyBuild built: it must then be an EXTERNAL_MODULE
        dependency. EasyBuild's own modules set $EBROOT<NAME>; one that is not loaded was found
        in an EasyBuild install tree."""
        stack = self.plan.stack if self.plan else None
        module = next((m for m in stack.modules if m.name == module_name), None) if stack else None
        if module is None:
            return False
        return not any(var.startswith('EBROOT') for var in module.prefixes)

    def python_dependency(self):
        """(dependency, its python3) of the Python dependency; fails naming what to add."""
        lib = self.library()
        table = lib.stack.load_kind_table()
        for dep in self.runtime_deps():
            meta = dep.get('external_module_metadata') or {}
            # (an EXTERNAL_MODULE dependency has no name of its own: its metadata may give one)
            names = [n for n in [dep['name'], dep['full_mod_name']] + list(meta.get('name') or []) if n]
            if any(lib.stack.classify(n, {}, table) == 'python' for n in names):
                return dep
        raise EasyBuildError("UserEnv needs the central Python among the dependencies: add one, e.g. %s",
                             self.suggest('python') or "('Python', '3.11.2')")

    @staticmethod
    def is_module_of(module, dep):
        """Whether a loaded module is this dependency (an external one may be named without its version)."""
        return module.name == dep['full_mod_name'] or module.name.startswith(dep['full_mod_name'] + '/')

    def dependency_of(self, module):
        return next((d for d in self.runtime_deps() if self.is_module_of(module, d)), None)

    def stack_module(self, dep, stack):
        return next((m for m in stack.modules if self.is_module_of(m, dep)), None)

    def software_root(self, dep):
        from easybuild.tools.modules import get_software_root
        meta = dep.get('external_module_metadata') or {}
        for name in [n for n in [dep['name']] + list(meta.get('name') or []) if n]:
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

    def source_rules(self):
        """The build rules for this env: the library's table, or the part compile_against_stack names."""
        lib = self.library()
        with self.envmod_errors("easyconfig parameter 'compile_against_stack'"):
            return lib.rules.select_rules(lib.rules.load_rules(self.settings().build_rules),
                                          self.as_list('compile_against_stack'))

    def settings(self):
        lib = self.library()
        with self.envmod_errors("envmod configuration"):
            return lib.config.load_settings()

    def requested_names(self):
        """The distribution names the easyconfig asks for: its packages and its requirements files'
        lines (pip options and URLs left to pip)."""
        lib = self.library()
        texts = list(self.as_list('packages') or [])
        for path in self.requirement_files():
            with open(path, encoding='utf-8') as fh:
                texts += [line.split(' #', 1)[0].strip() for line in fh]
        texts = [t for t in texts if t and not t.startswith(('#', '-'))]
        with self.envmod_errors("easyconfig parameter 'packages'"):
            return lib.check_requirements(texts)

    def missing_kind_message(self, package, kind):
        hint = self.suggest(kind)
        return ("%s is compiled from source against the site's %s (envmod's build rules), but no dependency "
                "of %s provides one: add %s to dependencies%s" % (
                    package, kind.upper(), self.env_name, hint or ('a %s module' % kind),
                    '' if hint else ' (none found on $MODULEPATH)'))

    def check_rule_kinds_by_name(self):
        """What the configure step finds in the loaded modules, told from the dependencies' names
        (a dry run loads nothing): a requested rule package needs a dependency of each kind it
        compiles against. Only when every dependency's kind shows in its name: one that does not
        (a site's own module name) may be that kind, and the real build finds out."""
        lib = self.library()
        table = lib.stack.load_kind_table()
        kinds = set()
        for dep in self.runtime_deps():
            meta = dep.get('external_module_metadata') or {}
            names = [n for n in [dep['name'], dep['full_mod_name']] + list(meta.get('name') or []) if n]
            known = {lib.stack.classify(n, {}, table) for n in names} - {'other'}
            if not known:
                return
            kinds |= known
        rules = self.source_rules()
        for name in self.requested_names():
            for kind in (rules[name].against if name in rules else ()):
                if kind not in kinds:
                    raise EasyBuildError("%s", self.missing_kind_message(name, kind))

    def is_conda(self):
        """A conda or rattler env: conda packages, its own Python (a Python dependency is optional)."""
        return self.cfg['backend'] in ('conda', 'rattler')

    def check_easyconfig(self):
        """What the easyconfig alone decides, checked before anything is loaded or created."""
        lib = self.library()
        with self.envmod_errors("easyconfig parameter 'backend'"):
            backend = lib.get_backend(self.cfg['backend'], self.settings())
            if self.cfg['backend'] != 'conda':     # conda comes with a dependency, loaded later
                backend.check()
        if (self.as_list('conda_packages') or self.as_list('conda_channels')) and not self.is_conda():
            raise EasyBuildError("conda_packages and conda_channels need backend = 'conda' or 'rattler', not %r",
                                 self.cfg['backend'])
        with self.envmod_errors("easyconfig parameter 'conda_packages'"):
            for spec in self.as_list('conda_packages') or []:
                lib.environment_file.check_conda_spec(spec, "conda_packages entry", self.as_list('conda_channels') or
                                                      list(self.settings().conda_channels) or [])
        if not self.cfg['system_site_packages']:
            raise EasyBuildError("system_site_packages = False is not supported yet: envmod's venv backend "
                                 "always lets the environment see the central Python's site-packages (it uses "
                                 "the central pip from there)")
        if not (self.cfg['packages'] or self.cfg['requirements']):
            self.log.info("no packages requested: the environment holds only the central Python's packages")
        self.source_rules()     # a bad compile_against_stack fails here, before anything is loaded
        if not self.is_conda():
            self.python_dependency()
        self.requirement_files()

    def run_all_steps(self, *args, **kwargs):
        """A dry run (-x) turns the steps' errors into warnings and ends in SUCCESS: what a real
        build refuses from the easyconfig alone is refused here, before the steps, instead."""
        if self.dry_run:
            self.check_easyconfig()
            self.check_rule_kinds_by_name()
        return super().run_all_steps(*args, **kwargs)

    # ---- steps ------------------------------------------------------------------------------
    def check_readiness_step(self):
        super().check_readiness_step()
        self.check_easyconfig()

    def configure_step(self):
        """Discover the central stack from the loaded dependency modules and plan the environment."""
        lib = self.library()
        if self.dry_run:
            python = self.python_dependency()['full_mod_name']
            self.dry_run_msg("envmod: plan a %s environment over %s's python3 (the central stack is the loaded "
                             "dependency modules: %s)", self.cfg['backend'], python,
                             ', '.join(self.dep_module_names()))
            names = ', '.join(r.package + (' (against %s)' % '/'.join(r.against) if r.against else '')
                              for r in self.source_rules().values())
            self.dry_run_msg("envmod: compiled from source against the stack, when requested: %s", names or 'none')
            return

        settings = self.settings()
        try:
            python_dep = self.python_dependency()
        except EasyBuildError:
            if not self.is_conda():
                raise
            python_dep = None       # a conda env brings its own Python
        root = self.software_root(python_dep) if python_dep else None
        python_exe = os.path.join(root, 'bin', 'python3') if root else None
        request = lib.session.CreateRequest(
            name=self.env_name, packages=self.as_list('packages') or [],
            requirement_files=self.requirement_files(), python=python_exe,
            description=' '.join((self.cfg['description'] or '').split()), module_type=self.module_type,
            force=True, backend=self.cfg['backend'], module_name=self.full_mod_name,
            source_builds=self.as_list('compile_against_stack'), use_wheel_cache=bool(self.cfg['use_wheel_cache']),
            conda_specs=self.as_list('conda_packages') or [], conda_channels=self.as_list('conda_channels') or [])
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
        try:
            plan = self.session.plan(system, stack)
        except lib.errors.PlanError as err:
            raise EasyBuildError("%s", self.explain_plan_error(err, stack)) from None
        except lib.errors.EnvmodError as err:
            raise EasyBuildError("envmod could not plan %s: %s", self.env_name, err.one_line()) from None
        if plan.python_module is None and python_dep is not None and plan.python is not None:
            # An external Python module that puts nothing on PATH: the interpreter is still the
            # Python dependency's (its prefix came from the metadata), and the record says so.
            plan = dataclasses.replace(plan, python_module=self.stack_module(python_dep, stack))
        self.plan = plan
        builds = self.check_rule_modules(plan, stack)
        compiled = ['%s (against %s%s)' % (b.package, ', '.join(b.module_names) or 'nothing in particular',
                                          ''.join('; %s=%s' % kv for kv in sorted(b.env.items())))
                    for b in builds]
        others = sorted(set(plan.rules) - {b.package for b in builds})
        over = ('its own Python' if plan.python is None else '%s (Python %s)' % (
            plan.python_module.name if plan.python_module else plan.python.executable, plan.python.version))
        print_msg("envmod: %s over %s; compiled against the stack: %s%s" % (
            request.backend, over, ', '.join(compiled) or 'none of the requested packages',
            ('; also %s, if a requested package requires it' % ', '.join(others)) if others else ''),
            log=self.log, silent=self.silent)
        if not self.cfg['use_wheel_cache']:
            print_msg("envmod: use_wheel_cache = False: no compiled wheel is reused", log=self.log, silent=self.silent)

    def archive_requirement_files(self):
        """The requirements files go into EasyBuild's reprod directory, archived with the easyconfig
        (<installdir>/easybuild/reprod/requirements/): the easyconfig alone cannot rebuild the env."""
        files = self.requirement_files()
        # EasyBuild names it reprod or, when that exists, reprod_<time>_<pid>; it holds this easyconfig
        made = [d for d in glob.glob(os.path.join(os.path.dirname(self.logfile), 'reprod*'))
                if os.path.isfile(os.path.join(d, self.cfg.filename()))]
        if not files or not made:
            return
        reprod = max(made, key=os.path.getmtime)
        target = os.path.join(reprod, 'requirements')
        mkdir(target, parents=True)
        used = set()
        for path in files:
            name = os.path.basename(path)
            if name in used:            # two files of one name from different directories
                name = '%d-%s' % (len(used), name)
            used.add(name)
            dest = os.path.join(target, name)
            shutil.copy2(path, dest)
            self.log.info("requirements file %s archived as %s", path, dest)

    def complete_stack(self, stack):
        """Fill in what EasyBuild knows and the modules may not say: prefixes ($EBROOT*) and tools.

        Debian's OpenMPI through SystemMPI puts nothing on PATH (it is /usr), so its mpicc is
        found from $EBROOTOPENMPI; external modules get their prefix from the metadata.
        """
        lib = self.library()
        table = lib.stack.load_kind_table()
        completed = []
        for module in stack.modules:
            dep = self.dependency_of(module)
            root = self.software_root(dep) if dep else None
            prefix = module.prefix or root
            kind = module.kind
            if kind == 'other' and dep:
                # an external module named as the site likes (cray-mpich, ...): its metadata names the software
                names = (dep.get('external_module_metadata') or {}).get('name') or []
                kind = next((k for k in (lib.stack.classify(n, {}, table) for n in names) if k != 'other'), kind)
            facts = dict(module.facts)
            if kind == 'mpi' and not facts.get('mpicc'):
                cands = [os.path.join(p, 'bin', 'mpicc') for p in (prefix, root) if p] + [shutil.which('mpicc')]
                facts['mpicc'] = next((c for c in cands if c and os.access(c, os.X_OK)), None)
            if kind == 'python' and not facts.get('python'):
                cands = [os.path.join(p, 'bin', 'python3') for p in (prefix, root) if p]
                facts['python'] = next((c for c in cands if os.access(c, os.X_OK)), None)
            facts = {k: v for k, v in facts.items() if v is not None}
            completed.append(dataclasses.replace(module, kind=kind, prefix=prefix, facts=facts))
        self.log.info("central stack: %s", ', '.join('%s (%s, %s)' % (m.name, m.kind, m.prefix) for m in completed))
        return lib.stack.CentralStack(stack.module_system, tuple(completed))

    def explain_plan_error(self, err, stack):
        """A rule package whose central library is missing: name the module to add."""
        text = err.one_line()
        if isinstance(err, self.library().errors.MissingCentralKind):
            return self.missing_kind_message(err.package, err.kind)
        return "envmod cannot build %s: %s" % (self.env_name, text)

    def check_rule_modules(self, plan, stack):
        """Rule packages named directly must compile against modules that are dependencies."""
        lib = self.library()
        direct = set(self.dep_module_names())
        names = lib.check_requirements(list(plan.request.packages))
        with self.envmod_errors("envmod build rules"):
            builds = lib.direct_rule_packages(names, plan.rules, stack)
        missing = {}
        for build in builds:
            for module in build.modules:
                if module.name not in direct:
                    missing.setdefault(module.name, []).append('%s is compiled against it' % build.package)
        self.fail_if_not_dependencies(missing)
        return builds

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
                self.dry_run_msg("envmod: scan the environment's ELF files: which module provides each library "
                                 "they load (the record's link evidence)")
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
        """Check what the environment uses against the dependencies; write the record."""
        super().post_processing_step()
        if self.dry_run:
            self.dry_run_msg("envmod: hold what the environment's ELF files link, and what its packages were "
                             "compiled against and require, against the dependencies: a module used that is not a "
                             "dependency fails the build, a dependency nothing uses is a warning")
            self.dry_run_msg("envmod: register the environment as %s with envmod", self.env_name)
            return
        if self.record is None:
            raise EasyBuildError("UserEnv: no environment record (the install step did not run)")
        self.check_dependencies_used()
        self.write_record()

    def check_dependencies_used(self):
        """envmod's evidence (what the scan found each ELF file loads, what each package was
        compiled against and requires) held against the dependencies."""
        lib = self.library()
        direct = self.dep_module_names()
        links = self.record.links
        # EasyBuild trees on $MODULEPATH: a library from one of their modules that is not loaded
        # (reached through an RPATH) is that module's, not the system's.
        roots = lib.evidence.easybuild_install_roots(os.environ.get('MODULEPATH', ''))
        check = lib.evidence.check_declared_modules(self.record, direct, roots)
        self.log.info("envmod evidence: %d links; install roots %s; undeclared %s; unused %s", len(links), roots,
                      dict(check.undeclared), list(check.unused))
        missing = sorted({e.needs for e in links if e.provider == lib.evidence.MISSING})
        for soname in missing[:10]:
            print_warning("envmod scan: the environment needs %s, which neither the dependencies nor the system "
                          "provide", soname, log=self.log, silent=self.silent)
        print_msg("envmod scan: %d compiled files; central modules linked: %s" % (
            len({e.file for e in links}), ', '.join(sorted(check.linked)) or 'none'), log=self.log, silent=self.silent)
        self.fail_if_not_dependencies(check.undeclared)
        for module in check.unused:
            print_warning("dependency %s is not used by %s: no package was compiled against it and nothing in the "
                          "environment links to it or requires a package from it (it is still loaded with the "
                          "module)", module, self.env_name, log=self.log, silent=self.silent)

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

    def installed_record(self):
        """The env's record: this build's, or (--module-only) the one in the install dir; None in a dry run."""
        if self.record is not None:
            return self.record
        path = os.path.join(self.installdir, RECORD_FILE)
        if self.dry_run or not os.path.isfile(path):
            return None
        with self.envmod_errors("envmod record %s" % path):
            return self.library().record.read_record(Path(path))

    def make_extension_list(self, formatted=True):
        """The env's packages, as a PythonBundle's extensions: EasyBuild writes them into the
        module as Lmod's extensions() (so 'module spider h5py' finds the env), its help text
        and $EBEXTSLIST<NAME>."""
        record = self.installed_record()
        return [(p.name, p.version) for p in record.packages] if record else []

    def make_module_extra(self, *args, **kwargs):
        """What every envmod module sets (the venv, no user site, which env and record) and its
        family guard, both from envmod's library, written through EasyBuild's generator."""
        txt = super().make_module_extra(*args, **kwargs)
        lib = self.library()
        gen = self.module_generator
        root = self.installdir.rstrip('/')
        record = self.installed_record()
        if record is not None and record.conda is not None:
            setenv = lib.modulefile.conda_setenv(self.env_name, root, record.conda.activate_env)
        else:
            setenv = lib.modulefile.module_setenv(self.env_name, root)
        for var, value in setenv:
            if value == root or value.startswith(root + '/'):
                # relative to the module's own root, as EasyBuild writes install paths
                rel = os.path.relpath(value, root)
                txt += gen.set_environment(var, '' if rel == '.' else rel, relpath=True)
            else:
                txt += gen.set_environment(var, value)
        extensions = self.make_extension_string(ext_sep=',', sort=False)
        if extensions:
            # as EasyBuild's make_module_extra_extensions writes it for an easyconfig with exts_list
            txt += gen.set_environment('EBEXTSLIST' + convert_name(self.name, upper=True), extensions)
        settings = self.settings()
        with self.envmod_errors("envmod's module templates"):
            txt += '\n' + lib.modulefile.render_conflict(self.module_type, self.env_name, settings.templates,
                                                         settings.cache_dir)
        return txt

    def make_module_step(self, fake=False):
        modpath = super().make_module_step(fake=fake)
        if not fake:
            if self.dry_run:
                if self.cfg['envmod_register']:
                    self.dry_run_msg("envmod: register %s -> %s under the envmod root", self.env_name, self.installdir)
            else:
                self.archive_requirement_files()
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
            store = lib.store.Store(lib.config.load_settings())
            before = store.registered_target(self.env_name)
            link = store.register(self.env_name, self.installdir)
        except lib.errors.EnvmodError as err:
            print_warning("not registered with envmod: %s", err.one_line(), log=self.log, silent=self.silent)
            return
        if before is not None and before != os.path.realpath(self.installdir):
            print_warning("envmod: %s was registered to another install, %s; it now names this one (%s)",
                          self.env_name, before, os.path.realpath(self.installdir), log=self.log, silent=self.silent)
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
            requested = [self.library().requirement_name(p) for p in self.as_list('packages') or []
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

    def sanity_check_rpath(self, rpath_dirs=None, check_readelf_rpath=None):
        """A conda env's binaries are conda's packages, linked by conda-build (relative RPATHs),
        never by EasyBuild's RPATH wrappers: only that their libraries resolve is checked."""
        if self.is_conda():
            self.log.info("conda env: no check of EasyBuild's RPATH section (readelf) on conda's binaries")
            check_readelf_rpath = False
        return super().sanity_check_rpath(rpath_dirs=rpath_dirs, check_readelf_rpath=check_readelf_rpath)

    def sanity_check_step(self, *args, **kwargs):
        """The env's files, then the packages imported inside the new module."""
        custom_paths = {'files': ['bin/python', 'conda-meta/history' if self.is_conda() else 'pyvenv.cfg', RECORD_FILE],
                        'dirs': ['lib']}
        real = os.path.realpath(self.installdir)
        # the module's python is the environment's
        check = ("import os, sys; sys.exit(0 if os.path.realpath(sys.prefix) == %r "
                 "else 'python is not the environment: ' + sys.prefix)" % real)
        custom_commands = ['python -c %s' % shlex.quote(check)]
        custom_commands += ['python -c %s' % shlex.quote('import %s' % name) for name in self.import_names()]
        return super().sanity_check_step(custom_paths=custom_paths, custom_commands=custom_commands)
