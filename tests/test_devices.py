"""The deterministic measures give the same value and gradient on a CUDA device as on the CPU."""

import pytest
import torch

from dalib.discrepancy import DISCREPANCIES

pytestmark = pytest.mark.gpu

D, C = 8, 3
# Measures whose value draws no random numbers (sliced Wasserstein with fixed directions)
SPECS = [
    {"name": "mmd"},
    {"name": "mmd", "kernel": "laplacian"},
    {"name": "jmmd"},
    {"name": "coral"},
    {"name": "emd"},
    {"name": "sinkhorn"},
    {"name": "deepjdot"},
    {"name": "sliced_wasserstein", "seed": 0},
]


def value_and_gradients(spec: dict, device: str) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    f_s = torch.randn(24, D, generator=g, dtype=torch.float64)
    f_t = torch.randn(20, D, generator=g, dtype=torch.float64) * 1.5 + 1.0
    head = torch.randn(D, C, generator=g, dtype=torch.float64)
    f_s, f_t, head = f_s.to(device), f_t.to(device), head.to(device)
    f_s.requires_grad_(True), f_t.requires_grad_(True)
    measure = DISCREPANCIES.build(dict(spec), in_features=D, num_classes=C).double().to(device)
    logits_s = f_s @ head
    value = measure(f_s, f_t, logits_s=logits_s, logits_t=f_t @ head, y_s=logits_s.argmax(1))
    return [value, *torch.autograd.grad(value, [f_s, f_t])]


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: "-".join(map(str, spec.values())))
def test_cuda_gives_the_cpu_value_and_gradients(spec):
    on_cpu = value_and_gradients(spec, "cpu")
    on_cuda = value_and_gradients(spec, "cuda")
    assert on_cuda[0].device.type == "cuda"
    for got, want in zip(on_cuda, on_cpu, strict=True):
        torch.testing.assert_close(got.cpu(), want, rtol=1e-6, atol=1e-9)
