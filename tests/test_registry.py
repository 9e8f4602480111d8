"""Registry look-ups: built-ins, ``package.module:Name`` specs, and entry points of installed
distributions (a real ``*.dist-info`` folder on ``sys.path``, found by ``importlib.metadata``)."""

import importlib
import sys
import textwrap
import warnings
from importlib import metadata

import pytest
import torch

from dalib.discrepancy import DISCREPANCIES
from dalib.errors import DalibError, DalibWarning
from dalib.registry import Registry

GROUP = "dalib_tests.widgets"


class Widget:
    def __init__(self, size: int = 1, in_features: int | None = None) -> None:
        self.size, self.in_features = size, in_features


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    """A folder on ``sys.path`` where a test writes modules and installed-distribution metadata."""
    monkeypatch.syspath_prepend(str(tmp_path))
    created = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - created:  # modules the test imported from the folder
        if getattr(sys.modules[name], "__file__", "").startswith(str(tmp_path)):
            del sys.modules[name]


def module(root, name: str, source: str) -> str:
    (root / f"{name}.py").write_text(textwrap.dedent(source))
    importlib.invalidate_caches()
    return name


def distribution(root, name: str, entry_points: str) -> None:
    """What ``pip install`` leaves: ``<name>-0.1.dist-info`` with METADATA and entry points."""
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    importlib.invalidate_caches()


def widgets() -> Registry:
    registry = Registry("widget", GROUP)
    registry.register("builtin")(Widget)
    return registry


WIDGET_SOURCE = textwrap.dedent(
    """
    class Widget:
        '''A widget from a plugin.'''

        def __init__(self, size: int = 1):
            self.size = size
    """
)


def test_a_spec_builds_with_options_and_context(plugin_path):
    name = module(plugin_path, "spec_widgets", WIDGET_SOURCE)
    built = widgets().build({"name": f"{name}:Widget", "size": 3}, in_features=5)
    assert type(built).__module__ == name and built.size == 3


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no_such_package_xyz.mod:Widget", "cannot import 'no_such_package_xyz.mod'"),
        ("spec_errors:Missing", "'spec_errors' has no attribute 'Missing'"),
        ("spec_errors:VALUE", "is a int, not a class or function that builds a widget"),
        ("spec_errors:Widget:", "is not a valid spec; write 'package.module:Name'"),
        ("spec errors:Widget", "is not a valid spec"),
        ("spec_raises:Widget", "importing 'spec_raises' failed: ZeroDivisionError: division by"),
    ],
)
def test_a_bad_spec_is_one_line_naming_what_to_fix(plugin_path, spec, message):
    module(plugin_path, "spec_errors", WIDGET_SOURCE + "\nVALUE = 3\n")
    module(plugin_path, "spec_raises", "1 / 0\n")
    with pytest.raises(DalibError, match=message) as error:
        widgets().get(spec)
    assert "\n" not in str(error.value)


def test_entry_points_are_read_only_for_unknown_names_and_listings(plugin_path, monkeypatch):
    module(plugin_path, "ep_widgets", WIDGET_SOURCE)
    distribution(plugin_path, "widget-plugin", f"[{GROUP}]\nfancy = ep_widgets:Widget\n")
    registry = widgets()

    def no_entry_points(**_):
        raise AssertionError("entry points read for a built-in")

    with monkeypatch.context() as patch:
        patch.setattr(metadata, "entry_points", no_entry_points)
        assert isinstance(registry.build("builtin"), Widget)
    assert registry.names() == ["builtin", "fancy"]
    assert "ep_widgets" not in sys.modules  # listing names imports no plugin
    assert registry.build({"name": "fancy", "size": 2}).size == 2
    assert registry.entry_points()["fancy"].dist.name == "widget-plugin"
    assert list(registry.entries()) == ["builtin", "fancy"]
    assert list(registry.entries(plugins=False)) == ["builtin"]


