"""``dalib list``: every registered component with its summary, and one entry's options."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dalib import catalogue
from dalib.cli import main
from dalib.describe import describe
from tests.conftest import REPO


def dalib_list(capsys, *arguments: str) -> str:
    main(["list", *arguments])
    return capsys.readouterr().out


def test_every_entry_of_every_kind_is_listed_with_its_summary(capsys):
    out = dalib_list(capsys)
    for kind in catalogue.KINDS:
        assert f"\n{kind} (" in f"\n{out}", kind
        for entry in catalogue.descriptions(kind):
            assert f"  {entry.name} " in out and entry.summary in out
            if catalogue.entry(kind, entry.name).__module__.startswith("dalib."):
                assert entry.summary, f"{kind} {entry.name} has no docstring"
    assert "  mmd                 MMD² between source and target features" in out
    assert "  kmm         Kernel Mean Matching (Huang et al., 2007)" in out
    assert "  snd         Soft neighbourhood density of the target predictions" in out
    # a summary does not end at an abbreviation ("vs.", "et al.") within its first sentence
    assert '"Transferability vs. Discriminability", ICML 2019): ``R = ' in out


def test_one_kind(capsys):
    out = dalib_list(capsys, "schedules")
    assert out.splitlines() == [
        "schedules (model.gamma, model.lambda_t, model.reversal)",
        "  constant       The same weight throughout training.",
        "  dann_ramp      ``max_value·(2/(1+exp(-alpha·p)) - 1)``: 0 at the start, near "
        "``max_value`` by p≈0.5.",
        "  linear_warmup  Rises linearly from 0 to ``max_value`` over the first ``warmup`` "
        "fraction of training.",
    ]


def test_one_entry_shows_its_docstring_and_options(capsys):
    out = dalib_list(capsys, "discrepancies", "mmd")
    assert out.startswith("discrepancies mmd (model.discrepancy)\n\nMMD² between source")
    assert "  kernel: str | Mapping[str, Any] = 'gaussian'\n" in out
    assert "  estimator: Literal['biased', 'unbiased', 'linear'] = 'biased'\n" in out
    out = dalib_list(capsys, "discrepancies", "dann")
    assert "  hidden_dim: int = 128\n" in out and "set by dalib: in_features" in out
    assert "in_features:" not in out  # not an option: the objective passes it
    out = dalib_list(capsys, "datasets", "features")
    assert (
        "  target: str (required)\n      the target file adapted to; its labels are hidden" in out
    )
    out = dalib_list(capsys, "density-ratio-estimators", "classifier")
    assert "  alpha: float = 1.0\n" in out and "  clip: float | None = None\n" in out


def test_option_descriptions_come_from_the_docstring():
    def factory(width: int, depth: int = 2, *, act: str = "relu", **ignored) -> None:
        """A factory documented as Google style asks.

        Args:
            width: units per layer.
            depth: number of layers.
        """

    entry = describe("f", factory, context=("width",))
    assert entry.summary == "A factory documented as Google style asks."
    assert [(o.name, o.annotation, o.default, o.doc) for o in entry.options] == [
        ("depth", "int", 2, "number of layers."),
        ("act", "str", "relu", ""),
    ]
    assert entry.context == ("width",)
    # dalib's prose convention: the first clause that names the option in double backquotes
    cdan = catalogue.description("discrepancies", "cdan")
    doc = {option.name: option.doc for option in cdan.options}
    assert doc["entropy_conditioning"].startswith("CDAN+E with ``entropy_conditioning=True``")
    assert doc["grl_coeff"] == ""
    resnet = {o.name: o.doc for o in catalogue.description("backbones", "resnet50").options}
    assert resnet["frozen_bn"] == "frozen_bn: BatchNorm always in eval mode."


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["discrepancie"], "unknown kind 'discrepancie' (did you mean 'discrepancies'?)"),
        (["discrepancies", "mmdd"], "unknown discrepancy 'mmdd' (did you mean 'mmd'?)"),
        (["kernels", "gaussian", "x"], "unrecognized arguments: x"),
    ],
)
def test_unknown_names_get_one_line_with_the_close_match(capsys, arguments, message):
    with pytest.raises(SystemExit) as exit_:
        main(["list", *arguments])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert err.startswith("dalib: error: ") and message in err


@pytest.mark.slow
def test_a_fresh_process_lists_every_entry_dalib_registers():
    """``dalib list`` imports only each kind's packages: it must still see what importing all of
    dalib registers (a registration in a module those packages do not import would hide)."""
    script = """
import importlib, json, pkgutil, sys
import dalib
from dalib import catalogue
first = {kind: catalogue.registry(kind).names() for kind in catalogue.KINDS}
for module in pkgutil.walk_packages(dalib.__path__, "dalib."):
    importlib.import_module(module.name)
after = {kind: catalogue.registry(kind).names() for kind in catalogue.KINDS}
print(json.dumps([first, after]))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
    )
    first, after = json.loads(out.stdout.splitlines()[-1])
    assert first == after
    assert "cached_features" in first["datasets"]


@pytest.mark.slow
def test_fit_help_names_the_choices_and_where_to_see_their_options(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "`dalib list KIND NAME` shows one's options" in out
    for kind in ("discrepancies", "backbones", "datasets", "target_losses", "schedules"):
        names = catalogue.registry(kind).names()
        assert f"{kind} ({catalogue.KINDS[kind].where}): {', '.join(names)}" in out
    for option, listing in [
        ("--model.discrepancy", "`dalib list discrepancies [NAME]`"),
        ("--model.backbone", "`dalib list backbones NAME` shows one's options"),
        ("--model.target_loss", "`dalib list target_losses [NAME]`"),
        ("--model.gamma", "`dalib list schedules [NAME]`"),
        ("--data.dataset", "``dalib list datasets NAME`` shows one's options"),
    ]:
        help_text = out.split(f"{option} {option.split('.')[-1].upper()} ", 1)[1][:400]
        assert listing in help_text, option
