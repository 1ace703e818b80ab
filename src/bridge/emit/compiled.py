"""Templates turned once into plain Python, so that writing a modulefile imports no Jinja2.

Importing Jinja2 costs more than the rest of an ``envmod create``. So the first render of a
template parses it with Jinja2 and writes its tree out as a Python render function, kept in the
cache directory together with the files it was made from. Later renders call that function
without importing Jinja2, as long as none of those files has changed.

Jinja2 stays the template language and has the last word:
- a function is kept only if its first output equals Jinja2's byte for byte;
- a template that uses anything outside the subset below (``set``, macros, calls, tests,
  ``loop``, ``super()``) is rendered by Jinja2 every time;
- so is any render that fails here, so that errors read as Jinja2 words them.

The subset: text, ``{{ expr | lua/tcl/sh/comment }}``, names, attributes, items, constants,
``join``, ``~``, comparisons, ``and``/``or``/``not``, ``for`` (with ``else``), ``if``/``elif``/``else``,
``block``, ``extends`` and ``include``.
"""

from __future__ import annotations

import os
import stat
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping

from .. import __version__
from ..quoting import QUOTERS

# Bumped whenever the generated code changes shape, so older cache entries are not used.
GENERATOR = 1

Render = Callable[[Mapping[str, Any]], str]
Filters = Mapping[str, Callable[[Any], Any]]     # the environment's quoting filters, by name


class Unsupported(Exception):
    """The template uses something this compiler does not translate: Jinja2 renders it."""


def candidate_paths(name: str, builtin_dir: Path, site_dir: Path | None) -> list[Path]:
    """Where Jinja2's loader (see ``templating.make_environment``) looks for ``name``, in order."""
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise Unsupported(name)
    found = [site_dir.joinpath(*parts)] if site_dir is not None else []
    if parts[0] == "builtin" and len(parts) > 1:
        found.append(builtin_dir.joinpath(*parts[1:]))
    found.append(builtin_dir.joinpath(*parts))
    return found


