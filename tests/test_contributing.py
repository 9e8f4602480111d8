"""The CONTRIBUTING guide's example discrepancy works as written."""

import re
import textwrap

import pytest
import torch

from dalib import DomainAdaptationModule
from tests.conftest import REPO


def test_the_guide_example_registers_and_trains():
    guide = (REPO / "CONTRIBUTING.md").read_text()
    code = re.search(r"```python\n(.*?)```", guide, re.S).group(1)
    namespace: dict = {}
    exec(textwrap.dedent(code), namespace)
    module = DomainAdaptationModule(num_classes=2, input_shape=(2,), discrepancy="mean_distance")
    f_s, f_t = torch.randn(6, 3), torch.randn(4, 3) + 1.0
    expected = ((f_s.mean(0) - f_t.mean(0)) ** 2).sum()
    assert module.objective.discrepancy(f_s, f_t).item() == pytest.approx(expected.item(), rel=1e-5)
    batch = {
        "source": (torch.randn(8, 2), torch.randint(0, 2, (8,))),
        "target": (torch.randn(8, 2), torch.full((8,), -1)),
    }
    loss = module.compute_losses(batch, progress=0.5)["loss"]
    loss.backward()
    assert module.network.backbone[1].weight.grad.abs().sum() > 0
