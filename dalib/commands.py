"""The commands of ``dalib`` and its own parser, which lists them (standard library only, so
``dalib --help`` answers without importing torch or Lightning)."""

from __future__ import annotations

from dalib.console import OneLineArgumentParser

COMMANDS = {
    "fit": "train a model of a config; writes result.json in its run folder",
    "validate": "evaluate a checkpoint (--ckpt_path) on the validation sets; record beside it",
    "test": "evaluate a checkpoint (--ckpt_path) on the test sets; record beside it",
    "sweep": "run many fits: methods x tasks x hyper-parameters x seeds (a sweep YAML)",
    "report": "tabulate the run records under a folder (Markdown, CSV, plots)",
    "list": "the components a config selects by name (discrepancies, ...), and their options",
}
LIGHTNING_COMMANDS = ("fit", "validate", "test")


def command_parser() -> OneLineArgumentParser:
    """``dalib``'s own parser: the commands; each command parses its own options."""
    parser = OneLineArgumentParser(
        prog="dalib",
        description="dalib: domain adaptation as one objective, L = L_s + λ·L_t + γ·D. "
        "`dalib COMMAND --help` lists a command's options.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, summary in COMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)
    return parser
