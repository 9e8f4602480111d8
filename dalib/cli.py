"""The ``dalib`` command: ``fit``, ``validate``, ``test`` (Lightning's CLI:
``dalib.lightning_cli``), ``sweep``, ``report`` and ``list``.

``dalib list`` names the components a config can select (``dalib list KIND NAME``: one's options).

``dalib fit -c experiments/toy/dann.yaml --model.gamma 0.5`` trains and writes ``result.json``
in the run directory; ``dalib validate`` and ``dalib test`` evaluate a checkpoint
(``--ckpt_path``) and write their record beside it; ``dalib sweep`` runs many fits and ``dalib
report`` tabulates them. Bad input stops with one line, ``dalib: error: ...``, and exit status 2.

``dalib --help`` and an unknown command import only the standard library; each command imports
what it needs when it runs.
"""

from __future__ import annotations

import sys

from dalib.commands import command_parser
from dalib.console import fail


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``dalib`` command."""
    arguments = sys.argv[1:] if args is None else list(args)
    if not arguments or not arguments[0].startswith("-") or arguments[0] in ("-h", "--help"):
        command_parser().parse_args(arguments[:1])  # --help, or an unknown command: one line
    from dalib.errors import DalibError, show_warnings_on_one_line

    show_warnings_on_one_line()
    try:
        if arguments[0] == "sweep":
            from dalib import sweep

            return sweep.main(arguments[1:], main)
        if arguments[0] == "report":
            from dalib import report

            return report.main(arguments[1:])
        if arguments[0] == "list":
            from dalib import listing

            return listing.main(arguments[1:])
        from dalib.lightning_cli import run_lightning

        run_lightning(arguments)
    except DalibError as error:
        fail(str(error))


if __name__ == "__main__":
    main()
