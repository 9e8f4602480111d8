"""No checkpoint holds a non-finite weight: the run stops first, the earlier checkpoint intact."""

import re

import pytest
import torch

from tests.conftest import TOY, run_dalib


def test_a_huge_learning_rate_stops_before_writing_non_finite_weights(capsys, tmp_path):
    args = ["fit", "-c", str(TOY / "dann.yaml"), "--model.checkpoint_every_n_steps=1",
            "--model.lr=1e6"]  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        run_dalib(args, tmp_path)
    assert stop.value.code == 2
    error = [line for line in capsys.readouterr().err.splitlines() if "dalib: error" in line]
    match = re.search(r"parameter (network\.\S+) became non-finite by step (\d+)", error[0])
    assert match, error
    (last,) = tmp_path.rglob("*.ckpt")
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == int(match.group(2)) - 1 >= 1  # the step before
    state = checkpoint["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert not list(tmp_path.rglob("result.json"))
