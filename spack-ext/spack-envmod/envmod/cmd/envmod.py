"""``spack envmod``: personal Python environments over the site's Spack-built (or Spack-registered)
Python, MPI and HDF5, exposed as modules that load exactly Spack's modules of what they were
built against. A thin front end: envmod's library (``bridge``) does the work, and the records
and modules it writes are those of the standalone ``envmod`` command (same root, same format).

Nothing heavy is imported at module level: Spack imports every command to list them.
"""

import argparse
import importlib.util
import os
import sys
from pathlib import Path

import spack.llnl.util.tty as tty

description = "personal Python environments over the site's Spack stack, as modules"
section = "user environment"
level = "long"

#: <checkout>/spack-ext/spack-envmod/envmod/cmd/envmod.py -> <checkout>
_CHECKOUT = Path(__file__).resolve().parents[4]


def _import_bridge():
    """envmod's library, from SPACK_PYTHON's packages or else from the source tree this
    extension sits in; if neither works, say exactly how to install it."""
    missing = None
    for attempt in ("installed", "checkout"):
        if attempt == "checkout":
            src = _CHECKOUT / "src"
            if not (src / "bridge" / "__init__.py").is_file() or str(src) in sys.path:
                break
            sys.path.insert(0, str(src))
        try:
            import bridge

            # found, not imported (cheap): the library's dependencies, and its Spack module,
            # which an envmod older than this extension lacks
            for needed in ("yaml", "jinja2", "packaging", "bridge.spack.stack", "bridge.frontends"):
                if importlib.util.find_spec(needed) is None:
                    raise ImportError(needed, name=needed)
            return bridge
        except ImportError as exc:
            missing = exc.name or str(exc)
            for name in [m for m in sys.modules if m == "bridge" or m.startswith("bridge.")]:
                del sys.modules[name]
    source = str(_CHECKOUT) if (_CHECKOUT / "pyproject.toml").is_file() else "<envmod source directory>"
    python = os.environ.get("SPACK_PYTHON") or sys.executable
    tty.die(f"spack envmod needs envmod's library importable by the Python that runs Spack "
            f"({python}), which cannot import '{missing}'. Install envmod into that Python:\n\n"
            f"    {python} -m pip install {source}\n\n"
            "(or set SPACK_PYTHON to a Python that has both envmod and Spack's requirements, such as clingo)")


def setup_parser(subparser: argparse.ArgumentParser) -> None:
    subparser.add_argument("--root", help="where envs and modules live (default: $ENVMOD_ROOT, envmod's "
                           "config, ~/.local/share/envmod), as for the standalone envmod")
    sub = subparser.add_subparsers(metavar="SUBCOMMAND", dest="envmod_command")

    p = sub.add_parser("create", help="create an environment over Spack's Python (MPI, HDF5) and write its module")
    p.add_argument("name", help="environment name (letters, digits, . _ -)")
    p.add_argument("--python", metavar="SPEC", help="the installed Python to use (default: the only one)")
    p.add_argument("--mpi", metavar="SPEC", help="the installed MPI to compile against, or 'none' "
                   "(default: the HDF5's MPI, or the only one)")
    p.add_argument("--hdf5", metavar="SPEC", help="the installed HDF5 to compile against, or 'none' (default: the only one)")
    p.add_argument("--with", dest="packages", nargs="+", default=[], metavar="PKG",
                   help="packages to install (pip requirement syntax); mpi4py, h5py, ... are compiled "
                   "against the chosen MPI/HDF5")
    p.add_argument("-r", "--requirements", dest="requirement_files", action="append", default=[], metavar="FILE",
                   type=Path, help="a pip requirements file (repeatable)")
    p.add_argument("--description", default="", metavar="TEXT", help="one line shown by 'module whatis'")
    p.add_argument("--module-type", choices=["lmod", "tcl"],
                   help="modulefile syntax, and whose Spack module names it loads "
                   "(default: envmod's config, else the module system in use, else the first the site enables)")
    p.add_argument("--backend", metavar="{venv,uv}",
                   help="how the environment is made: venv or uv (default: 'backend:' in envmod's config, else venv)")
    p.add_argument("--force", action="store_true", help="replace an existing environment")
    p.add_argument("--keep-loaded", action="store_true",
                   help="make the module load the whole chosen stack, not only the modules the env is proved to need")
    p.add_argument("--no-wheel-cache", dest="use_wheel_cache", action="store_false",
                   help="compile even when a cached build links exactly the same central libraries")
    p.add_argument("--from", dest="from_export", metavar="FILE", type=Path,
                   help="recreate an exported env (spack envmod export): its packages pinned, against the "
                   "specs of the DAG hashes it names (unless --python/--mpi/--hdf5 say otherwise)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the result")

    p = sub.add_parser("list", help="list environments")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("show", help="show an environment's record")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="the whole record as JSON")
    p.add_argument("--all-links", action="store_true", help="also show libraries from the system (libc, ...)")

    p = sub.add_parser("module", help="write an environment's modulefile again from its record")
    p.add_argument("name")
    p.add_argument("--module-type", choices=["lmod", "tcl"],
                   help="syntax to write (default: the one recorded); Spack's names for that type are used")

    p = sub.add_parser("remove", help="remove an environment and its modulefiles")
    p.add_argument("name")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")

    p = sub.add_parser("check", help="check that the Spack modules an environment loads are still the builds it was made with")
    p.add_argument("name", nargs="?")
    p.add_argument("--all", action="store_true", help="every environment")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("rebuild", help="after the site changed: compile again what an environment compiled "
                       "against it, against the modules as the site defines them now, and write its module again")
    p.add_argument("name")
    p.add_argument("--from-loaded", action="store_true",
                   help="build against the modules loaded in this shell (e.g. a replacement MPI) instead of the recorded ones")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the result")

    p = sub.add_parser("export", help="write an environment out so it can be recreated (packages pinned, "
                       "central modules and their DAG hashes named)")
    p.add_argument("name")
    p.add_argument("--format", choices=["yaml", "requirements"], default="yaml",
                   help="yaml: for 'envmod create --from' (default); requirements: pinned pip requirements")
    p.add_argument("-o", "--output", metavar="FILE", type=Path, help="write to FILE instead of standard output")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")

    sub.add_parser("root", help="print the envmod root (envs, modules, logs)")