def test_a_broken_plugin_is_one_line_and_leaves_the_others_working(plugin_path):
    module(plugin_path, "ok_widgets", WIDGET_SOURCE)
    module(plugin_path, "broken_widgets", "import no_such_dependency_xyz\n")
    distribution(
        plugin_path,
        "mixed-plugins",
        f"[{GROUP}]\nbroken = broken_widgets:Widget\nfine = ok_widgets:Widget\n",
    )
    registry = widgets()
    with pytest.raises(DalibError) as error:
        registry.get("broken")
    assert str(error.value) == (
        "widget plugin 'broken' (broken_widgets:Widget, from mixed-plugins 0.1) failed to load: "
        "ModuleNotFoundError: No module named 'no_such_dependency_xyz'"
    )
    assert registry.build("fine").size == 1
    with pytest.warns(DalibWarning, match="widget plugin 'broken'"):
        assert list(registry.entries()) == ["builtin", "fine"]


def test_a_plugin_cannot_replace_a_built_in(plugin_path):
    module(plugin_path, "shadow_widgets", WIDGET_SOURCE)
    distribution(plugin_path, "shadowing", f"[{GROUP}]\nbuiltin = shadow_widgets:Widget\n")
    registry = widgets()
    assert registry.get("builtin") is Widget
    with pytest.warns(DalibWarning, match="select it as 'shadow_widgets:Widget'"):
        registry.names()


def test_an_unknown_name_lists_built_ins_and_plugins(plugin_path):
    distribution(plugin_path, "hinted", f"[{GROUP}]\nfancy = anything:Widget\n")
    with pytest.raises(DalibError, match=r"\(did you mean 'fancy'\?\); choose one of: builtin, fa"):
        widgets().get("fency")


def test_discrepancy_plugins_come_from_their_group(plugin_path):
    module(
        plugin_path,
        "ep_measure",
        """
        from dalib.discrepancy.coral import CORAL

        class Twice(CORAL):
            def forward(self, f_s, f_t, **kwargs):
                return 2 * super().forward(f_s, f_t, **kwargs)
        """,
    )
    distribution(plugin_path, "measure-plugin", "[dalib.discrepancies]\ntwice = ep_measure:Twice\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning about the built-ins
        assert "twice" in DISCREPANCIES.names()
    twice = DISCREPANCIES.build("twice")
    f_s, f_t = torch.randn(8, 3, generator=torch.Generator().manual_seed(0)), torch.randn(8, 3)
    assert twice(f_s, f_t) == pytest.approx(2 * DISCREPANCIES.build("coral")(f_s, f_t).item())


def test_importance_weighting_takes_an_estimator_spec_and_refuses_the_old_options():
    from dalib.weighting import ImportanceWeighting

    callback = ImportanceWeighting({"name": "classifier", "alpha": 0.5, "clip": 10.0})
    assert (callback.estimator.alpha, callback.estimator.clip) == (0.5, 10.0)
    with pytest.raises(DalibError, match=r"estimator: \{name: ulsif, alpha: 0.5, clip: 10.0\}$"):
        ImportanceWeighting("ulsif", options={"alpha": 0.5, "clip": 10.0})


def test_selection_accepts_plugin_scores_by_spec(plugin_path):
    from dalib.selection.scores import SCORES, check_selection, tracked_scores

    name = module(
        plugin_path,
        "spec_scores",
        """
        from dalib.selection import Score

        def first_logit():
            return Score(lambda out: float(out.target_logits[:, 0].mean()), higher_is_better=True)
        """,
    )
    check_selection(f"{name}:first_logit")
    scores = tracked_scores(f"{name}:first_logit", "last")
    assert list(scores) == [*SCORES.entries(plugins=False), f"{name}:first_logit"]
    assert scores[f"{name}:first_logit"].mode == "max"
    with pytest.raises(DalibError, match=r"unknown selection 'bset'; choose one of: last, oracle"):
        check_selection("bset")
