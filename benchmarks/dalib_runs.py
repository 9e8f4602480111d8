"""What the benchmark scripts share: ``dalib fit`` in a child process, the LeNet setting of the
committed digits tables, the overhead settings, and writing a result pair ``<name>.md`` /
``<name>.json``.

Light on purpose (no torch, no dalib import): a script that only starts runs does not pay for
them in its own process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# The network and batch of the bare loop (and of benchmarks/sweeps/digits_cpu.yaml), over the
# digits configs' Transfer-Learning-Library protocol (lenet_fc, 256-d bottleneck, batch 128)
LENET_SETTING = [
    "--model.backbone=lenet", "--model.bottleneck_dim=500", "--data.batch_size=32",
    "--model.lr_decay_alpha=10",
]  # fmt: skip
# The settings of the overhead and peak-memory benchmarks: dalib's overrides of the committed
# digits configs, and the bare loop's matching arguments
METHODS = ("source_only", "dann")
SETTINGS = {
    "lenet-32": (LENET_SETTING, {"batch_size": 32, "bottleneck": 500, "fully_connected": False}),
    "protocol-128": ([], {"batch_size": 128, "bottleneck": 256, "fully_connected": True}),
}


def fit_in_subprocess(config: Path, save_dir: Path, *overrides: str) -> tuple[dict[str, Any], Path]:
    """``dalib fit -c config [overrides]`` in a quiet child process that logs under
    ``save_dir`` (one run per folder); its ``result.json`` record and the run's folder."""
    subprocess.run(
        [
            sys.executable, "-m", "dalib.cli", "fit", "-c", str(config),
            f"--trainer.logger.init_args.save_dir={save_dir}",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            *overrides,
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    (path,) = save_dir.rglob("result.json")
    return json.loads(path.read_text()), path.parent


def write_results(out: Path, name: str, md: str, data: Any) -> None:
    """``out/<name>.md`` (the table, also printed) and ``out/<name>.json`` (the records)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(md)
    (out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    print(md)
