"""mkdocs hook: the pages generated at build time, so that none of them can go stale.

- ``discrepancies/<family>.md``: one page per module of ``dalib/discrepancy/`` that registers a
  measure, from the registry (names, options and defaults from the signatures) and the
  docstrings (which hold the formulas); ``<!-- dalib:discrepancy-table -->`` in a hand-written
  page becomes the table of every measure.
- ``results/...``: every committed ``benchmarks/results/**/*.md`` and the figures beside them,
  read as they are (included, not copied); ``<!-- dalib:results-table -->`` lists them.
- ``api/<module>.md``: one mkdocstrings page per top-level module and subpackage of ``dalib``.

Each group is listed in the nav as a section after its hand-written index page.
``SphinxRoles`` is also mkdocstrings' griffe extension (mkdocs.yml), for the API pages.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

import griffe
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

from dalib.catalogue import KINDS
from dalib.describe import describe

#: Options the objective fills in itself: not something a config sets.
CONTEXT = KINDS["discrepancies"].context


@dataclass
class GeneratedFile:
    """A generated file: its place in the site, nav title, and text or source file."""

    uri: str
    title: str | None = None  # None: not listed in the nav (a figure)
    text: str | None = None
    source: Path | None = None


@dataclass
class Generated:
    """Everything the build adds, computed once in ``on_config``."""

    groups: dict[str, list[GeneratedFile]] = field(default_factory=dict)  # nav anchor page -> pages
    tables: dict[str, str] = field(default_factory=dict)  # marker in a page -> Markdown table


_generated = Generated()


def roles_to_markdown(text: str) -> str:
    """Sphinx cross-reference roles (``:class:`X```) as Markdown code spans."""
    return re.sub(r":(?:class|func|meth|attr|mod):`~?([^`]+)`", r"`\1`", text)


class SphinxRoles(griffe.Extension):
    """Docstrings with their Sphinx roles as code spans, as mkdocstrings renders Markdown."""

    def on_instance(self, *, obj: griffe.Object, **_: object) -> None:
        if obj.docstring is not None:
            obj.docstring.value = roles_to_markdown(obj.docstring.value)


def options(factory: typing.Callable) -> list[tuple[str, str]]:
    """The options a config can set (as ``dalib list`` reads them), with their defaults as they
    would be written in YAML."""
    described = describe(factory.__name__, factory, CONTEXT).options
    return [(o.name, "required" if o.required else repr(o.default)) for o in described]


def measure_class(factory: typing.Callable) -> type:
    """The Discrepancy subclass a factory builds (a class, or a function's return type)."""
    if inspect.isclass(factory):
        return factory
    return typing.get_type_hints(factory)["return"]


def flags(factory: typing.Callable) -> str:
    cls = measure_class(factory)
    return ", ".join(
        text
        for text, on in [
            ("adversarial", cls.adversarial),
            ("uses logits", cls.needs_logits),
            ("no instance weights", not cls.supports_weights),
        ]
        if on
    )


def measure_section(name: str, factory: typing.Callable) -> list[str]:
    """A measure's heading, config line, options with defaults, and docstring."""
    described = ", ".join(f"`{option}`: `{default}`" for option, default in options(factory))
    return [
        f"## `{name}`",
        "",
        f"`model.discrepancy: {{name: {name}}}` · `{factory.__module__}.{factory.__qualname__}`"
        + (f" · {flags(factory)}" if flags(factory) else ""),
        "",
        f"Options (defaults): {described or 'none'}.",
        "",
        roles_to_markdown(inspect.getdoc(factory)),
        "",
    ]


def table_row(name: str, factory: typing.Callable, family: str) -> str:
    """A measure's row in the table of every measure: its docstring's first paragraph."""
    summary = " ".join(inspect.getdoc(factory).split("\n\n", 1)[0].split())
    names = ", ".join(option for option, _ in options(factory))
    return (
        f"| [`{name}`]({family}.md#{name}) | {roles_to_markdown(summary)} "
        f"| {names or '–'} | {flags(factory) or '–'} |"
    )


def discrepancy_pages() -> tuple[list[GeneratedFile], str]:
    """One page per family (defining module) of dalib's registered measures, and the table."""
    from dalib.discrepancy import DISCREPANCIES, builtin_discrepancies

    families: dict[str, list[str]] = {}
    in_source_order = sorted(
        builtin_discrepancies(), key=lambda name: inspect.getsourcelines(DISCREPANCIES.get(name))[1]
    )
    for name in in_source_order:
        families.setdefault(DISCREPANCIES.get(name).__module__, []).append(name)
    pages, rows = [], ["| name | what | options | notes |", "|---|---|---|---|"]
    for module_name, names in sorted(families.items()):
        family = module_name.rsplit(".", 1)[1]
        summary, _, rest = inspect.getdoc(importlib.import_module(module_name)).partition("\n")
        title, _, lead = summary.rstrip(".").partition(": ")
        lead = f"{lead[:1].upper()}{lead[1:]}." if lead else ""
        lines = [f"# {title}", "", lead, "", rest.strip(), ""]
        for name in names:
            lines += measure_section(name, DISCREPANCIES.get(name))
            rows.append(table_row(name, DISCREPANCIES.get(name), family))
        text = "\n".join(lines)
        pages.append(GeneratedFile(f"discrepancies/{family}.md", ", ".join(names), text))
    return pages, "\n".join(rows)


def result_pages(root: Path) -> tuple[list[GeneratedFile], str]:
    """Every committed result table, named by its path, the figures it shows, and their list."""
    results = root / "benchmarks" / "results"
    pages, rows = [], ["| file | what |", "|---|---|"]
    for path in sorted(results.rglob("*")):
        relative = path.relative_to(results).as_posix()
        if path.suffix == ".md":
            text = path.read_text()
            heading = re.search(r"^# (.+)$", text, re.M)
            name = relative.removesuffix(".md")
            pages.append(GeneratedFile(f"results/{relative}", name, text))
            rows.append(f"| [`{relative}`]({relative}) | {heading.group(1) if heading else ''} |")
        elif path.suffix in (".png", ".svg"):
            pages.append(GeneratedFile(f"results/{relative}", source=path))
    return pages, "\n".join(rows)


def api_pages() -> list[GeneratedFile]:
    """A reference page per top-level module and subpackage of dalib (submodules included)."""
    import dalib

    pages = [GeneratedFile("api/dalib.md", "dalib", "# `dalib`\n\n::: dalib\n")]
    for module in pkgutil.iter_modules(dalib.__path__, "dalib."):
        submodules = "\n    options:\n      show_submodules: true" if module.ispkg else ""
        pages.append(
            GeneratedFile(
                f"api/{module.name}.md",
                module.name,
                f"# `{module.name}`\n\n::: {module.name}{submodules}\n",
            )
        )
    return pages


def expand_nav(nav: list, groups: dict[str, list[GeneratedFile]]) -> None:
    """After each anchor page in the nav, the pages generated for it, as one section."""
    for index, item in enumerate(nav):
        if isinstance(item, dict):
            ((title, value),) = item.items()
            if isinstance(value, list):
                expand_nav(value, groups)
            elif value in groups:
                listed = [{page.title: page.uri} for page in groups[value] if page.title]
                nav[index] = {title: [value, *listed]}


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    root = Path(config.config_file_path).parent
    discrepancies, discrepancy_table = discrepancy_pages()
    results, results_table = result_pages(root)
    _generated.groups = {
        "discrepancies/index.md": discrepancies,
        "results/index.md": results,
        "api/index.md": api_pages(),
    }
    _generated.tables = {
        "<!-- dalib:discrepancy-table -->": discrepancy_table,
        "<!-- dalib:results-table -->": results_table,
    }
    expand_nav(config.nav, _generated.groups)
    return config


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for pages in _generated.groups.values():
        for page in pages:
            source = str(page.source) if page.source else None
            files.append(File.generated(config, page.uri, content=page.text, abs_src_path=source))
    return files


def link_results(markdown: str, src_uri: str) -> str:
    """Each mention of a committed result file, `benchmarks/results/x.md`, links to its page."""
    up = "../" * src_uri.count("/")
    return re.sub(
        r"`benchmarks/results/([\w/.-]+\.md)`",
        lambda match: f"[{match.group(0)}]({up}results/{match.group(1)})",
        markdown,
    )


def on_page_markdown(markdown: str, page: Page, **_: object) -> str:
    for marker, table in _generated.tables.items():
        markdown = markdown.replace(marker, table)
    return link_results(markdown, page.file.src_uri)
