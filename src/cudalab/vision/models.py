"""Image classifiers: torchvision's ResNet-18/50 and a ViT-S, and a fast CIFAR net after airbench94.

Every model is wrapped in :class:`ImageClassifier`, which takes images in [0, 1] (N x 3 x S x S),
normalises them with the training set's channel mean and standard deviation (buffers, saved with the
weights) and, when asked, averages the logits of each image and its mirror image at evaluation
(test-time flip). What is exported and served is this whole module, so an artefact needs nothing
but pixels.

Small inputs (at most 64 pixels) get the CIFAR variants: a ResNet whose stem is one stride-1 3x3
convolution without max-pooling (as in He et al.'s CIFAR experiments; ImageNet's stride-4 stem
leaves a 32-pixel image 8 pixels wide before the first block), and a ViT with 4-pixel patches.

``fastnet`` follows Keller Jordan's airbench94 (2024): a frozen 2x2 patch-whitening convolution whose
filters are the eigenvectors of the training patches' covariance, three conv-pool-BN-GELU groups
(64, 256, 256 channels), max-pooling to 1 x 1, a bias-free linear head scaled by 1/9; trained with
label smoothing 0.2, Nesterov-free SGD at batch 1024 and test-time flip (the task's preset).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn

Arch = Literal["resnet18", "resnet50", "vit_s", "fastnet"]
ARCHS: tuple[Arch, ...] = ("resnet18", "resnet50", "vit_s", "fastnet")


class ImageClassifier(nn.Module):
    """Normalisation, a backbone, and optional test-time flip: images in [0, 1] -> logits."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        backbone: nn.Module,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        *,
        tta_flip: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.tta_flip = tta_flip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        logits = self.backbone(x)
        if self.tta_flip and not self.training:
            logits = 0.5 * (logits + self.backbone(x.flip(-1)))
        return logits


# -- the fast CIFAR net ----------------------------------------------------------------------------


class ConvGroup(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding="same", bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = _bn(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding="same", bias=False)
        self.norm2 = _bn(c_out)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


def _bn(c: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c, momentum=0.4, eps=1e-12)
    bn.weight.requires_grad_(False)  # airbench: scale fixed at 1, bias learnt
    return bn


class FastNet(nn.Module):
    """airbench94's network (see the module); ``whiten`` must be set from data before training."""

    def __init__(self, num_classes: int, widths: tuple[int, int, int] = (64, 256, 256)) -> None:
        super().__init__()
        self.whiten = nn.Conv2d(3, 24, 2, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.act = nn.GELU()
        self.layers = nn.Sequential(
            ConvGroup(24, widths[0]), ConvGroup(widths[0], widths[1]), ConvGroup(widths[1], widths[2])
        )
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        self.scale = 1 / 9

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.act(self.whiten(x)))
        return self.head(self.pool(x).flatten(1)) * self.scale

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Filters from the eigenvectors of the 2x2 patches' covariance (``images``: normalised N x 3 x H x W)."""
        patches = images.float().unfold(2, 2, 1).unfold(3, 2, 1)  # N, 3, H-1, W-1, 2, 2
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
        patches = patches - patches.mean(0, keepdim=True)
        cov = patches.T @ patches / len(patches)
        values, vectors = torch.linalg.eigh(cov.double())
        values, vectors = values.flip(0).float(), vectors.T.flip(0).float()
        filters = (vectors / torch.sqrt(values.clamp_min(0) + eps)[:, None]).view(12, 3, 2, 2)
        self.whiten.weight.copy_(torch.cat([filters, -filters]))
        assert self.whiten.bias is not None
        self.whiten.bias.zero_()


# -- builders --------------------------------------------------------------------------------------


def build_backbone(arch: Arch, num_classes: int, image_size: int) -> nn.Module:
    """A freshly initialised backbone for ``num_classes`` at ``image_size`` (CIFAR variants when small)."""
    small = image_size <= 64
    if arch == "fastnet":
        return FastNet(num_classes)
    if arch in ("resnet18", "resnet50"):
        from torchvision import models

        net = getattr(models, arch)(weights=None, num_classes=num_classes)
        if small:
            net.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        return net
    if arch == "vit_s":
        from torchvision.models.vision_transformer import VisionTransformer

        patch = 4 if small else 16
        if image_size % patch:
            raise ValueError(
                f"vit_s needs an image size divisible by its patch size {patch}, got {image_size}"
            )
        return VisionTransformer(
            image_size=image_size,
            patch_size=patch,
            num_layers=12,
            num_heads=6,
            hidden_dim=384,
            mlp_dim=1536,
            num_classes=num_classes,
        )
    raise ValueError(f"unknown architecture {arch!r} (one of {', '.join(ARCHS)})")


def load_weights(model: ImageClassifier, path: Path) -> list[str]:
    """Load a user's weights file (a state dict of the backbone or of the whole classifier, or a
    checkpoint holding one under ``model``); tensors whose shapes differ (another head) are left
    initialised and named in the returned list. ``ValueError`` when nothing fits."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a user's file: unpickling fails in many ways (struct.error, EOFError, ...)
        raise ValueError(
            f"{path}: not a readable PyTorch weights file ({str(exc).splitlines()[0]})"
        ) from None
    if isinstance(payload, dict) and isinstance(payload.get("model"), dict):
        payload = payload["model"]
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise ValueError(f"{path}: not a state dict (a mapping of names to tensors)")
    own = model.state_dict()
    state = {k if k in own else f"backbone.{k}": v for k, v in payload.items()}
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not fitting:
        raise ValueError(f"{path}: no tensor matches this model's names and shapes (another architecture?)")
    skipped = sorted(k for k in own if k not in fitting and k not in ("mean", "std"))
    model.load_state_dict({**own, **fitting})
    return skipped


__all__ = ["ARCHS", "Arch", "FastNet", "ImageClassifier", "build_backbone", "load_weights"]
