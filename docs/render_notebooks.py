"""Run the notebooks in full and write them, outputs included, to docs/notebooks/ for the site.

    python docs/render_notebooks.py            # every notebook (a few minutes on a CPU)
    python docs/render_notebooks.py quickstart # one

The site shows these executed copies (mkdocs-jupyter, no execution at build time), so that
``mkdocs build`` stays fast and offline; ``tests/test_docs.py`` fails when a copy's cells differ
from its source in ``notebooks/``, naming this command.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import nbclient
import nbformat

REPO = Path(__file__).resolve().parents[1]
SOURCES = REPO / "notebooks"
RENDERED = REPO / "docs" / "notebooks"
#: Run first and then removed: Lightning's INFO lines (seed, devices, tips) at every fit would
#: bury what the notebooks print; its warnings stay.
QUIET = """import logging
import pytorch_lightning  # its import sets its loggers to INFO: lower them after it
for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
    logging.getLogger(name).setLevel(logging.WARNING)"""


def render(source: Path, destination: Path) -> None:
    """Execute ``source`` from its own folder with this checkout's dalib; write it executed."""
    notebook = nbformat.read(source, as_version=4)
    notebook.cells.insert(0, nbformat.v4.new_code_cell(QUIET))
    client = nbclient.NotebookClient(
        notebook,
        timeout=1800,
        kernel_name="python3",
        record_timing=False,  # no timestamps: a re-render changes only what the code printed
        resources={"metadata": {"path": str(source.parent)}},
    )
    client.execute()
    del notebook.cells[0]
    for cell in notebook.cells:  # numbered as if the quiet cell had not run
        if cell.cell_type == "code" and cell.execution_count:
            cell.execution_count -= 1
            for output in cell.outputs:
                if "execution_count" in output:
                    output.execution_count -= 1
    nbformat.write(notebook, destination)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook names (default: all)")
    args = parser.parse_args()
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])
    )
    os.environ.pop("DALIB_QUICK", None)  # the site shows the full runs
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend keeps the figures
    sources = [SOURCES / f"{name}.ipynb" for name in args.names] or sorted(SOURCES.glob("*.ipynb"))
    RENDERED.mkdir(exist_ok=True)
    for source in sources:
        render(source, RENDERED / source.name)
        print(f"wrote {(RENDERED / source.name).relative_to(REPO)}")


if __name__ == "__main__":
    main()
