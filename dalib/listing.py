"""``dalib list [KIND] [NAME]``: the registered components, and the options of one.

``dalib list`` prints every entry of every kind with its one-line summary; ``dalib list
discrepancies`` one kind; ``dalib list discrepancies mmd`` the entry's documentation and its
options (name, type, default, what the docstring says of it).
"""

from __future__ import annotations

import textwrap

from dalib import catalogue
from dalib.console import OneLineArgumentParser
from dalib.describe import Description


def parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(
        prog="dalib list",
        description="List the components a config selects by name, or the options of one.",
    )
    parser.add_argument("kind", nargs="?", help=f"one of: {', '.join(catalogue.KINDS)}")
    parser.add_argument("name", nargs="?", help="an entry of KIND: show its options")
    return parser


def overview(kind: str) -> str:
    """Every entry of ``kind``, one line each: name and summary."""
    entries = catalogue.descriptions(kind)
    width = max((len(d.name) for d in entries), default=0) + 2
    lines = [f"{kind} ({catalogue.KINDS[kind].where})"]
    lines += [f"  {d.name:<{width}}{d.summary}" for d in entries]
    return "\n".join(lines)


def details(kind: str, entry: Description) -> str:
    """An entry's whole docstring, then its options."""
    lines = [f"{kind} {entry.name} ({catalogue.KINDS[kind].where})", "", entry.doc or "(no doc)"]
    lines += ["", "options:" if entry.options else "options: none"]
    for option in entry.options:
        lines.append(f"  {option.signature()}")
        if option.doc:
            lines += textwrap.wrap(
                option.doc, 96, initial_indent=" " * 6, subsequent_indent=" " * 6
            )
    if entry.context:
        lines.append(f"set by dalib: {', '.join(entry.context)}")
    return "\n".join(lines)


def main(arguments: list[str]) -> None:
    args = parser().parse_args(arguments)
    if args.kind is None:
        print("\n\n".join(overview(kind) for kind in catalogue.KINDS))
        print("\n`dalib list KIND NAME` shows an entry's options.")
        return
    kind = catalogue.kind_name(args.kind)
    if args.name is None:
        print(overview(kind))
        return
    print(details(kind, catalogue.description(kind, args.name)))
