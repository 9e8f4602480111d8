"""The documentation: the site builds strictly and offline, its notebooks are current, the
README stays a short first page, and every page is in the nav."""

import os
import re
import subprocess
import sys

import nbformat
import pytest

from tests.conftest import REPO

DOCS = REPO / "docs"


def nav_entries() -> set[str]:
    """The page paths that mkdocs.yml's nav names (read as text: the file holds !ENV tags)."""
    nav = (REPO / "mkdocs.yml").read_text().split("\nnav:\n", 1)[1]
    return set(re.findall(r":\s+(\S+\.(?:md|ipynb))", nav))


def test_every_page_is_in_the_nav():
    pages = {
        path.relative_to(DOCS).as_posix()
        for pattern in ("*.md", "*.ipynb")
        for path in DOCS.rglob(pattern)
    }
    assert pages - nav_entries() == set(), "add these pages to the nav in mkdocs.yml"
    assert nav_entries() - pages == set(), "the nav names pages that docs/ does not have"


def test_the_readme_is_a_short_first_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) <= 12_000
    assert len(readme.splitlines()) <= 200
    assert "<!-- ci:setup -->\n```bash\n" in readme and "<!-- ci:test -->\n```bash\n" in readme
    assert "mkdocs serve" in readme


@pytest.mark.parametrize(
    "source", sorted((REPO / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem
)
def test_the_rendered_notebooks_are_their_sources_run(source):
    rendered_path = DOCS / "notebooks" / source.name
    assert rendered_path.exists(), f"run: python docs/render_notebooks.py {source.stem}"
    original, rendered = (nbformat.read(path, as_version=4) for path in (source, rendered_path))

    def cells(notebook):
        return [(cell.cell_type, cell.source) for cell in notebook.cells]

    assert cells(rendered) == cells(original), f"run: python docs/render_notebooks.py {source.stem}"
    code = [cell for cell in rendered.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code)
    assert not [o for cell in code for o in cell.outputs if o.output_type == "error"]


@pytest.mark.slow
def test_the_site_builds_strictly(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "DALIB_DOCS_CACHE": str(tmp_path / "cache"),  # not the checkout's .cache/
        "NO_MKDOCS_2_WARNING": "1",  # mkdocs-material's banner about its future
    }
    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,  # snippets resolve README.md and CONTRIBUTING.md from here
        env=env,
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    assert "WARNING" not in build.stderr

    from dalib.discrepancy import DISCREPANCIES, builtin_discrepancies

    for name in builtin_discrepancies():
        family = DISCREPANCIES.get(name).__module__.rsplit(".", 1)[1]
        page = (site / "discrepancies" / family / "index.html").read_text()
        assert f'id="{name}"' in page
    for result in (REPO / "benchmarks" / "results").rglob("*.md"):
        relative = result.relative_to(REPO / "benchmarks" / "results").with_suffix("")
        assert (site / "results" / relative / "index.html").exists()
    assert "data:image/png;base64" in (site / "notebooks" / "quickstart" / "index.html").read_text()
    api = (site / "api" / "dalib.module" / "index.html").read_text()
    assert 'id="dalib.module.DomainAdaptationModule"' in api
