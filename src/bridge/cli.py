"""The ``envmod`` command: a thin front end over the library.

Imports of the heavier stages happen inside each command so ``envmod --help`` and the quick
commands start fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from . import __version__
from .errors import EnvmodError, UsageError

if TYPE_CHECKING:
    from .config import Settings

EXAMPLES = {
    "create": """example:
  module load python/3.11 openmpi/4.1.4 hdf5/1.10.8
  envmod create myenv --with mpi4py h5py --description "MPI + parallel HDF5 analysis"
  module use $(envmod root)/modules; module load myenv/py3.11""",
    "list": "example:\n  envmod list\n  envmod list --json | jq '.[].module'",
    "show": "example:\n  envmod show myenv\n  envmod show myenv --json",
    "check": "exit status: 0 healthy, 1 problems found, 2 could not check (no such env, unreadable record,\n"
             "module tool not working); with --all the worst over all envs, and 2 wins over 1: an env\n"
             "that could not be checked is never hidden by another's problems\nexample:\n  envmod check myenv\n  envmod check --all --json",
    "rebuild": "example (after 'envmod check myenv' reported drift):\n  envmod rebuild myenv\n  module load openmpi/5.0.5; envmod rebuild myenv --from-loaded",
    "module": "example (write the Tcl modulefile for an Environment Modules site):\n  envmod module myenv --module-type tcl\n"
              "example (your own module for a group-shared env):\n  envmod module teamenv --shared /proj/team/envmod",
    "remove": "example:\n  envmod remove myenv --yes",
    "root": "example:\n  module use $(envmod root)/modules",
    "pack": "example (after any change to the env, pack it again; 'envmod check' says when):\n  envmod pack myenv",
    "stage": """example (a batch script):
  envmod stage myenv
  trap 'envmod unstage myenv' EXIT
  module load myenv/py3.11
  srun --mpi=pmix python app.py""",
    "unstage": "example (in the batch script, before 'module load'):\n  trap 'envmod unstage myenv' EXIT",
    "kernel": """example:
  envmod kernel myenv --display-name "Python (myenv: MPI + HDF5)"   # in your Jupyter kernels
  envmod kernel myenv --prefix /project/jupyter                      # in /project/jupyter/share/jupyter/kernels""",
    "export": """example:
  envmod export myenv -o myenv.yaml              # then, elsewhere, with the same modules loaded:
  envmod create myenv --from myenv.yaml
  envmod export myenv --format requirements      # pinned pip requirements, modules in the header
  envmod export myenv --format bash -o myenv.sh  # no module system needed: . myenv.sh (also csh, fish)""",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 2, like every other envmod error
        self.exit(2, f"envmod: error: {message} (see '{self.prog} --help')\n")