def signature(path: str) -> tuple[int, int] | None:
    """What tells a changed source file: (mtime_ns, size), None where no file is."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size) if stat.S_ISREG(st.st_mode) else None


def cache_key(name: str, site_dir: Path | None) -> tuple:
    """What an entry was made for; kept in it, and checked, since its file name is a hash."""
    return (__version__, GENERATOR, str(site_dir) if site_dir is not None else None, name)


def cache_file(cache_dir: Path, name: str, site_dir: Path | None) -> Path:
    digest = zlib.crc32(repr(cache_key(name, site_dir)).encode("utf-8", "surrogateescape"))
    return cache_dir / "templates" / f"py-{name.replace('/', '-')}-{digest:08x}.py"


def load(name: str, site_dir: Path | None, cache_dir: Path | None, filters: Filters) -> Render | None:
    """The cached render function of ``name`` (rendering with ``filters``), or None if there is
    none that is still valid."""
    if cache_dir is None:
        return None
    path = cache_file(cache_dir, name, site_dir)
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            # Code from the cache is run: only if this user wrote it and no one else can change it.
            if st.st_uid != os.getuid() or st.st_mode & 0o022:
                return None
            source = fh.read()
        namespace: dict[str, Any] = {}
        exec(compile(source, str(path), "exec"), namespace)
    except Exception:       # unreadable or damaged: Jinja2 renders, and writes the entry again
        return None
    if namespace.get("KEY") != cache_key(name, site_dir):
        return None
    if any(signature(source_path) != sig for source_path, sig in namespace.get("SOURCES", ())):
        return None
    render = namespace.get("render")
    if render is None:
        return None
    return lambda context: render(context, filters)


def store(env: Any, name: str, builtin_dir: Path, site_dir: Path | None, cache_dir: Path, filters: Filters,
          context: Mapping[str, Any], expected: str) -> None:
    """Compile ``name`` and keep it, if it is in the subset and renders ``context`` as Jinja2
    did (``expected``). Any failure leaves just no cache entry."""
    from ..fsutil import atomic_write_text, current_umask

    try:
        source = TemplateCompiler(env, builtin_dir, site_dir).module_source(name, cache_key(name, site_dir))
        namespace: dict[str, Any] = {}
        exec(compile(source, "<compiled template>", "exec"), namespace)
        if namespace["render"](context, filters) != expected:
            return
        target = cache_file(cache_dir, name, site_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, source, 0o644 & ~current_umask())
    except Exception:     # outside the subset, or not writable: Jinja2 goes on rendering it
        return


class _Chain:
    """One template resolved: its tree, and the blocks that end up rendered where each block is
    (the most derived definition along its ``extends`` chain, as Jinja2 picks them)."""

    def __init__(self, root: Any, blocks: dict[str, Any]) -> None:
        self.root = root
        self.blocks = blocks


class TemplateCompiler:
    """Jinja2 trees to Python source. Each template reached (by ``include``) becomes one
    function ``t<N>(ctx, f, w)``: ``ctx`` the context mapping, ``f`` the filters, ``w`` the
    writer; the module's ``render`` calls the first."""

    def __init__(self, env: Any, builtin_dir: Path, site_dir: Path | None) -> None:
        self.env = env
        self.builtin_dir = builtin_dir
        self.site_dir = site_dir
        self.sources: dict[str, tuple[int, int] | None] = {}
        self.functions: dict[str, str] = {}       # template name -> function name
        self.bodies: list[str] = []
        self.compiling: list[str] = []
        self.block_stack: list[str] = []
        self.counter = 0

    def module_source(self, name: str, key: tuple) -> str:
        first = self.function_for(name)
        head = [
            "# envmod: a Jinja2 template compiled to Python (bridge.emit.compiled); remade",
            "# whenever one of SOURCES changes. Delete it at will.",
            f"KEY = {key!r}",
            f"SOURCES = {sorted(self.sources.items())!r}",
            "",
            "def _attr(obj, name):",
            "    try:",
            "        return getattr(obj, name)",
            "    except AttributeError:",
            "        return obj[name]",
            "",
            "def _item(obj, key):",
            "    try:",
            "        return obj[key]",
            "    except (AttributeError, TypeError, LookupError):",
            "        if isinstance(key, str):",
            "            return getattr(obj, key)",
            "        raise",
            "",
            "def _join(value, sep=''):",
            "    return str(sep).join(map(str, value))",
            "",
            "def render(ctx, f):",
            "    out = []",
            f"    {first}(ctx, f, out.append)",
            "    return ''.join(out)",
            "",
        ]
        return "\n".join(head + self.bodies) + "\n"

    # -- templates ---------------------------------------------------------------------------

    def load_tree(self, name: str) -> Any:
        """Parse ``name`` as Jinja2's loader finds it, noting every file that decided it."""
        candidates = candidate_paths(name, self.builtin_dir, self.site_dir)
        source, filename, _ = self.env.loader.get_source(self.env, name)
        for path in map(os.path.normpath, candidates):
            self.sources[path] = signature(path)
            if path == filename:
                break
        else:
            raise Unsupported(f"{name} came from {filename}, not where envmod looks")
        if self.sources[filename] is None:
            raise Unsupported(filename)
        return self.env.parse(source, name, filename)

    def chain(self, name: str) -> _Chain:
        from jinja2 import nodes

        blocks: dict[str, Any] = {}
        seen = set()
        while True:
            if name in seen:
                raise Unsupported(f"{name} extends itself")
            seen.add(name)
            tree = self.load_tree(name)
            for block in tree.find_all(nodes.Block):
                if block.required:
                    raise Unsupported("required block")
                blocks.setdefault(block.name, block)
            parent = next(iter(tree.find_all(nodes.Extends)), None)
            if parent is None:
                return _Chain(tree, blocks)
            leading, rest = self.split_at_extends(tree, parent)
            if leading:
                raise Unsupported("text before extends")
            if not isinstance(parent.template, nodes.Const) or not isinstance(parent.template.value, str):
                raise Unsupported("extends of a computed name")
            for node in rest:       # after extends Jinja2 renders blocks only, through the parent
                if not isinstance(node, nodes.Block) and not _is_plain_text(node):
                    raise Unsupported(f"{type(node).__name__} beside extends")
            name = parent.template.value

    @staticmethod
    def split_at_extends(tree: Any, extends: Any) -> tuple[list, list]:
        if extends not in tree.body:
            raise Unsupported("extends below the top level")
        at = tree.body.index(extends)
        return tree.body[:at], tree.body[at + 1:]

    def function_for(self, name: str) -> str:
        if name in self.functions:
            return self.functions[name]
        if name in self.compiling:
            raise Unsupported(f"{name} includes itself")
        self.compiling.append(name)
        chain = self.chain(name)
        self.counter += 1
        function = f"t{self.counter}"
        lines = [f"def {function}(ctx, f, w):"]
        outer_blocks, self.block_stack = self.block_stack, []
        self.suite(chain.root.body, chain, {}, lines, 1)
        self.block_stack = outer_blocks
        self.bodies.append("\n".join(lines) + "\n")
        self.functions[name] = function
        self.compiling.pop()
        return function

    # -- statements --------------------------------------------------------------------------

    def suite(self, body: list, chain: _Chain, scope: dict[str, str], lines: list[str], depth: int) -> None:
        """An indented block of Python: ``body``'s statements, or ``pass`` if they write nothing."""
        before = len(lines)
        self.statements(body, chain, scope, lines, depth)
        if len(lines) == before:
            lines.append("    " * depth + "pass")

    def statements(self, body: list, chain: _Chain, scope: dict[str, str], lines: list[str], depth: int) -> None:
        from jinja2 import nodes

        pad = "    " * depth
        for node in body:
            if isinstance(node, nodes.Output):
                for child in node.nodes:
                    if isinstance(child, nodes.TemplateData):
                        if child.data:
                            lines.append(f"{pad}w({child.data!r})")
                    else:
                        lines.append(f"{pad}w({self.output(child, scope)})")
            elif isinstance(node, nodes.Block):
                if scope:
                    raise Unsupported("block inside a loop")
                if node.name in self.block_stack:
                    raise Unsupported("block inside itself")
                self.block_stack.append(node.name)
                self.statements(chain.blocks[node.name].body, chain, {}, lines, depth)
                self.block_stack.pop()
            elif isinstance(node, nodes.For):
                self.for_loop(node, chain, scope, lines, depth)
            elif isinstance(node, nodes.If):
                self.if_chain(node, chain, scope, lines, depth)
            elif isinstance(node, nodes.Include):
                if node.ignore_missing or not node.with_context or not isinstance(node.template, nodes.Const) \
                        or not isinstance(node.template.value, str):
                    raise Unsupported("include form")
                function = self.function_for(node.template.value)
                # Jinja2 hands an included template the context plus the names bound here.
                local = ", ".join(f"{name!r}: {var}" for name, var in scope.items())
                lines.append(f"{pad}{function}({{**ctx, {local}}}, f, w)" if local else f"{pad}{function}(ctx, f, w)")
            else:
                raise Unsupported(type(node).__name__)

    def for_loop(self, node: Any, chain: _Chain, scope: dict[str, str], lines: list[str], depth: int) -> None:
        from jinja2 import nodes

        if node.recursive or node.test is not None:
            raise Unsupported("for with a filter or recursive")
        if any(n.name == "loop" for n in node.find_all(nodes.Name)):
            raise Unsupported("the loop variable")
        self.counter += 1
        inner = dict(scope)
        if isinstance(node.target, nodes.Name):
            inner[node.target.name] = target = f"l{self.counter}_{node.target.name}"
        elif isinstance(node.target, nodes.Tuple) and all(isinstance(i, nodes.Name) for i in node.target.items):
            names = [f"l{self.counter}_{i.name}" for i in node.target.items]
            inner.update({i.name: n for i, n in zip(node.target.items, names)})
            target = "(" + ", ".join(names) + ",)"
        else:
            raise Unsupported("for target")
        pad = "    " * depth
        iterable = self.expr(node.iter, scope)
        empty = f"e{self.counter}"
        if node.else_:
            lines.append(f"{pad}{empty} = True")
        lines.append(f"{pad}for {target} in {iterable}:")
        if node.else_:
            lines.append(f"{pad}    {empty} = False")
        self.suite(node.body, chain, inner, lines, depth + 1)
        if node.else_:
            lines.append(f"{pad}if {empty}:")
            self.suite(node.else_, chain, scope, lines, depth + 1)

    def if_chain(self, node: Any, chain: _Chain, scope: dict[str, str], lines: list[str], depth: int) -> None:
        pad = "    " * depth
        keyword = "if"
        for branch in [node, *node.elif_]:
            lines.append(f"{pad}{keyword} {self.expr(branch.test, scope)}:")
            self.suite(branch.body, chain, scope, lines, depth + 1)
            keyword = "elif"
        if node.else_:
            lines.append(f"{pad}else:")
            self.suite(node.else_, chain, scope, lines, depth + 1)

    # -- expressions -------------------------------------------------------------------------

    def output(self, node: Any, scope: dict[str, str]) -> str:
        from jinja2 import nodes

        # The environment's finalize refuses any printed value a quoting filter did not make.
        if not (isinstance(node, nodes.Filter) and node.name in QUOTERS):
            raise Unsupported("printed value without a quoting filter")
        return self.expr(node, scope)

    def expr(self, node: Any, scope: dict[str, str]) -> str:
        from jinja2 import nodes

        if isinstance(node, nodes.Name) and node.ctx == "load":
            return scope.get(node.name) or f"ctx[{node.name!r}]"
        if isinstance(node, nodes.Const) and (node.value is None or isinstance(node.value, (str, int, float, bool))):
            return repr(node.value)
        if isinstance(node, nodes.Getattr):
            return f"_attr({self.expr(node.node, scope)}, {node.attr!r})"
        if isinstance(node, nodes.Getitem) and not isinstance(node.arg, nodes.Slice):
            return f"_item({self.expr(node.node, scope)}, {self.expr(node.arg, scope)})"
        if isinstance(node, nodes.List) or (isinstance(node, nodes.Tuple) and node.ctx == "load"):
            items = ", ".join(self.expr(item, scope) for item in node.items)
            return f"[{items}]" if isinstance(node, nodes.List) else f"({items},)"
        if isinstance(node, nodes.Filter):
            return self.filter(node, scope)
        if isinstance(node, nodes.Concat):
            return "_join([" + ", ".join(self.expr(n, scope) for n in node.nodes) + "])"
        if isinstance(node, nodes.Not):
            return f"(not {self.expr(node.node, scope)})"
        if isinstance(node, (nodes.And, nodes.Or)):
            op = "and" if isinstance(node, nodes.And) else "or"
            return f"({self.expr(node.left, scope)} {op} {self.expr(node.right, scope)})"
        if isinstance(node, nodes.Compare):
            text = self.expr(node.expr, scope)
            for operand in node.ops:
                if operand.op not in _COMPARISONS:
                    raise Unsupported(f"comparison {operand.op}")
                text += f" {_COMPARISONS[operand.op]} {self.expr(operand.expr, scope)}"
            return f"({text})"
        raise Unsupported(type(node).__name__)

    def filter(self, node: Any, scope: dict[str, str]) -> str:
        if node.kwargs or node.dyn_args or node.dyn_kwargs:
            raise Unsupported("filter keyword arguments")
        value = self.expr(node.node, scope)
        if node.name in QUOTERS and not node.args:
            return f"f[{node.name!r}]({value})"
        if node.name == "join" and len(node.args) <= 1:
            return f"_join({', '.join([value, *(self.expr(a, scope) for a in node.args)])})"
        raise Unsupported(f"filter {node.name}")


_COMPARISONS = {"eq": "==", "ne": "!=", "lt": "<", "lteq": "<=", "gt": ">", "gteq": ">=", "in": "in",
                "notin": "not in"}


def _is_plain_text(node: Any) -> bool:
    from jinja2 import nodes

    return isinstance(node, nodes.Output) and all(isinstance(n, nodes.TemplateData) for n in node.nodes)
