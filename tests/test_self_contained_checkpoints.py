"""A checkpoint trained with init_from, a distillation teacher or L2-SP tests after the files it
came from are deleted; user-given checkpoints are read weights-only."""

import json
import shutil

import pytest
import torch

from dalib import DomainAdaptationModule
from dalib.errors import DalibError
from tests.conftest import TOY, run_dalib

pytestmark = pytest.mark.slow  # real fits through the CLI

SHORT = ["--trainer.max_epochs=1", "--data.iterations_per_epoch=5"]
CHILDREN = {
    "init_from": ["--model.init_from={parent}", "--model.init_modules=[backbone, bottleneck]"],
    "teacher": ["--model.distillation={{teacher: {parent}, domains: [source, target]}}"],
    "l2_sp": ["--model.init_from={parent}", "--model.l2_sp=0.5"],
}


def metrics_of_dalib_test(args: list[str], checkpoint, save_dir) -> dict:
    """``dalib test`` of ``checkpoint``: the metrics of the record it writes beside it."""
    run_dalib(["test", *args, f"--ckpt_path={checkpoint}"], save_dir)
    return json.loads((checkpoint.parent.parent / "test_result.json").read_text())["metrics"]


@pytest.fixture(scope="module")
def parent_and_children(tmp_path_factory):
    """A parent trained a few steps, copied to ``parent.ckpt``; a child of each kind from it."""
    root = tmp_path_factory.mktemp("checkpoints")
    run_dalib(["fit", "-c", str(TOY / "source_only.yaml"), *SHORT], root / "parent_run")
    (written,) = (root / "parent_run").rglob("last.ckpt")
    parent = root / "parent.ckpt"
    shutil.copy(written, parent)
    children = {}
    for kind, options in CHILDREN.items():
        args = ["-c", str(TOY / "dann.yaml"), *(o.format(parent=parent) for o in options)]
        run_dalib(["fit", *args, *SHORT], root / kind)
        (child,) = (root / kind).rglob("last.ckpt")
        children[kind] = args, child
    return root, parent, children


def test_children_test_alike_after_their_parent_file_is_deleted(parent_and_children):
    root, parent, children = parent_and_children
    parent_backbone = {
        k: v for k, v in torch.load(parent, weights_only=True)["state_dict"].items()
        if k.startswith("network.backbone.")
    }  # fmt: skip
    before = {
        kind: metrics_of_dalib_test(args, child, root / f"before_{kind}")
        for kind, (args, child) in children.items()
    }
    parent.unlink()
    for kind, (args, child) in children.items():
        after = metrics_of_dalib_test(args, child, root / f"after_{kind}")
        assert after["test/target_acc"] == before[kind]["test/target_acc"], kind
        assert after["test/source_ce"] == before[kind]["test/source_ce"], kind
    # what the children needed of the parent is in their checkpoints
    l2_sp_state = torch.load(children["l2_sp"][1], weights_only=True)["state_dict"]
    theta_0 = [v for k, v in l2_sp_state.items() if k.startswith("objective.start_weights.")]
    assert len(theta_0) == len(parent_backbone)
    for start, weight in zip(theta_0, parent_backbone.values(), strict=True):
        assert torch.equal(start, weight)  # θ₀ is the parent's backbone, init_from's weights
    student = DomainAdaptationModule.load_from_checkpoint(children["teacher"][1])
    teacher = student.objective.distillation.teacher
    for name, weight in parent_backbone.items():
        assert torch.equal(teacher.state_dict()[name.removeprefix("network.")], weight)
    batch = {"source": (torch.randn(4, 2), torch.zeros(4).long()),
             "target": (torch.randn(4, 2), torch.zeros(4).long())}  # fmt: skip
    assert torch.isfinite(student.compute_losses(batch, progress=0.5)["distillation"])


class Payload:
    """What a tampered checkpoint could hold: an object that runs code when unpickled."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (type(self.marker).touch, (self.marker,))


@pytest.mark.parametrize("role", ["init_from", "teacher"])
def test_a_tampered_checkpoint_is_refused_without_running_its_code(tmp_path, role):
    marker, tampered = tmp_path / "code_ran", tmp_path / "tampered.ckpt"
    torch.save({"state_dict": {}, "payload": Payload(marker)}, tampered)
    if role == "init_from":
        module = DomainAdaptationModule(num_classes=2, input_shape=(2,), init_from=str(tampered))
    else:
        module = DomainAdaptationModule(
            num_classes=2, input_shape=(2,), distillation={"teacher": str(tampered)}
        )
    with pytest.raises(DalibError, match=r"cannot read .*weights_only=True"):
        module.start()
    assert not marker.exists()
    torch.load(tampered, weights_only=False)  # what an unrestricted load would have done
    assert marker.exists()
