"""What a registered component is and which options it takes, read from its factory.

``describe(name, factory)`` reads the factory's docstring (the summary is its first paragraph)
and signature (each option's name, type annotation and default). An option's description comes
from the docstring: a documented parameter (Google, NumPy or reST style, parsed by
``docstring_parser``, as jsonargparse does for ``--help``), else the first sentence that names the
option as ``name`` or ``name=...`` in double backquotes, or starts ``name: ...`` (dalib's own
prose conventions).
``dalib list`` prints these descriptions; the documentation site renders them.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import docstring_parser

NO_DEFAULT = inspect.Parameter.empty
# The end of a sentence: a full stop before white space and a capital letter.
# A full stop, then a capital; not after "vs.", "al.", "e.g." or "i.e." (citations, titles).
SENTENCE_END = re.compile(r"(?<!vs\.)(?<!al\.)(?<!e\.g\.)(?<!i\.e\.)(?<=\.)(?:\*\*)?\s+(?=[A-Z])")
# The end of a clause (a sentence, or a part of one after a semicolon).
CLAUSE_END = re.compile(r"(?<=[.;])\s+|(?<=\.\*\*)\s+")


@dataclass(frozen=True)
class Option:
    """One option a config can set: ``{name: <entry>, <option>: value}``."""

    name: str
    annotation: str  # "" when the signature has none
    default: Any  # NO_DEFAULT when the option is required
    doc: str  # "" when the docstring says nothing about it

    @property
    def required(self) -> bool:
        return self.default is NO_DEFAULT

    def signature(self) -> str:
        """``name: type = default`` (``(required)`` instead of a default)."""
        text = self.name + (f": {self.annotation}" if self.annotation else "")
        return f"{text} (required)" if self.required else f"{text} = {self.default!r}"


@dataclass(frozen=True)
class Description:
    """A registered entry: its name, summary, whole docstring and options."""

    name: str
    summary: str
    doc: str
    options: tuple[Option, ...]
    context: tuple[str, ...]  # parameters dalib passes itself (for example ``in_features``)


def describe(name: str, factory: Callable[..., Any], context: Sequence[str] = ()) -> Description:
    """The description of ``factory`` registered as ``name``. Parameters named in ``context`` are
    filled in by dalib where it builds the component, so they are not options."""
    doc = inspect.getdoc(factory) or ""
    options = tuple(
        Option(p.name, annotation_text(p.annotation), p.default, option_doc(p.name, doc))
        for p in parameters(factory)
        if p.name not in context
    )
    given = tuple(p.name for p in parameters(factory) if p.name in context)
    return Description(name, summary(doc), doc, options, given)


def summary(doc: str) -> str:
    """The first sentence of a docstring, on one line."""
    return SENTENCE_END.split(" ".join(doc.split("\n\n", 1)[0].split()), maxsplit=1)[0]


def parameters(factory: Callable[..., Any]) -> list[inspect.Parameter]:
    """The named parameters of ``factory`` (``*args``/``**kwargs`` are no options), with their
    annotations evaluated where possible (``Literal[...]`` shows the choices)."""
    try:
        signature = inspect.signature(factory, eval_str=True)
    except (NameError, TypeError, SyntaxError):  # a name only imported for type checking
        signature = inspect.signature(factory)
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p for p in signature.parameters.values() if p.kind in kinds]


def annotation_text(annotation: Any) -> str:
    """A type annotation as a reader writes it: ``str | Mapping[str, Any]``."""
    if annotation is NO_DEFAULT:
        return ""
    text = annotation.__qualname__ if isinstance(annotation, type) else str(annotation)
    return re.sub(r"\b(typing|collections\.abc|typing_extensions)\.", "", text)


def option_doc(option: str, doc: str) -> str:
    """What ``doc`` says about ``option``: its documented parameter, else the first clause that
    names it in double backquotes or starts with ``option:``; ``""`` if none."""
    for param in docstring_parser.parse(doc).params:
        if param.arg_name == option and param.description:
            return " ".join(param.description.split())
    name = re.escape(option)
    mention = re.compile(rf"``{name}(=[^`]*)?``|^{name}: ")
    clauses = CLAUSE_END.split(" ".join(doc.split()))
    return next((clause for clause in clauses if mention.search(clause)), "")
