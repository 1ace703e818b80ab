"""One Jinja2 environment for everything envmod writes.

Text lives in templates; a site overrides or extends them from its own directory (config
``templates: DIR``), reaching ours as ``builtin/<name>`` to extend a block. Every value printed
into a template must pass through a quoting filter (``lua``, ``tcl``, ``sh``): ``finalize``
refuses anything else, so a template cannot interpolate raw text into code by mistake.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError
from .quoting import QUOTERS


class Quoted(str):
    """Text already quoted for the language it is printed into."""


def builtin_template_dir() -> Path:
    installed = Path(__file__).resolve().parent.parent / "templates"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[3] / "templates"    # running from a source checkout


def _finalize(value: Any) -> Any:
    if isinstance(value, Quoted):
        return value
    from jinja2 import TemplateError

    raise TemplateError(f"template printed an unquoted value {str(value)[:40]!r}; use |lua, |tcl or |sh")


class TemplateFailure(Exception):
    """A template that cannot be rendered; the text is one line naming its file and line."""

    def config_error(self, what: str, site_dir: Path | None) -> ConfigError:
        return ConfigError(f"cannot write {what}: {self}",
                           hint=(f"fix the site templates in {site_dir} (config 'templates:')" if site_dir else
                                 "the built-in templates are broken: reinstall envmod"))


def render_template(name: str, context: Mapping[str, Any], site_dir: Path | None = None,
                    cache_dir: Path | None = None) -> str:
    """``name`` rendered by Jinja2 with ``context``, a site's override of it included; with a
    ``cache_dir``, Jinja2 keeps the compiled template there (its bytecode cache)."""
    env = make_environment(site_dir, cache_dir)
    import jinja2

    try:
        return env.get_template(name).render(context)
    except (jinja2.TemplateError, OSError) as exc:
        raise TemplateFailure(describe_template_error(exc)) from None


def check_site_dir(site_dir: Path | None) -> None:
    if site_dir is not None and not site_dir.is_dir():
        raise ConfigError(f"site template directory does not exist: {site_dir}")


def make_environment(site_dir: Path | None = None, cache_dir: Path | None = None):
    """``cache_dir`` keeps compiled templates (Jinja2's bytecode cache, one private directory
    per user: `template_cache`) so a create doesn't parse and compile the same templates every
    time. Jinja2 is imported here, not above, so commands that write no template don't load it."""
    import jinja2

    from .template_cache import bytecode_cache

    ours = jinja2.FileSystemLoader(str(builtin_template_dir()))
    loaders: list = []
    if site_dir is not None:
        check_site_dir(site_dir)
        loaders.append(jinja2.FileSystemLoader(str(site_dir)))
    loaders += [jinja2.PrefixLoader({"builtin": ours}), ours]
    env = jinja2.Environment(loader=jinja2.ChoiceLoader(loaders), autoescape=False, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
                             finalize=_finalize, bytecode_cache=bytecode_cache(cache_dir))
    env.filters.update(quoting_filters())
    return env


def quoting_filters() -> dict[str, Any]:
    """The filters that quote a value for the language it is printed into, marking it `Quoted`
    (which `_finalize` lets through)."""
    return {name: (lambda value, _q=quote: Quoted(_q(value))) for name, quote in QUOTERS.items()}


def describe_template_error(exc: BaseException) -> str:
    """A template failure in one line, with the template file and line it happened at."""
    import jinja2

    if isinstance(exc, OSError):
        text = exc.strerror or str(exc) or type(exc).__name__
        return f"{text}: {exc.filename}" if exc.filename else text
    text = " ".join(str(getattr(exc, "message", None) or exc).split()) or type(exc).__name__
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"{text} ({exc.filename or exc.name}, line {exc.lineno})"
    where = None
    tb = exc.__traceback__
    while tb is not None:      # Jinja2 puts the template's own file and line into the traceback
        if not tb.tb_frame.f_code.co_filename.endswith(".py"):
            where = (tb.tb_frame.f_code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    return f"{text} ({where[0]}, line {where[1]})" if where else text
