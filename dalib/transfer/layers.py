"""Naming the parts of a network: modules by name pattern, and a backbone's layers by depth."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from torch import nn

from dalib.errors import DalibError


def name_matches(name: str, pattern: str) -> bool:
    """Whether ``pattern`` (a glob over dotted names) names ``name`` or a module containing it."""
    return fnmatchcase(name, pattern) or fnmatchcase(name, pattern + ".*")


def modules_matching(root: nn.Module, patterns: Sequence[str]) -> list[nn.Module]:
    """The submodules of ``root`` whose qualified names match any of ``patterns``.

    ``backbone`` names the whole backbone, ``backbone.body.features.1*`` some of its blocks.
    A pattern that names no module is an error, so a typo cannot silently freeze nothing.
    """
    named = [(name, module) for name, module in root.named_modules() if name]
    chosen: dict[int, nn.Module] = {}
    for pattern in patterns:
        hits = [module for name, module in named if fnmatchcase(name, pattern)]
        if not hits:
            examples = ", ".join(name for name, _ in named if "." not in name)
            raise DalibError(
                f"no module is named {pattern!r}; module names are dotted paths such as: "
                f"{examples} (and their children, e.g. backbone.0)"
            )
        chosen.update((id(module), module) for module in hits)
    return list(chosen.values())


def backbone_layers(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    """The backbone's layers from input to output, as ``(dotted name, module)``.

    The layers are the children that hold parameters, found by descending through wrappers with
    a single such child: the 19 blocks of MobileNetV2's ``features``, ResNet's ``conv1``, ``bn1``
    and ``layer1``…``layer4``, LeNet's two convolutions, an MLP's linear layers. "Depth" in
    freezing and in discriminative learning rates counts these.
    """
    prefix, module = "", backbone
    while True:
        children = [
            (name, child)
            for name, child in module.named_children()
            if any(True for _ in child.parameters())
        ]
        if len(children) != 1:
            return [(prefix + name, child) for name, child in children]
        name, module = children[0]
        prefix = f"{prefix}{name}."
