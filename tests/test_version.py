"""``dalib.__version__``: what pip recorded for the distribution, or a clear fallback."""

import importlib

import dalib


def test_version_is_the_installed_distributions(tmp_path, monkeypatch):
    info = tmp_path / "dalib_lightning-1.2.3.dist-info"  # what pip writes for dalib-lightning
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dalib-lightning\nVersion: 1.2.3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    assert dalib.installed_version() == "1.2.3"


def test_version_without_an_installed_distribution_says_so(monkeypatch):
    monkeypatch.setattr(dalib, "DISTRIBUTION", "no-such-distribution-xyz")
    assert dalib.installed_version() == "0+unknown" == dalib.UNKNOWN_VERSION


def test_version_is_public():
    assert "__version__" in dalib.__all__ and "__version__" in dir(dalib)
    assert dalib.__version__ == dalib.installed_version()
