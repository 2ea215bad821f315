"""``cudalab train vision``: image classification from an ImageFolder tree, through the engine.

Two presets: ``resnet18`` (torchvision's ResNet-18, SGD with momentum 0.9 at batch 256, cosine decay,
weight decay 5e-4, random crop and flip) and ``fast``, a recipe after airbench94 (the ``fastnet``
of :mod:`cudalab.vision.models`, batch 1024, SGD with momentum 0.85, label smoothing 0.2, linear
warm-up and decay, test-time flip, the norms' biases at 64 times the learning rate). airbench94's
Nesterov momentum, lookahead averaging, whitening-bias schedule and translation at test time are
left out; its batch size, learning rates and weight decay are its own, rewritten for a mean loss.

Channels-last memory layout for the convolutional models, AMP, DDP, ``--compile``, resume and the
manifest come from the engine. After training, rank 0 writes a confusion matrix and a grid of
misclassified validation images (``confusion.png``, ``misclassified.png``, ``confusion.json``) into
the seed's run directory and its TensorBoard events, from the best checkpoint when there is one.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from cudalab._io import atomic_open, atomic_write_json
from cudalab.runs.config import check_literals
from cudalab.runs.rundir import RunDir
from cudalab.train.config import TrainConfig
from cudalab.train.data import EpochSampler
from cudalab.train.distributed import DistInfo
from cudalab.train.experiment import Experiment
from cudalab.train.rng import epoch_seed, generator
from cudalab.vision import data as vdata
from cudalab.vision.models import Arch, FastNet, ImageClassifier, build_backbone, load_weights

TASK = "vision"
MODEL_JSON = "model.json"
"""What a finished seed's model is (architecture, class names, input size), for export and serving."""
MODEL_WEIGHTS = "model.pt"
"""The finished seed's weights (the best evaluation's), a plain state dict."""
Recipe = Literal["resnet18", "fast"]


@dataclass(kw_only=True, slots=True, frozen=True)
class DataConfig:
    root: str = "data/vision"
    """An ImageFolder tree (``<class>/<image>``, or ``train|val/<class>/<image>``) or a tar archive of one."""
    val_fraction: float = 0.1
    """Held out per class when the tree has no split of its own (drawn with seed 0: every run seed
    sees the same split)."""
    image_size: int = 0
    """Model input side in pixels; 0: the images' own when square and at most 64, else 224."""
    decode: Literal["auto", "memory", "workers"] = "auto"
    """memory: decode once, augment on the device (small images); workers: DataLoader processes."""
    workers: int = 0
    """DataLoader processes for the workers way; 0: the usable CPUs, at most 8."""
    batch_size: int = 256
    """Images per optimizer step over all ranks and accumulation micro-steps."""
    pad: int = 4
    """Random-crop shift in pixels (reflect padding) for the memory way."""
    train_images: int = 0
    """Train on a seeded, class-stratified subset of this many images; 0: all."""
    val_images: int = 0
    """Evaluate on the first this many validation images (a seeded subset); 0: all."""

    def __post_init__(self) -> None:
        check_literals(self)
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must lie in (0, 1), got {self.val_fraction}")
        for name in ("image_size", "workers", "batch_size", "pad", "train_images", "val_images"):
            if getattr(self, name) < 0:
                raise ValueError(f"data.{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size < 1:
            raise ValueError("data.batch_size must be >= 1")


@dataclass(kw_only=True, slots=True, frozen=True)
class ModelConfig:
    arch: Arch = "resnet18"
    weights: str = ""
    """A weights file to start from (a state dict; tensors of another shape, such as a head for
    another number of classes, stay initialised); '': from scratch. Nothing is downloaded."""
    label_smoothing: float = 0.0
    tta_flip: bool = False
    """Average the logits of each image and its mirror at evaluation (and in exported models)."""
    channels_last: bool = True
    """NHWC memory layout for the convolutional models (faster tensor-core convolutions)."""
    bias_lr_scale: float = 1.0
    """Learning-rate multiplier of the normalisation layers' biases (airbench: 64)."""

    def __post_init__(self) -> None:
        check_literals(self)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"model.label_smoothing must lie in [0, 1), got {self.label_smoothing}")
        if self.bias_lr_scale <= 0:
            raise ValueError(f"model.bias_lr_scale must be > 0, got {self.bias_lr_scale}")


