"""torchvision's FCN-ResNet as a registry architecture."""

from __future__ import annotations

import torch
from torch import nn

from geoseg.errors import UnknownModelError

__all__ = ["FCN"]


class FCN(nn.Module):
    """torchvision FCN-ResNet with ``in_channels`` inputs, returning logits only.

    Args:
        encoder: ``"resnet50"`` or ``"resnet101"``.
        in_channels: input bands.
        num_classes: output classes.
    """

    def __init__(self, encoder: str, in_channels: int, num_classes: int) -> None:
        super().__init__()
        from torchvision.models import segmentation as tvs

        builders = {"resnet50": tvs.fcn_resnet50, "resnet101": tvs.fcn_resnet101}
        if encoder not in builders:
            raise UnknownModelError(f"fcn supports encoders {', '.join(builders)}, not {encoder!r}")
        self.net = builders[encoder](
            weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False
        )
        conv = self.net.backbone.conv1
        self.net.backbone.conv1 = nn.Conv2d(
            in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, K, H, W)`` logits."""
        out: torch.Tensor = self.net(x)["out"]
        return out
