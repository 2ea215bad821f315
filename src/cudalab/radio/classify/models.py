"""The candidate classifiers: each maps ``(B, 2, S, S)`` planes to one logit per candidate (real: > 0).

Every model first passes its input through :func:`stretch`, the asinh stretch astronomers display
images with (Lupton, Gunn & Szalay 1999): linear within a few units of the noise, logarithmic above,
so a broadband impulse of S/N 1000 in a candidate's window reads about 2x, not 25x, as bright as a
burst of S/N 40 beside it, and the network sees the burst. It sits in the model, not the data
pipeline, because the augmentations (added noise, injected RFI) need the planes' linear units, and so
that whatever runs a model (training, validation, scoring) runs the stretch.

- :class:`FetchLike`: FETCH's idea (Agarwal et al. 2020: one network per plane, features
  concatenated, a small dense head) with a compact convolutional branch per plane instead of
  ImageNet-sized DenseNet/Xception backbones, which a CPU cannot train in minutes;
- :func:`mobilenet`: torchvision's MobileNetV3-small with a two-channel stem, both planes as channels;
- :class:`CnnBiLstm`: convolutions down the frequency axis of the frequency-time plane, then a
  bidirectional LSTM along time (a pulse is a short event in a time series of spectra).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

ModelName = Literal["fetchlike", "mobilenet", "cnn_bilstm"]
MODELS: tuple[ModelName, ...] = ("fetchlike", "mobilenet", "cnn_bilstm")


#: The stretch's knee, in units of the planes' (robust) noise: linear below, logarithmic above.
STRETCH_KNEE = 5.0


def stretch(x: torch.Tensor) -> torch.Tensor:
    """``knee * asinh(x / knee)``: the identity near 0, ``knee * ln(2 x / knee)`` far above the knee."""
    return STRETCH_KNEE * torch.asinh(x / STRETCH_KNEE)


class _PlaneModel(nn.Module):
    """A classifier of stretched planes: subclasses define :meth:`logits` of the stretched input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(stretch(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _conv(cin: int, cout: int, pool: tuple[int, int] | int = 2) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(pool),
    )


class _Branch(nn.Module):
    """Four conv blocks, then global average and max pooling (a pulse is small: its maximum counts)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(1, width),
            _conv(width, 2 * width),
            _conv(2 * width, 4 * width),
            _conv(4 * width, 4 * width, 1),
        )
        self.out_features = 8 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)


class FetchLike(_PlaneModel):
    """Two branches (frequency-time, DM-time), concatenated, a dense head: one logit."""

    def __init__(self, width: int = 16, dropout: float = 0.3) -> None:
        super().__init__()
        self.ft, self.dmt = _Branch(width), _Branch(width)
        n = self.ft.out_features + self.dmt.out_features
        self.head = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(n, 64), nn.ReLU(inplace=True), nn.Linear(64, 1)
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.ft(x[:, :1]), self.dmt(x[:, 1:])], dim=1)).squeeze(1)


class CnnBiLstm(_PlaneModel):
    """Frequency-time only: convolutions pool the frequency axis (not time), a BiLSTM reads the
    ``(time, features)`` sequence, max over time, one logit."""

    def __init__(self, width: int = 16, hidden: int = 32, dropout: float = 0.3) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            _conv(1, width, (2, 1)), _conv(width, 2 * width, (2, 1)), _conv(2 * width, 2 * width, (2, 1))
        )
        self.lstm = nn.LSTM(2 * width, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, 1))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x[:, :1]).mean(dim=2)  # (B, C, T): the band pooled
        seq, _ = self.lstm(h.transpose(1, 2))  # (B, T, 2 hidden)
        return self.head(seq.amax(dim=1)).squeeze(1)


class _MobileNet(_PlaneModel):
    def __init__(self, dropout: float) -> None:
        super().__init__()
        try:
            from torchvision.models import mobilenet_v3_small
        except ImportError as exc:  # the radio extra alone has no torchvision
            raise ValueError("model mobilenet needs torchvision: pip install 'cudalab[vision]'") from exc
        net = mobilenet_v3_small(weights=None, num_classes=1, dropout=dropout)
        stem = net.features[0][0]
        net.features[0][0] = nn.Conv2d(2, stem.out_channels, 3, stride=2, padding=1, bias=False)
        self.net = net

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


def build_model(name: ModelName, width: int = 16, dropout: float = 0.3) -> nn.Module:
    """One of :data:`MODELS`, freshly initialised."""
    if name == "fetchlike":
        return FetchLike(width, dropout)
    if name == "cnn_bilstm":
        return CnnBiLstm(width, dropout=dropout)
    if name == "mobilenet":
        return _MobileNet(dropout)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