@dataclass(kw_only=True, slots=True, frozen=True)
class VisionConfig:
    """``cudalab train vision``: one model on one ImageFolder tree."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def preset(root: str = "data/vision", recipe: Recipe = "resnet18", arch: Arch | None = None) -> VisionConfig:
    """The ``resnet18`` recipe (any ``arch`` may replace the network) or the ``fast`` one (see the module)."""
    if recipe == "fast":
        # airbench94's lr 11.5 and weight decay 0.0153 are per 1024 examples of a summed loss with
        # momentum 0.85: 11.5 / (1 + 1 / 0.15) = 1.5 for a mean loss; 0.0153 * 1024 / 7851 / 1.5 per lr
        return VisionConfig(
            data=DataConfig(root=root, batch_size=1024, pad=2),
            model=ModelConfig(arch="fastnet", label_smoothing=0.2, tta_flip=True, bias_lr_scale=64.0),
            train=TrainConfig(
                max_epochs=10,
                optimizer="sgd",
                lr=1.5,
                momentum=0.85,
                weight_decay=1.33e-3,
                schedule="linear",
                warmup_steps=100,
                min_lr_ratio=0.07,
                early_stop_metric="val_acc",
                log_every=10,
                keep_last=2,
            ),
        )
    return VisionConfig(
        data=DataConfig(root=root, batch_size=256, pad=4),
        model=ModelConfig(arch=arch or "resnet18"),
        train=TrainConfig(
            max_epochs=30,
            optimizer="sgd",
            lr=0.1,
            momentum=0.9,
            weight_decay=5e-4,
            schedule="cosine",
            warmup_steps=50,
            early_stop_metric="val_acc",
            log_every=10,
            keep_last=2,
        ),
    )


@dataclass(frozen=True, slots=True)
class Prepared:
    """The decoded (memory way) or listed (workers way) data of one tree, shared by every seed."""

    folder: vdata.ImageFolder
    train: vdata.Split
    val: vdata.Split
    size: int
    memory: bool
    train_images: torch.Tensor | None
    val_images: torch.Tensor | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def _subset(split: vdata.Split, n: int, seed: int) -> vdata.Split:
    """A class-stratified seeded subset of ``n`` images (the split itself when ``n`` is 0 or too big)."""
    if not n or n >= len(split):
        return split
    rng = np.random.default_rng([seed, 0x5B5E])
    order = rng.permutation(len(split))
    # stratified: take the permutation class by class in turn
    by_class: dict[int, list[int]] = {}
    for i in order:
        by_class.setdefault(int(split.labels[i]), []).append(int(i))
    pick: list[int] = []
    queues = list(by_class.values())
    while len(pick) < n:
        for q in queues:
            if q and len(pick) < n:
                pick.append(q.pop())
    pick.sort()
    return vdata.Split(tuple(split.files[i] for i in pick), split.labels[pick])


def prepare(d: DataConfig) -> Prepared:
    """List, subset and (memory way) decode a tree once per process (whatever the batch size and
    padding); channel mean and std of the training images (from up to 10,000 of them)."""
    return _prepare(replace(d, batch_size=1, pad=0, workers=0))


@functools.lru_cache(maxsize=2)
def _prepare(d: DataConfig) -> Prepared:
    folder = vdata.open_image_folder(d.root, val_fraction=d.val_fraction, seed=0)
    train, val = _subset(folder.train, d.train_images, 0), _subset(folder.val, d.val_images, 1)
    size = d.image_size or vdata.probe_size(train.files)
    memory = d.decode == "memory" or (d.decode == "auto" and size <= vdata.MEMORY_MAX_SIZE)
    stats_files = _subset(train, 10_000, 2).files
    if memory:
        train_images = vdata.decode_all(train.files, size)
        val_images = vdata.decode_all(val.files, size)
        sample = train_images if len(train_images) <= 10_000 else vdata.decode_all(stats_files, size)
    else:
        train_images, val_images = None, None
        sample = vdata.decode_all(stats_files[:2000], min(size, 64))
    x = sample.float().div_(255)
    mean = tuple(float(v) for v in x.mean(dim=(0, 2, 3)))
    std = tuple(float(v) for v in x.std(dim=(0, 2, 3)).clamp_min(1e-3))
    return Prepared(folder, train, val, size, memory, train_images, val_images, mean, std)  # type: ignore[arg-type]


class ImageClassification:
    """Supervised image classification for the engine."""

    def __init__(self, cfg: VisionConfig) -> None:
        self.cfg = cfg
        self.data = prepare(cfg.data)
        if cfg.model.weights and not Path(cfg.model.weights).is_file():
            raise ValueError(f"{cfg.model.weights}: no such weights file")

    @property
    def classes(self) -> tuple[str, ...]:
        return self.data.folder.classes

    def setup(self, device: torch.device, info: DistInfo, seed: int) -> None:
        self.device, self.info, self.seed = device, info, seed
        d, t = self.cfg.data, self.cfg.train
        self.sampler = EpochSampler(
            len(self.data.train),
            d.batch_size,
            rank=info.rank,
            world_size=info.world_size,
            grad_accum=t.grad_accum,
            seed=seed,
            drop_last=len(self.data.train) >= d.batch_size,
        )
        self.memory_format = (
            torch.channels_last
            if self.cfg.model.channels_last and self.cfg.model.arch != "vit_s"
            else torch.contiguous_format
        )
        if self.data.memory:
            assert self.data.train_images is not None
            self.train_images = self.data.train_images.to(device)
            self.train_labels = torch.from_numpy(self.data.train.labels).to(device)
        else:
            workers = d.workers or min(8, len(os.sched_getaffinity(0)))
            self.workers = workers
            self.dataset = vdata.FileDataset(self.data.train, self.data.size, train=True, seed=seed)

    def build_model(self) -> nn.Module:
        m = self.cfg.model
        backbone = build_backbone(m.arch, len(self.classes), self.data.size)
        model = ImageClassifier(backbone, self.data.mean, self.data.std, tta_flip=m.tta_flip)
        if isinstance(backbone, FastNet):
            sample = self._whitening_sample()
            backbone.init_whitening((sample - model.mean) / model.std)
        if m.weights:
            load_weights(model, Path(m.weights))
        return model.to(memory_format=self.memory_format)

    def _whitening_sample(self) -> torch.Tensor:
        """Up to 5,000 training images drawn across every class (the files are sorted by class)."""
        n = len(self.data.train)
        pick = torch.randperm(n, generator=generator(self.seed))[: min(n, 5000)].sort().values
        if self.data.train_images is not None:
            images = self.data.train_images[pick]
        else:
            images = vdata.decode_all(
                [self.data.train.files[i] for i in pick[:2000].tolist()], self.data.size
            )
        return images.float() / 255

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Weight decay on weights only; the norms' biases at ``bias_lr_scale`` times the rate (decay
        scaled down by the same factor, as airbench does, so a step's shrinkage stays the same)."""
        scale = self.cfg.model.bias_lr_scale
        t = self.cfg.train
        weights: list[nn.Parameter] = []
        norm_biases: list[nn.Parameter] = []
        rest: list[nn.Parameter] = []
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                if not p.requires_grad:
                    continue
                if isinstance(module, nn.modules.batchnorm._BatchNorm | nn.LayerNorm | nn.GroupNorm):
                    (norm_biases if name == "bias" else rest).append(p)
                elif p.ndim > 1:
                    weights.append(p)
                else:
                    rest.append(p)
        groups: list[dict[str, Any]] = [{"params": weights}]
        if norm_biases:
            groups.append({"params": norm_biases, "lr": t.lr * scale, "weight_decay": t.weight_decay / scale})
        if rest:
            groups.append({"params": rest, "weight_decay": 0.0})
        return groups

    def micro_batches_per_epoch(self) -> int:
        return len(self.sampler)

    def train_batches(self, epoch: int, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.data.memory:
            for i, idx in enumerate(self.sampler.epoch(epoch, start), start=start):
                g = generator(
                    epoch_seed(self.seed, epoch, salt=1 + i * self.info.world_size + self.info.rank)
                )
                idx_d = idx.to(self.device)
                images = vdata.crop_flip(self.train_images[idx_d], self.cfg.data.pad, g)
                yield self._to_input(images), self.train_labels[idx_d]
            return
        self.dataset.epoch = epoch
        order = (
            torch.cat(list(self.sampler.epoch(epoch, start))).tolist() if start < len(self.sampler) else []
        )
        pin = self.device.type == "cuda"
        for images, labels in vdata.loader(self.dataset, order, self.sampler.micro, self.workers, pin):
            yield (
                self._to_input(images.to(self.device, non_blocking=True)),
                labels.to(self.device, non_blocking=True),
            )

    def _to_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> float in [0, 1], in the model's memory layout."""
        return (images.float() / 255).contiguous(memory_format=self.memory_format)

    def training_step(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        images, labels = batch
        logits = model(images)
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.cfg.model.label_smoothing)

    def batch_size(self, batch: tuple[torch.Tensor, torch.Tensor]) -> int:
        return int(batch[0].shape[0])

    def interval_metrics(self, mean_loss: float, items: int, seconds: float) -> dict[str, float]:
        """Images per second over all ranks in the last log interval (``train/images_per_s``)."""
        return {"images_per_s": items / seconds}

    def val_batches(self, batch: int = 500) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The validation images (uint8 on the CPU, fitted to the model size) and labels, in order."""
        labels = torch.from_numpy(self.data.val.labels)
        if self.data.val_images is not None:
            for i in range(0, len(labels), batch):
                yield self.data.val_images[i : i + batch], labels[i : i + batch]
            return
        ds = vdata.FileDataset(self.data.val, self.data.size, train=False)
        workers = min(8, len(os.sched_getaffinity(0)))
        yield from vdata.loader(ds, list(range(len(ds))), batch, workers, pin=False)

    def predict(self, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (float32, CPU) of every validation image, and the labels."""
        outs, labels = [], []
        for images, y in self.val_batches():
            outs.append(model(self._to_input(images.to(self.device))).float().cpu())
            labels.append(y)
        return torch.cat(outs), torch.cat(labels)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        logits, labels = self.predict(model)
        return {
            "val_acc": float((logits.argmax(1) == labels).float().mean()),
            "val_loss": float(F.cross_entropy(logits, labels)),
        }

    def finish(self, model: nn.Module, run: RunDir) -> None:
        """Confusion matrix and misclassified images of the best checkpoint (else ``model``)."""
        from cudalab.vision.figures import write_figures

        best = run.checkpoints / "best.pt"
        if best.is_file():
            state = torch.load(best, map_location=self.device, weights_only=True)["model"]
            model.load_state_dict(state)
        model.eval()
        with torch.no_grad():
            logits, labels = self.predict(model)
        images = (
            self.data.val_images
            if self.data.val_images is not None
            else torch.cat([x for x, _ in self.val_batches()])
        )
        write_figures(run, logits, labels, images, self.classes)
        card = {
            "arch": self.cfg.model.arch,
            "classes": list(self.classes),
            "image_size": self.data.size,
            "tta_flip": self.cfg.model.tta_flip,
            "val_acc": float((logits.argmax(1) == labels).float().mean()),
            "checkpoint": "best.pt" if best.is_file() else None,
        }
        with atomic_open(run.path / MODEL_WEIGHTS) as fh:
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, fh)
        atomic_write_json(run.path / MODEL_JSON, card)


def _headline(cfg: VisionConfig, summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "arch": cfg.model.arch,
        "headline": {
            "metric": "val_acc",
            "value": summary.get("val_acc_mean"),
            "std": summary.get("val_acc_std") if cfg.train.seeds > 1 else None,
        },
    }


def experiment() -> Experiment[VisionConfig]:
    """Image classification for the engine's driver: ``runs/vision/<id>/seed-<n>/``."""
    return Experiment(
        kind=TASK,
        make_task=ImageClassification,
        subject=lambda cfg: f"{cfg.model.arch} on {Path(cfg.data.root).name}",
        summarise=_headline,
        columns=("val_acc", "val_loss"),
    )


__all__ = ["ImageClassification", "VisionConfig", "experiment", "prepare", "preset"]