# ------------------------------------------------------------------------------- subcommands


def _settings(args):
    from bridge.config import load_settings

    settings = load_settings()
    return settings.with_root(args.root) if args.root else settings


def _module_system():
    from bridge.errors import NoModuleSystem
    from bridge.discover.modsys import detect_module_system

    try:
        return detect_module_system(os.environ)
    except NoModuleSystem:
        return None


def _create(args) -> int:
    import spack.environment

    from bridge.spack import stack as ss
    from bridge.config import check_module_type
    from bridge.progress import Reporter
    from bridge.build.rules import load_rules
    from bridge.session import CreateRequest, CreateSession

    from spack.extensions.envmod import spackside

    if args.backend is not None:
        from bridge.build.backends import check_backend_name

        check_backend_name(args.backend)
    settings = _settings(args)
    system = _module_system()
    site = spackside.SpackSite(spack.environment.active_environment())
    module_type = ss.choose_module_type(args.module_type, settings.module_type, system, site.enabled)
    check_module_type(module_type)
    requested = {"python": args.python, "mpi": args.mpi, "hdf5": args.hdf5}
    exported, packages, description = None, list(args.packages), args.description
    if args.from_export is not None:
        from bridge.emit.export import read_export

        exported = read_export(args.from_export)
        packages = exported.requirements + packages
        description = description or exported.description
        requested = ss.requested_from_export(requested, exported.spack_hashes)
    args.packages = packages
    stack = spackside.central_stack(site, requested, module_type,
                                    need_libraries=bool(packages or args.requirement_files),
                                    module_system=system,
                                    needed=ss.roles_needed(packages, load_rules(settings.build_rules)))
    _rule_packages_have_their_stack(args, settings, stack, site.where)
    python = stack.first("python")
    if python is None or not python.facts.get("python"):
        from bridge.errors import NoPython

        raise NoPython(f"no interpreter found in the prefix of {python.facts.get('spack_spec') if python else 'the Python'}"
                       f" ({python.prefix if python else '?'})")
    request = CreateRequest(name=args.name, packages=packages, requirement_files=args.requirement_files,
                            python=python.facts["python"], description=description, module_type=module_type,
                            force=args.force, keep_loaded=args.keep_loaded, use_wheel_cache=args.use_wheel_cache,
                            front_end="spack", from_export=exported,
                            backend=args.backend or (exported and exported.backend) or settings.backend or "venv")
    record = CreateSession(request, settings, Reporter(quiet=args.quiet), stack=stack, module_system=system).run()
    print(f"created {record.name}: {record.backend} over {record.python.module or record.python.executable} "
          f"(Python {record.python.version})")
    modulepath = [p for p in os.environ.get("MODULEPATH", "").split(":") if p]
    needed = [p for p in ss.root_modulepaths(stack, record.module.depends_on) if p not in modulepath]
    uses = [str(settings.modules_dir)] if str(settings.modules_dir) not in modulepath else []
    use = f"module use {' '.join(uses + needed)}   (once)   then   " if uses or needed else ""
    print(f"load it with: {use}module load {record.module.name}")
    return 0


