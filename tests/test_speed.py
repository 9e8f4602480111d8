"""What keeps ``dalib fit`` at the pace of a hand-written loop, and what it measures."""

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from pytorch_lightning.callbacks import TQDMProgressBar

from dalib.data import DomainDataModule
from dalib.lightning_cli import DalibCLI
from dalib.module import DomainAdaptationModule
from dalib.progress import ThrottledProgressBar
from dalib.speed import SpeedOptions
from tests.conftest import TOY


def test_throttled_bar_redraws_by_the_clock_and_always_at_the_end(monkeypatch):
    drawn = []
    monkeypatch.setattr(
        TQDMProgressBar, "on_train_batch_end", lambda self, *args: drawn.append(args[-1])
    )
    monkeypatch.setattr(ThrottledProgressBar, "total_train_batches", 6)
    bar = ThrottledProgressBar(min_interval_s=1.0)
    clock = iter([0.0, 0.1, 0.5, 1.2, 1.3, 1.4])
    monkeypatch.setattr("dalib.progress.time.monotonic", lambda: next(clock))
    for batch_idx in range(6):
        bar.on_train_batch_end(None, None, None, None, batch_idx)
    assert drawn == [0, 3, 5]  # by the clock (t = 0, 1.2), and the epoch's last batch


def cli(*args: str) -> DalibCLI:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DalibCLI(DomainAdaptationModule, DomainDataModule, run=False,
                        args=["-c", str(TOY / "dann.yaml"), *args])  # fmt: skip


@pytest.mark.slow
def test_the_cli_uses_the_throttled_bar_unless_told_otherwise():
    assert type(cli().trainer.progress_bar_callback) is ThrottledProgressBar
    assert cli("--trainer.enable_progress_bar=false").trainer.progress_bar_callback is None
    own = cli("--trainer.callbacks+=TQDMProgressBar", "--trainer.callbacks.refresh_rate=7")
    assert type(own.trainer.progress_bar_callback) is TQDMProgressBar
    assert own.trainer.progress_bar_callback.refresh_rate == 7


PEAK_CHECK = """
import numpy as np, torch
from dalib.step_stats import peak_rss_mib, reset_peak_rss
before = np.ones(80 * 2**20 // 8)  # 80 MiB, touched and freed before the reset
del before
reset_peak_rss()
baseline = peak_rss_mib()
during = torch.ones(40 * 2**20 // 4)  # 40 MiB after it
print(peak_rss_mib() - baseline)
"""


@pytest.mark.slow
def test_peak_memory_counts_from_the_reset_not_from_earlier_allocations():
    # a fresh process: in a long test session, freed heap pages stay resident and get reused
    out = subprocess.run([sys.executable, "-c", PEAK_CHECK], capture_output=True, text=True)
    grown = float(out.stdout.strip() or "nan")
    assert 30 < grown < 70, (grown, out.stderr[-500:])  # without the reset: the earlier 80 MiB


def test_channels_last_changes_the_layout_not_the_outputs():
    torch.manual_seed(0)
    plain = DomainAdaptationModule(num_classes=10, input_shape=(1, 28, 28), backbone="lenet",
                                   bottleneck_dim=500).eval()  # fmt: skip
    fast = DomainAdaptationModule(num_classes=10, input_shape=(1, 28, 28), backbone="lenet",
                                  bottleneck_dim=500).eval()  # fmt: skip
    fast.load_state_dict(plain.state_dict())
    SpeedOptions(channels_last=True).setup(None, fast, "fit")
    conv = fast.network.backbone[3].weight  # 20 input channels: the two layouts differ
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    x = torch.rand(8, 1, 28, 28)
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-5)
    assert fast.state_dict().keys() == plain.state_dict().keys()


@pytest.mark.slow
def test_bf16_mixed_precision_trains_through_dalib(fit_toy):
    record = fit_toy("dann", "--trainer.max_epochs=3", "--trainer.precision=bf16-mixed")
    assert record["config"]["trainer"]["precision"] == "bf16-mixed"
    assert np.isfinite(record["metrics"]["train/source_ce"])
    assert record["source_val_acc"] >= 0.8
