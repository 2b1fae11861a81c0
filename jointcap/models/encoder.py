"""Image encoder: a torchvision ResNet cut at a chosen stage, with a chosen output stride."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models

_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
_STAGE_CHANNELS = {
    "resnet18": (64, 128, 256, 512),
    "resnet34": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048),
    "resnet101": (256, 512, 1024, 2048),
}


def _dilation_flags(stage: int, output_stride: int) -> list[bool]:
    """Which of layer2..4 trade their stride for dilation so the map keeps `output_stride`."""
    if output_stride not in (4, 8, 16, 32):
        raise ValueError(f"model.encoder.output_stride must be one of 4, 8, 16, 32, got {output_stride}")
    natural = {1: 4, 2: 8, 3: 16, 4: 32}[stage]
    flags = [False, False, False]
    stride = natural
    for layer in (4, 3, 2):  # undo strides from the deepest used stage down
        if stride > output_stride and layer <= stage:
            flags[layer - 2] = True
            stride //= 2
    if stride != output_stride:
        raise ValueError(
            f"model.encoder: stage {stage} cannot reach output_stride {output_stride} (natural stride {natural})"
        )
    return flags


def _build(name: str, weights: str | None, flags: list[bool]) -> models.ResNet:
    """Bottleneck ResNets dilate the layers they un-stride; BasicBlock ones (18/34) cannot, so
    those layers just run at stride 1 (a larger receptive field is then traded for resolution)."""
    if name in ("resnet50", "resnet101"):
        return getattr(models, name)(weights=weights, replace_stride_with_dilation=flags)
    net = getattr(models, name)(weights=weights)
    for layer, unstride in zip((net.layer2, net.layer3, net.layer4), flags, strict=False):
        if unstride:
            layer[0].conv1.stride = (1, 1)
            layer[0].downsample[0].stride = (1, 1)
    return net


class Encoder(nn.Module):
    """ResNet trunk up to `stage` (1..4); returns the spatial map (B, C, H/stride, W/stride)."""

    def __init__(
        self,
        name: str = "resnet18",
        weights: str | None = None,
        stage: int = 4,
        output_stride: int = 32,
        input_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if name not in _RESNETS:
            raise ValueError(f"model.encoder.name must be one of {_RESNETS}, got {name!r}")
        if stage not in (1, 2, 3, 4):
            raise ValueError(f"model.encoder.stage must be 1..4, got {stage}")
        flags = _dilation_flags(stage, output_stride)
        net = _build(name, weights, flags)
        layers = [net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4]
        self.body = nn.Sequential(*layers[: 4 + stage])
        self.out_channels = _STAGE_CHANNELS[name][stage - 1]
        self.output_stride = output_stride
        self.input_scale = input_scale

    stem_channels = 64  # conv1 of every torchvision ResNet

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_with_stem(images)[0]  # (B, C, h, w)

    def forward_with_stem(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The output map (B, C, h, w) and the stem's (conv1 + max-pool, stride 4: (B, 64, H/4, W/4)), whose
        cells still hold low-level colour that deeper layers trained for the class may drop."""
        if self.input_scale != 1.0:  # a finer map at the same receptive field in pixels of the original image
            images = F.interpolate(images, scale_factor=self.input_scale, mode="bilinear", align_corners=False)
        stem = self.body[:4](images)
        return self.body[4:](stem), stem