def _create_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="environment name (letters, digits, . _ -)")
    p.add_argument("--with", dest="packages", nargs="+", default=[], metavar="PKG",
                   help="packages to install (pip requirement syntax); mpi4py, h5py, ... are compiled against the loaded modules")
    p.add_argument("-r", "--requirements", dest="requirement_files", action="append", default=[], metavar="FILE",
                   type=Path, help="a pip requirements file (repeatable)")
    p.add_argument("--python", metavar="EXE", help="the central Python (default: the first python3 a loaded module puts on PATH)")
    p.add_argument("--description", default="", metavar="TEXT", help="one line shown by 'module whatis' and 'module help'")
    p.add_argument("--module-type", choices=["lmod", "tcl"], help="modulefile syntax (default: that of the module system in use)")
    p.add_argument("--backend", metavar="{venv,uv,conda,rattler}",
                   help="how the environment is made: venv (python -m venv's layout, pip installs), uv "
                        "(uv venv, uv pip installs), conda (the site's conda, --conda packages; pip "
                        "packages inside it) or rattler (the same with py-rattler, no Anaconda tool) "
                        "(default: 'backend:' in the config, else venv)")
    p.add_argument("--conda", dest="conda_specs", nargs="+", action="extend", default=[], metavar="SPEC",
                   help="conda packages (match specs) of a --backend conda or rattler environment")
    p.add_argument("--allow-conda-mpi", action="store_true",
                   help="accept conda packages that bring conda's own MPI instead of the central one (recorded)")
    p.add_argument("--force", action="store_true", help="replace an existing environment (the old one stays usable until the new one is complete)")
    p.add_argument("--keep-loaded", action="store_true",
                   help="make the module load every module loaded now, not only those the env is proved to need")
    p.add_argument("--no-wheel-cache", dest="use_wheel_cache", action="store_false",
                   help="compile even when a cached build links exactly the same central libraries")
    p.add_argument("--from", dest="from_export", metavar="FILE", type=Path,
                   help="recreate an exported env (envmod export): its packages pinned, each central module it was "
                        "built against mapped to a compatible one of this site")
    p.add_argument("--map", dest="module_maps", action="append", default=[], metavar="KIND=MODULE",
                   help="with --from: use MODULE of this site for the export's module of KIND (python, mpi, hdf5, ...)")
    p.add_argument("--shared", metavar="DIR", type=Path,
                   help="make it a group-shared env in the shared root DIR (its group's, setgid; you alone may change it)")
    p.add_argument("--group", metavar="G", help="with --shared: the group to share it with (default: DIR's group, else yours)")
    p.add_argument("-f", "--file", dest="environment_file", metavar="FILE", type=Path,
                   help="conda's environment.yml: its channels and conda packages (conda, rattler backends) and "
                        "its 'pip:' section (any backend); its 'name:' is ignored, NAME wins")
    p.add_argument("--kernel", action="store_true",
                   help="also install a Jupyter kernel for it (as 'envmod kernel NAME' does); adds ipykernel to the packages")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the result")


def _list_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _show_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="the whole record as JSON")
    p.add_argument("--all-links", action="store_true", help="also show libraries from the system (libc, ...)")


def _check_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="the environment (or --all)")
    p.add_argument("--all", action="store_true", help="check every environment")
    p.add_argument("--json", action="store_true", help="machine-readable report")


def _rebuild_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name")
    p.add_argument("--from-loaded", action="store_true",
                   help="build against the modules loaded in this shell (e.g. a replacement MPI) instead of the recorded ones")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the result")


def _module_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name")
    p.add_argument("--module-type", choices=["lmod", "tcl"], help="syntax to write (default: the one recorded)")
    p.add_argument("--shared", metavar="DIR", type=Path,
                   help="write your own module, in your root, for the group-shared env NAME in the shared root DIR")


def _remove_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--force", action="store_true", help="remove a shared env even while members' modules point at it")


def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name")
    p.add_argument("--format", choices=["yaml", "requirements", "conda-yaml", "bash", "csh", "fish"], default="yaml",
                   help="yaml: for 'envmod create --from' (default); requirements: pinned pip requirements; "
                        "conda-yaml: conda's environment.yml of a conda or rattler env (also for 'create --from'); "
                        "bash, csh, fish: a script to source that sets what loading the env's module sets, "
                        "its central modules included, for use without a module system")
    p.add_argument("-o", "--output", metavar="FILE", type=Path, help="write to FILE instead of standard output")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")


def _pack_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name")
    p.add_argument("--format", choices=["squashfs", "tar.gz"],
                   help="the image's format (default: squashfs where mksquashfs is installed, else tar.gz)")


def _stage_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name")
    p.add_argument("--repack", action="store_true", help="pack the env again first when its image is stale")
    p.add_argument("--unpack", action="store_true", help="unpack the image on each node, never mount it with squashfuse")


def _unstage_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name")


def _kernel_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name")
    p.add_argument("--display-name", metavar="TEXT", help="the name Jupyter shows (default: 'NAME (MODULE)')")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="in your Jupyter data directory (default)")
    where.add_argument("--prefix", metavar="DIR", type=Path, help="in DIR/share/jupyter/kernels (a shared Jupyter's prefix)")


