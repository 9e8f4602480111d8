"""The plain PyTorch loop of docs/concepts/objective.md trains exactly as ``dalib fit`` does."""

import csv
import re

import torch

from tests.conftest import REPO, TOY, run_dalib

STEPS = 20


def documented_loop() -> dict:
    """Run the docs' plain-PyTorch loop; its namespace (``network``, ``losses``)."""
    page = (REPO / "docs" / "concepts" / "objective.md").read_text()
    section = page.split("## The objective without Lightning", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(code, namespace)
    return namespace


def test_the_documented_loop_gives_dalib_fits_losses_and_weights(tmp_path):
    plain = documented_loop()
    # no sanity check: its evaluation loaders would draw from the generator as they start, which
    # the plain loop does not have
    run_dalib(
        ["fit", "-c", str(TOY / "dann.yaml"), f"--trainer.max_steps={STEPS}",
         f"--data.iterations_per_epoch={STEPS}", "--trainer.log_every_n_steps=1",
         "--trainer.num_sanity_val_steps=0"],
        tmp_path,
    )  # fmt: skip
    (metrics,) = tmp_path.rglob("metrics.csv")
    with metrics.open() as rows:
        logged = [float(row["train/loss"]) for row in csv.DictReader(rows) if row["train/loss"]]
    assert len(logged) == len(plain["losses"]) == STEPS
    torch.testing.assert_close(torch.tensor(logged), torch.tensor(plain["losses"]))
    (last,) = tmp_path.rglob("last.ckpt")
    state = torch.load(last, weights_only=True)["state_dict"]
    for part in ("network", "objective"):
        for name, value in plain[part].state_dict().items():
            assert torch.equal(value, state[f"{part}.{name}"]), name