def _rule_packages_have_their_stack(args, settings, stack, where: str) -> None:
    """mpi4py without an MPI (h5py without an HDF5) in the chosen stack: say so in Spack's terms
    before anything is created (the library would say 'load your site's module')."""
    from bridge.errors import PlanError
    from bridge.build.install import check_requirements
    from bridge.build.rules import load_rules

    names = check_requirements(args.packages)
    rules = load_rules(settings.build_rules)
    have = {m.kind for m in stack.modules}
    for name in names:
        rule = rules.get(name)
        for kind in (rule.against if rule else ()):
            if kind not in have:
                given = getattr(args, kind, None)
                raise PlanError(f"{name} must be compiled against an {kind.upper()} but none was chosen"
                                + (f" (--{kind} {given})" if given else f": no {where} {kind} spec"),
                                hint=f"install one with Spack, or name one with --{kind} SPEC")


def _library_args(name: str, args) -> argparse.Namespace:
    """``args`` for the standalone command ``name``: its own parser's defaults, then ours, so an
    option the library adds later has its default here too."""
    from bridge import cli

    positional = [args.name] if getattr(args, "name", None) else []
    namespace = cli.build_parser().parse_args([name, *positional])
    for key, value in vars(args).items():
        if hasattr(namespace, key) or key == "root":
            setattr(namespace, key, value)
    return namespace


def _library_command(name: str, args) -> int:
    from bridge import cli

    return cli.COMMANDS[name](_library_args(name, args))


def _module(args) -> int:
    from bridge import cli
    from bridge.spack import stack as ss
    from bridge.store.record import write_record
    from bridge.store.root import Store

    settings = _settings(args)
    store = Store(settings)
    with store.lock(args.name, "renaming its central modules"):
        record = store.load(args.name)
        target = args.module_type or record.module.type
        before = list(record.module.depends_on)
        record = ss.with_module_type(record, target)
        if record.module.depends_on != before:
            write_record(record)
    return cli.cmd_module(_library_args("module", args))


def _check(args) -> int:
    """The library's check, run with the site's Spack module roots in MODULEPATH and with Spack's
    own database (upstreams included) telling which builds are still installed."""
    import json

    from bridge.spack import stack as ss
    from bridge.check import check_stored, combined_exit_code, format_report
    from bridge.errors import UsageError
    from bridge.store.names import validate_env_name
    from bridge.store.root import Store

    from spack.extensions.envmod import spackside

    if bool(args.name) == bool(args.all):
        raise UsageError("name one environment, or pass --all")
    if args.name:
        validate_env_name(args.name)
    store = Store(_settings(args))
    system = _module_system()
    site = spackside.SpackSite(None)

    def environ_for(record):
        return {**os.environ, "MODULEPATH": ss.modulepath_with_record(record, os.environ.get("MODULEPATH", ""))}

    # as the standalone check: an env that cannot be read is "could not check" (2), the rest go on
    reports = [check_stored(store, name, system, environ_for=environ_for, spack_installed=site.installed)
               for name in (store.names() if args.all else [args.name])]
    if args.json:
        print(json.dumps([r.to_dict() for r in reports] if args.all else reports[0].to_dict(), indent=2))
    else:
        print("\n".join(format_report(r) for r in reports) if reports else "no environments to check")
    return combined_exit_code(reports) if reports else 0


def envmod(parser, args):
    if not args.envmod_command:
        parser.print_help()
        return 2
    _import_bridge()
    from bridge.errors import EnvmodError
    from bridge.frontends import set_running

    set_running("spack")      # the library's hints name 'spack envmod ...'

    try:
        if args.envmod_command == "create":
            return _create(args)
        if args.envmod_command == "module":
            return _module(args)
        if args.envmod_command == "check":
            return _check(args)
        return _library_command(args.envmod_command, args)
    except EnvmodError as exc:
        tty.error(exc.one_line())
        return exc.exit_code
    except KeyboardInterrupt:
        tty.error("interrupted")
        return 130