# Each command's one-line help and what adds its arguments, in the order 'envmod --help' lists them.
SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None] | None]] = {
    "create": ("create an environment over the loaded central Python and write its module", _create_arguments),
    "list": ("list environments", _list_arguments),
    "show": ("show an environment's record: Python, central modules, packages and how they were built",
             _show_arguments),
    "check": ("re-verify environments against the site as it is now (after maintenance)", _check_arguments),
    "rebuild": ("compile again what an environment compiled against the site, against the site as it is now",
                _rebuild_arguments),
    "module": ("write an environment's modulefile again from its record", _module_arguments),
    "remove": ("remove an environment and its modulefiles", _remove_arguments),
    "export": ("write an environment out so it can be recreated: packages pinned, central modules named",
               _export_arguments),
    "kernel": ("install a Jupyter kernel that loads the environment's module, then starts its Python", _kernel_arguments),
    "root": ("print the envmod root (envs, modules, logs)", None),
    "pack": ("pack an environment into one image (squashfs) that runs node-local in a Slurm job", _pack_arguments),
    "stage": ("in a Slurm job: put an environment's image on every node's local disk; its module then uses it",
              _stage_arguments),
    "unstage": ("in a Slurm job: release what 'stage' put on the nodes (the batch script's EXIT trap)",
                _unstage_arguments),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``envmod`` parser. With ``command``, it holds that command's subparser only: building
    every subcommand's parser is a measurable part of a create's start. Parsing a command line
    that names ``command`` gives the same result and the same errors either way; the top-level
    help and an unknown command's error need the whole parser (``command=None``)."""
    parser = _Parser(prog="envmod", description="Personal Python environments on top of your site's "
                     "central modules, exposed as Lmod or Tcl modules that load exactly what they were built against.",
                     epilog="run 'envmod COMMAND --help' for a command's options and an example")
    parser.add_argument("--version", action="version", version=f"envmod {__version__}")
    parser.add_argument("--root", help="where envs and modules live (default: $ENVMOD_ROOT, config, ~/.local/share/envmod)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (help_text, add_arguments) in SUBCOMMANDS.items():
        if command is not None and name != command:
            continue
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=EXAMPLES[name],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if add_arguments is not None:
            add_arguments(p)
    return parser


def _named_command(argv: Sequence[str]) -> str | None:
    """The command ``argv`` runs when it has the plain shape ``[--root DIR]... COMMAND ...``;
    None for anything else (help, --version, an abbreviated option, an unknown command), which
    the whole parser handles."""
    i = 0
    while i < len(argv) and (argv[i] == "--root" or argv[i].startswith("--root=")):
        if argv[i] == "--root":
            if i + 1 >= len(argv) or argv[i + 1].startswith("-"):
                return None
            i += 1
        i += 1
    return argv[i] if i < len(argv) and argv[i] in SUBCOMMANDS else None


def _settings(args):
    from .config import load_settings

    settings = load_settings()
    return settings.with_root(args.root) if args.root else settings


def _store(args):
    """The store under the root the settings (and ``--root``) name."""
    from .store.root import Store

    return Store(_settings(args))


@contextlib.contextmanager
def _locked(args, doing: str) -> Iterator[Any]:
    """The store, with the env ``args.name`` locked against other envmod runs while ``doing``."""
    store = _store(args)
    with store.lock(args.name, doing):
        yield store


def cmd_create(args) -> int:
    from .progress import Reporter
    from .session import CreateRequest, CreateSession

    if args.backend is not None:
        from .build.backends import check_backend_name

        check_backend_name(args.backend)
    if args.kernel and args.shared is not None:
        raise UsageError("--kernel with --shared is not supported yet (a shared env's kernels are not registered)",
                         hint="create it without --kernel; its maintainer may then run 'envmod --root DIR kernel NAME'")
    settings, shared = _shared_settings(args)
    inputs = _create_inputs(args, settings.backend)
    packages = inputs.packages
    if args.kernel:
        from .emit.kernel import with_ipykernel

        packages = with_ipykernel(packages)
    request = CreateRequest(name=args.name, packages=packages, requirement_files=args.requirement_files,
                            python=args.python, description=inputs.description, module_type=args.module_type,
                            force=args.force, backend=inputs.backend, use_wheel_cache=args.use_wheel_cache,
                            keep_loaded=args.keep_loaded, from_export=inputs.exported, shared=shared,
                            conda_specs=inputs.conda_specs + list(args.conda_specs),
                            conda_channels=inputs.conda_channels, allow_conda_mpi=args.allow_conda_mpi,
                            module_maps=inputs.module_maps)
    old_kernels = _recorded_kernels(settings, args.name) if args.force else []
    with contextlib.ExitStack() as stack:
        if shared is not None:
            from .store.shared import shared_umask_in_effect

            stack.enter_context(shared_umask_in_effect())
        record = CreateSession(request, settings, Reporter(quiet=args.quiet)).run()
    if old_kernels:
        _reinstall_kernels(settings, record, old_kernels)
    _print_created(record, settings)
    if args.kernel:
        args.display_name, args.prefix = None, None
        return cmd_kernel(args)
    return 0


def _recorded_kernels(settings, name: str) -> list[dict[str, str]]:
    """The Jupyter kernels recorded for env ``name``; none if it has no readable record."""
    from .store.root import Store

    try:
        return Store(settings).load(name).kernels
    except EnvmodError:
        return []


def _reinstall_kernels(settings, record, kernels: list[dict[str, str]]) -> None:
    """create --force replaced the env: its kernels follow it (bridge.emit.kernel.reinstall_kernels)."""
    from .emit.kernel import reinstall_kernels
    from .store.record import write_record
    from .store.root import Store

    store = Store(settings)
    with store.lock(record.name, "updating its Jupyter kernels"):
        notes = reinstall_kernels(record, kernels, store.settings.modules_dir, store.settings.templates,
                                  store.settings.cache_dir)
        write_record(record)
    for note in notes:
        print(note, file=sys.stderr)


def _shared_settings(args) -> tuple[Settings, Any]:
    """The settings of the root the env goes to: the user's, or a group-shared root (--shared)."""
    settings = _settings(args)
    if args.group is not None and args.shared is None:
        raise UsageError("--group needs --shared DIR")
    if args.shared is None:
        return settings, None
    from .store.shared import open_shared_root

    return open_shared_root(settings, args.shared, args.group)


@dataclass
class _CreateInputs:
    """What a create installs, from the command line, an export (--from) or an environment file (-f)."""

    packages: list[str]
    description: str
    backend: str
    exported: Any = None
    conda_specs: list[str] = field(default_factory=list)
    conda_channels: list[str] = field(default_factory=list)
    module_maps: dict[str, str] = field(default_factory=dict)   # --map KIND=MODULE, with --from


def _create_inputs(args, configured_backend: str | None) -> _CreateInputs:
    if args.from_export is not None and args.environment_file is not None:
        raise UsageError("--from and -f cannot be combined", hint="--from recreates an export; -f reads conda's environment.yml")
    if args.module_maps and args.from_export is None:
        raise UsageError("--map needs --from FILE (it maps an export's modules to this site's)")
    inputs = _CreateInputs(list(args.packages), args.description, args.backend or configured_backend or "venv")
    if args.from_export is not None:
        from .discover.mapping import parse_maps
        from .emit.export import read_export

        module_maps = parse_maps(args.module_maps)

        exported = read_export(args.from_export)
        inputs.module_maps = module_maps
        inputs.exported = exported
        inputs.packages = exported.requirements + inputs.packages
        inputs.description = inputs.description or exported.description
        inputs.backend = args.backend or exported.backend or configured_backend or "venv"
        inputs.conda_specs, inputs.conda_channels = _conda_part(args.from_export, exported.conda_specs,
                                                                exported.conda_channels, inputs.backend)
    if args.environment_file is not None:
        from .build.environment_file import read_environment_file

        envfile = read_environment_file(args.environment_file)
        inputs.conda_specs = envfile.conda_specs_for(inputs.backend)
        inputs.conda_channels = envfile.channels if inputs.conda_specs else []
        inputs.packages = envfile.pip_requirements + inputs.packages
        for key, value in envfile.ignored.items():
            if not args.quiet:
                print(f"envmod: note: {args.environment_file} sets {key} {value!r}: ignored, the env is {args.name!r} "
                      "under the envmod root", file=sys.stderr)
    return inputs


def _print_created(record: Any, settings: Settings) -> None:
    via = record.python.module or record.python.executable
    if record.conda is not None:
        via = record.conda.engine.get("module") or record.conda.engine.get("executable") or "conda"
        print(f"created {record.name}: {record.backend} env made with {via} (Python {record.python.version})")
    else:
        print(f"created {record.name}: {record.backend} over {via} (Python {record.python.version})")
    modules_dir = str(settings.modules_dir)
    in_path = modules_dir in os.environ.get("MODULEPATH", "").split(":")
    use = "" if in_path else f"module use {shlex.quote(modules_dir)}   (once)   then   "
    print(f"load it with: {use}module load {record.module.name}")


def _conda_part(path: Path, specs: list[str], channels: list[str], backend: str) -> tuple[list[str], list[str]]:
    """The conda specs and channels of a conda-yaml export, refused for a backend without conda."""
    from .build.environment_file import CONDA_BACKENDS

    if specs and backend not in CONDA_BACKENDS:
        raise UsageError(f"{path} is the export of a conda env; a {backend} env installs pip packages only",
                         hint="create it with --backend conda or rattler")
    return list(specs), list(channels)


def cmd_list(args) -> int:

    from .store.listing import list_rows

    store = _store(args)
    rows = list_rows(store)         # from a cache of rows: a root of 1,000 envs lists in well under 0.3 s
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no environments under {store.settings.envs_dir}")
        return 0
    header: tuple[str, ...] = ("NAME", "MODULE", "PYTHON", "BACKEND", "PKGS", "CREATED")
    # a record may lack a value (an unknown Python version): shown as "?"
    table: list[tuple[str, ...]] = [header] + [tuple("?" if cell is None else str(cell) for cell in (
        r["name"], r.get("module", "?"), r.get("python", "?"), r.get("backend", "?"), r.get("packages", "?"),
        r.get("created", r.get("error", "")))) for r in rows]
    if any(r.get("kernels") for r in rows):       # a column only once some env has a kernel
        table = [row + (cell,) for row, cell in zip(table, ["KERNELS"] + [",".join(r.get("kernels") or []) or "-"
                                                                          for r in rows])]
        header = (*header, "KERNELS")
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def _show_rows(record: Any) -> list[tuple[str, str]]:
    """The (label, text) rows of 'envmod show': where the env is, what it loads, who made it, how."""
    rows = [("description", record.description or "-"), ("prefix", record.prefix),
            ("module", f"{record.module.name} ({record.module.type})"),
            ("modulefiles", ", ".join(record.module.files.values()) or "-"),
            ("loads", (", ".join(record.module.depends_on) or "no central modules")
                      + (" (--keep-loaded: every module loaded at create)" if record.module.keep_loaded else "")),
            ("created", f"{record.created.at} by {record.created.by} on {record.created.host} "
                        f"(envmod {record.created.envmod_version}, {record.created.microarchitecture or 'unknown cpu'}, "
                        f"{record.created.module_system or 'no module system'})"),
            ("log", record.created.log or "-")]
    if record.conda is not None:
        engine = record.conda.engine
        rows += [("conda", f"{engine.get('tool')} {engine.get('version')}"
                           + (f" from {engine['module']}" if engine.get("module") else f" ({engine.get('executable')})")
                           + f", {len(record.conda.packages)} packages from {', '.join(record.conda.channels)}"),
                 ("conda specs", " ".join(record.conda.specs) or "-"),
                 ("conda mpi", f"pinned to the external placeholder {record.conda.mpi_pin}" if record.conda.mpi_pin else
                               "a conda MPI accepted (--allow-conda-mpi)" if record.conda.conda_mpi_allowed else "none pinned")]
    if record.created_from:
        subs = [f"{s['exported']} -> {s['used']}" for s in record.created_from.get("substitutions") or []]
        rows.append(("created from", f"{record.created_from.get('export')}" + (f" ({', '.join(subs)})" if subs else "")))
    return rows


def cmd_show(args) -> int:

    record = _store(args).load(args.name)
    if args.json:
        print(json.dumps(record.to_dict(), indent=2))
        return 0
    print(f"{record.name}: {record.backend} over {record.python.module or record.python.executable} "
          f"(Python {record.python.version})")
    rows = _show_rows(record)
    for key, value in rows:
        print(f"  {key + ':':13} {value}")
    if any(m.facts.get("spack_hash") for m in record.central_modules):
        from .spack.stack import format_spack_builds

        for i, line in enumerate(format_spack_builds(record)):
            print(f"  {'spack builds:' if i == 0 else '':13} {line}")
    print(f"  {'packages:':13} {len(record.packages) or 'none beyond the central Python'}")
    for pkg in record.packages:
        how = ("binary wheel" if pkg.install == "wheel" else
               f"compiled against {', '.join(pkg.built_against)}" if pkg.built_against else "built from source")
        if pkg.cached_wheel:
            how += " (reused from the wheel cache: same central libraries)"
        settings = " ".join(f"{k}={v}" for k, v in pkg.build_env.items())
        print(f"    {pkg.name} {pkg.version}{' (requested)' if pkg.requested else ''}: {how}"
              + (f" [{settings}]" if settings else ""))
    if record.links or record.requirements:
        from .scan.evidence import format_evidence

        print(f"  {'evidence:':13} (env file → library → provider; Python package → provider)")
        for line in format_evidence(record.links, record.requirements, include_system=args.all_links,
                                    env_prefix=record.prefix):
            print(f"    {line}")
    return 0


def cmd_check(args) -> int:
    from .check import check_stored, combined_exit_code, format_report
    from .discover.modsys import detect_module_system
    from .errors import NoModuleSystem
    from .store.names import validate_env_name

    if bool(args.name) == bool(args.all):
        raise UsageError("name one environment, or pass --all")
    if args.name:
        validate_env_name(args.name)        # a bad name is a usage error, not an env to report on
    store = _store(args)
    try:
        system = detect_module_system()
    except NoModuleSystem:
        system = None
    names = store.names() if args.all else [args.name]
    trees = store.settings.spack_install_trees
    # One env that does not exist or whose record cannot be read is reported as "could not
    # check" (exit 2) and the others are still checked.
    reports = [check_stored(store, name, system, spack_install_trees=trees) for name in names]
    if args.json:
        print(json.dumps([r.to_dict() for r in reports] if args.all else reports[0].to_dict(), indent=2))
    else:
        print("\n".join(format_report(r) for r in reports) if reports else "no environments to check")
    return combined_exit_code(reports) if reports else 0


def cmd_rebuild(args) -> int:
    from .progress import Reporter
    from .rebuild import RebuildSession

    record = RebuildSession(args.name, _settings(args), Reporter(quiet=args.quiet), from_loaded=args.from_loaded).run()
    rebuilt = [p for p in record.packages if p.install == "source" and p.built_against]
    print(f"rebuilt {record.name}: " + (", ".join(f"{p.name} {p.version} against {', '.join(p.built_against)}"
                                                  for p in rebuilt) or "nothing needed compiling"))
    print(f"{record.module.name} now loads {', '.join(record.module.depends_on) or 'no central modules'}")
    return 0


def cmd_module(args) -> int:
    from .config import check_module_type
    from .emit.modulefile import write_modulefile
    from .store.record import write_record
    from .store.shared import member_link_root, refuse_unless_maintainer, shared_umask_in_effect

    own = _store(args)
    shared_root = args.shared or member_link_root(own.env_path(args.name))
    if shared_root is not None:         # a member's own module for a group-shared env
        from .emit.member import write_member_module

        print(f"wrote {write_member_module(own.settings, shared_root, args.name, args.module_type)}")
        return 0
    known = own.load(args.name) if own.exists(args.name) else None
    if known is not None:
        refuse_unless_maintainer(known, "rewrite its module")
    with contextlib.ExitStack() as stack:
        if known is not None and known.shared is not None:
            # what it makes again (the env's lock file, its module directory) its group reads
            stack.enter_context(shared_umask_in_effect())
        store = stack.enter_context(_locked(args, "rewriting its module"))
        settings = store.settings
        record = store.load(args.name)
        module_type = check_module_type(args.module_type or record.module.type)
        if module_type != record.module.type:
            # Spack names a spec's Lmod and Tcl modules differently: use the target type's names
            from .spack.stack import with_module_type

            record = with_module_type(record, module_type)
        from .stage.image import fresh_staged_prefix

        path = write_modulefile(record, module_type, settings.modules_dir, settings.templates, settings.cache_dir,
                                staged_prefix=fresh_staged_prefix(settings.root, record))
        record.module.files[module_type] = str(path)
        record.module.type = module_type
        write_record(record)
    print(f"wrote {path}")
    return 0


def _remove_kernels(store, name: str) -> None:
    """Remove the env's Jupyter kernels (before its modules and files: none may point at a
    missing env); nothing when its record cannot be read."""
    from .errors import EnvNotFound, RecordError

    try:
        record = store.load(name)
    except (RecordError, EnvNotFound):
        return
    if record.kernels:
        from .emit.kernel import remove_kernels

        remove_kernels(record)


def _remove_modulefiles(store, name: str) -> None:
    """The env's modulefiles under this root (a shared env's, seen through a member's link, are
    not under it and stay)."""
    from .errors import EnvNotFound, RecordError

    settings = store.settings
    try:
        files = list(store.load(name).module.files.values())
    except (RecordError, EnvNotFound):     # EnvNotFound: a member's link to a shared env now gone
        files = []
    module_dir = settings.modules_dir / name
    for path in [Path(f) for f in files] + (sorted(module_dir.iterdir()) if module_dir.is_dir() else []):
        if path.is_file() and settings.modules_dir.resolve() in path.resolve().parents:
            path.unlink()
    if module_dir.is_dir() and not any(module_dir.iterdir()):
        module_dir.rmdir()


def cmd_remove(args) -> int:
    from .errors import EnvNotFound
    from .store.shared import check_may_remove, remove_member_entry

    member_of = check_may_remove(_store(args), args.name, args.force)   # a shared env's, or a member's module of one
    with _locked(args, "removing it") as store:
        if member_of is None:
            # Again under the lock: a member registers a module or kernel holding it shared, so one
            # registered since the check above is seen now, and none can be registered until the env is gone.
            check_may_remove(store, args.name, args.force)
        settings = store.settings
        if not store.exists(args.name) and member_of is None:
            raise EnvNotFound(f"no environment named {args.name!r} under {settings.envs_dir}")
        registered = store.registered_target(args.name)
        if not args.yes:
            if not sys.stdin.isatty():
                raise UsageError(f"refusing to remove {args.name!r} without confirmation", hint="pass --yes")
            question = (f"remove your module for the shared environment {args.name!r} (the environment in "
                        f"{member_of} stays)? [y/N] " if member_of else f"unregister environment {args.name!r} (only the link to {registered}: the tool that built it "
                        "keeps its files and module)? [y/N] " if registered else
                        f"remove environment {args.name!r} at {store.env_path(args.name)} and its modules? [y/N] ")
            answer = input(question)
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing removed")
                return 1
        if member_of is None:                      # a member's remove leaves the maintainer's kernels
            _remove_kernels(store, args.name)
        else:
            from .emit.member import remove_member_kernels

            remove_member_kernels(member_of, args.name)
        _remove_modulefiles(store, args.name)      # first, so no module ever points at a missing env
        store.remove_env_dir(args.name)
        from .stage.image import remove_image

        remove_image(settings.root, args.name)
        if member_of is not None:
            remove_member_entry(member_of, args.name)    # last: the maintainer sees it while the module exists
    if member_of is not None:
        print(f"removed your module for {args.name}: the shared environment in {member_of} is its maintainer's and stays")
        return 0
    if registered:
        print(f"unregistered {args.name}: its install at {registered} and the module written with it are untouched "
              "(EasyBuild built it: remove them there)")
        return 0
    print(f"removed {args.name}")
    return 0


def cmd_export(args) -> int:
    from .emit.export import render_export
    from .fsutil import atomic_write_text, current_umask

    store = _store(args)
    if args.format in ("bash", "csh", "fish"):
        from .emit.script import render_script

        text = render_script(store.load(args.name), args.format, store.settings.modules_dir, store.settings.templates,
                             store.settings.cache_dir)
    else:
        text = render_export(store.load(args.name), args.format, store.settings.templates, store.settings.cache_dir)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    target = args.output.absolute()
    if target.is_dir():
        raise UsageError(f"--output {args.output} is a directory", hint="name a file")
    if target.exists() and not args.force:
        raise UsageError(f"{args.output} exists; not replacing it", hint="pass --force, or name another file")
    if not target.parent.is_dir():
        raise UsageError(f"--output {args.output}: directory {target.parent} does not exist")
    atomic_write_text(target, text, mode=0o666 & ~current_umask())     # a file to share, not a private temp file
    print(f"wrote {args.output}")
    return 0


def cmd_kernel(args) -> int:
    from .emit.kernel import install_kernel, prefix_kernels_dir, recorded_with, user_kernels_dir
    from .store.record import write_record

    with _locked(args, "installing its Jupyter kernel") as store:
        settings = store.settings
        record = store.load(args.name)
        kernels_dir = prefix_kernels_dir(args.prefix) if args.prefix else user_kernels_dir()
        if record.shared is not None:
            from .store.shared import member_link_root, refuse_unless_maintainer

            shared_root = member_link_root(store.env_path(args.name))
            if shared_root is not None:           # a member's own link: their kernel, in their registry entry
                from .emit.member import install_member_kernel

                entry = install_member_kernel(settings, shared_root, args.name, kernels_dir, args.display_name)
                print(f"installed Jupyter kernel {entry['name']} ({entry['display_name']}) in {entry['dir']}")
                return 0
            refuse_unless_maintainer(record, "install Jupyter kernels for it")
        entry = install_kernel(record, kernels_dir, settings.modules_dir, args.display_name, settings.templates,
                               settings.cache_dir)
        record.kernels = recorded_with(record, entry)
        write_record(record)
    print(f"installed Jupyter kernel {entry['name']} ({entry['display_name']}) in {entry['dir']}")
    return 0


def cmd_root(args) -> int:
    print(_settings(args).root)
    return 0


def cmd_pack(args) -> int:
    from .stage.commands import pack_env

    with _locked(args, "packing it") as store:
        manifest = pack_env(store, args.name, args.format)
    print(f"packed {args.name}: {manifest.format} image {manifest.image} ({manifest.size / 1e6:.1f} MB, "
          f"{manifest.files} files, {manifest.pack_seconds:.1f}s); runs from {manifest.staged_prefix} when staged")
    return 0


def cmd_stage(args) -> int:
    from .stage.commands import stage_env

    for line in stage_env(_store(args), args.name, repack=args.repack, allow_fuse=not args.unpack):
        print(line)
    return 0


def cmd_unstage(args) -> int:
    from .stage.commands import unstage_env

    for line in unstage_env(_store(args), args.name):
        print(line)
    return 0


COMMANDS = {"create": cmd_create, "list": cmd_list, "show": cmd_show, "check": cmd_check, "rebuild": cmd_rebuild,
            "module": cmd_module, "remove": cmd_remove, "export": cmd_export, "kernel": cmd_kernel, "root": cmd_root,
            "pack": cmd_pack, "stage": cmd_stage, "unstage": cmd_unstage}


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_named_command(argv))
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()      # here, where a reader that left is handled, not at exit
        return code
    except EnvmodError as exc:
        print(f"envmod: error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("envmod: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # 'envmod show NAME | head': the reader left; what it did not read is nobody's error.
        # stdout is pointed at /dev/null so the interpreter's flush at exit cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def command_line() -> int:
    """``envmod`` the program: :func:`main`, with the garbage collector set for a short-lived
    process. The modules a command imports are hundreds of classes and functions that live until
    exit; the collector's default passes over them, and the interpreter's last one at exit, cost
    more than creating an env with no packages (benchmarked: bench/create)."""
    import gc

    gc.set_threshold(50_000, 20, 20)    # a command makes few reference cycles
    try:
        return main()
    finally:
        gc.freeze()                     # all that is left lives until exit: no last pass over it


if __name__ == "__main__":
    sys.exit(command_line())
