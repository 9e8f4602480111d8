"""Backbones: torchvision networks by name, a real ImageNet checkpoint, frozen BatchNorm, DTN."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms
from torchvision.models import get_model

from dalib import DalibError, DomainAdaptationModule
from dalib.models import BACKBONES
from dalib.models.backbones import TORCHVISION_ARCHITECTURES

WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights"
MOBILENET = WEIGHTS / "mobilenet_v2_imagenet_torchvision.pt"
# Top-1 classes that the weights' README lists for its test images.
EXPECTED_TOP1 = {
    "cat.bmp": "Egyptian cat",
    "bird.bmp": "chickadee",
    "grace_hopper.bmp": "military uniform",
    "parrot.jpg": "macaw",
}
needs_weights = pytest.mark.skipif(not MOBILENET.is_file(), reason=f"no checkpoint at {WEIGHTS}")
HAS_TIMM = importlib.util.find_spec("timm") is not None


def batch_norms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize("name", TORCHVISION_ARCHITECTURES)
@pytest.mark.slow
def test_torchvision_backbone_returns_pooled_features(name):
    backbone = BACKBONES.build(name, input_shape=(3, 64, 64)).eval()
    with torch.no_grad():
        features = backbone(torch.randn(2, 3, 64, 64))
    assert features.shape == (2, backbone.out_features)


@pytest.mark.slow
def test_out_features_are_the_widths_before_the_classifier():
    widths = {
        name: BACKBONES.build(name, input_shape=(3, 64, 64)).out_features
        for name in ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small"]
    }
    assert widths == {
        "resnet18": 512,
        "resnet50": 2048,
        "mobilenet_v2": 1280,
        "mobilenet_v3_small": 576,
    }


@needs_weights
@pytest.mark.slow
def test_mobilenet_v2_checkpoint_classifies_the_readme_images():
    backbone = BACKBONES.build(
        {"name": "mobilenet_v2", "checkpoint": str(MOBILENET), "frozen_bn": True},
        input_shape=(3, 224, 224),
    ).train()  # frozen BN: train mode keeps the pretrained statistics
    state = torch.load(MOBILENET, weights_only=True, map_location="cpu")
    labels = (WEIGHTS / "imagenet_labels.txt").read_text().splitlines()
    preprocess = transforms.Compose(
        [
            transforms.Resize((224, 224), interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.ToTensor(),
            transforms.Normalize(mean=[128 / 255] * 3, std=[128 / 255] * 3),
        ]
    )
    images = torch.stack(
        [preprocess(Image.open(WEIGHTS / name).convert("RGB")) for name in EXPECTED_TOP1]
    )
    with torch.no_grad():
        logits = backbone(images) @ state["classifier.1.weight"].T + state["classifier.1.bias"]
    top1 = [labels[i + 1] for i in logits.argmax(1).tolist()]
    assert top1 == list(EXPECTED_TOP1.values())


@pytest.mark.parametrize("frozen_bn", [True, False])
def test_frozen_bn_keeps_running_statistics_in_train_mode(frozen_bn):
    backbone = BACKBONES.build(
        {"name": "mobilenet_v3_small", "frozen_bn": frozen_bn}, input_shape=(3, 64, 64)
    )
    backbone.eval().train()
    norms = batch_norms(backbone)
    before = [bn.running_mean.clone() for bn in norms]
    backbone(torch.randn(4, 3, 64, 64))
    unchanged = all(torch.equal(b, bn.running_mean) for b, bn in zip(before, norms, strict=True))
    assert backbone.training
    assert all(bn.training != frozen_bn for bn in norms)
    assert unchanged == frozen_bn
    assert all(bn.weight.requires_grad for bn in norms)


def test_a_checkpoint_of_another_architecture_is_rejected(tmp_path):
    path = tmp_path / "resnet18.pt"
    torch.save(get_model("resnet18").state_dict(), path)
    with pytest.raises(DalibError, match=r"resnet18\.pt.*mobilenet_v2: missing key") as error:
        BACKBONES.build({"name": "mobilenet_v2", "checkpoint": str(path)}, input_shape=(3, 64, 64))
    assert "\n" not in str(error.value)


def test_a_checkpoint_with_another_head_names_the_shape_mismatch(tmp_path):
    path = tmp_path / "ten_classes.pt"
    torch.save(get_model("mobilenet_v3_small", num_classes=10).state_dict(), path)
    with pytest.raises(DalibError, match=r"'classifier\.3\.weight' has shape \(10, 1024\)"):
        BACKBONES.build(
            {"name": "mobilenet_v3_small", "checkpoint": str(path)}, input_shape=(3, 64, 64)
        )


def test_a_missing_checkpoint_file_is_named(tmp_path):
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(DalibError, match=r"nowhere\.pt' does not exist"):
        BACKBONES.build({"name": "resnet18", "checkpoint": str(missing)}, input_shape=(3, 64, 64))


def test_weights_without_network_suggest_a_checkpoint():
    try:
        BACKBONES.build(
            {"name": "mobilenet_v3_small", "weights": "DEFAULT"}, input_shape=(3, 64, 64)
        )
    except DalibError as error:
        assert "checkpoint" in str(error) and "\n" not in str(error)
    else:
        pytest.skip("torchvision found the weights (in its cache or online)")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"weights": "IMAGENET9K"}, "unknown weights 'IMAGENET9K' for resnet18; choose one of"),
        ({"weights": "DEFAULT", "checkpoint": "x.pt"}, "weights or checkpoint, not both"),
        ({"pretrained": True}, "unknown option 'pretrained'"),
    ],
)
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(DalibError, match=message):
        BACKBONES.build({"name": "resnet18", **options}, input_shape=(3, 64, 64))


@pytest.mark.parametrize("shape", [(1, 64, 64), (3, 16, 16), (3072,)])
def test_torchvision_backbones_need_rgb_images(shape):
    with pytest.raises(DalibError, match=r"RGB images of shape \(3, H, W\)"):
        BACKBONES.build("resnet18", input_shape=shape)


def test_dtn_flattens_256_maps_of_4x4_for_32x32_digits():
    dtn = BACKBONES.build("dtn", input_shape=(3, 32, 32)).eval()
    assert dtn.out_features == 256 * 4 * 4
    assert dtn(torch.randn(2, 3, 32, 32)).shape == (2, 4096)
    with pytest.raises(DalibError, match="dtn takes images"):
        BACKBONES.build("dtn", input_shape=(784,))
    full = BACKBONES.build("dtn_fc", input_shape=(3, 32, 32)).eval()
    assert full(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    extra = sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in dtn.parameters())
    assert extra == 512 * 4097 + 2 * 512  # Linear(4096, 512) and BatchNorm1d(512)


def test_lenet_fc_is_tll_lenet_with_its_500_unit_layer():
    conv = BACKBONES.build("lenet", input_shape=(1, 28, 28))
    full = BACKBONES.build("lenet_fc", input_shape=(1, 28, 28)).eval()
    assert full(torch.randn(3, 1, 28, 28)).shape == (3, 500)
    params = sum(p.numel() for p in full.parameters())
    # conv1 20·(25+1), conv2 50·(20·25+1), fc 500·(800+1): the digits LeNet of TLL
    assert params == sum(p.numel() for p in conv.parameters()) + 500 * 801 == 426_070
    with pytest.raises(DalibError, match="lenet_fc takes"):
        BACKBONES.build("lenet_fc", input_shape=(1, 32, 32))


@pytest.mark.skipif(not HAS_TIMM, reason="timm is not installed")
def test_timm_backbone_returns_num_features():
    backbone = BACKBONES.build({"name": "timm", "model": "resnet18"}, input_shape=(3, 64, 64))
    assert backbone.eval()(torch.randn(2, 3, 64, 64)).shape == (2, backbone.out_features)


@pytest.mark.skipif(HAS_TIMM, reason="timm is installed")
def test_timm_backbone_without_timm_says_how_to_install_it():
    with pytest.raises(DalibError, match="pip install timm"):
        BACKBONES.build({"name": "timm", "model": "resnet18"}, input_shape=(3, 64, 64))


@pytest.mark.slow
def test_resnet18_trains_end_to_end_in_the_module():
    module = DomainAdaptationModule(
        num_classes=5, input_shape=(3, 64, 64), backbone={"name": "resnet18"}, bottleneck_dim=32
    )
    logits = module(torch.randn(4, 3, 64, 64))
    assert logits.shape == (4, 5)
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    assert module.network.backbone.body.conv1.weight.grad.abs().sum() > 0
