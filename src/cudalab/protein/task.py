"""``cudalab train protein``: ESM-2-shaped masked-language-model pretraining through the engine.

The task trains on every FASTA file of ``data.root`` but ``data.validate`` (whole proteomes held
out) and evaluates the masked-token loss and perplexity on a fixed, seeded subset of the held-out
proteome (the same masks at every evaluation), beside the unigram baseline of the training
residues. A micro-batch holds at most ``tokens_per_batch / (world size x grad_accum)`` padded tokens
(:class:`~cudalab.protein.data.TokenBatches`); crops and masks are drawn from ``(seed, epoch, batch,
rank)``, so a resumed run continues the same stream.

Logged per interval beside the loss: perplexity, tokens per second (residues and specials, no
padding, over all ranks) and the model FLOPs utilisation

    MFU = flops_per_token(shape, mean sequence length) x tokens/s / (GPUs x the GPU's dense bf16 peak)

with :func:`~cudalab.protein.model.flops_per_token` (6 N per token for the matrix products, N the
non-embedding weights, plus the attention's 12 x layers x hidden x length) and the peak from
:mod:`cudalab.env.peaks`; no MFU on a CPU or an unknown GPU.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from cudalab.protein.data import (
    PAD,
    Corpus,
    TokenBatches,
    crop,
    epoch_rng,
    mask_tokens,
    pad_batch,
    split_proteomes,
    unigram_perplexity,
)
from cudalab.protein.model import SHAPES, EsmMLM, flops_per_token, perplexity
from cudalab.runs.config import check_literals
from cudalab.train.config import TrainConfig
from cudalab.train.distributed import DistInfo
from cudalab.train.experiment import Experiment
from cudalab.train.rng import epoch_seed, generator

TASK = "protein"
Shape = Literal["tiny", "small", "8M", "35M", "150M", "650M"]


@dataclass(kw_only=True, slots=True, frozen=True)
class DataConfig:
    root: str = "data/protein"
    """Folder of FASTA files (``*.fasta``, ``*.fa``, ``*.faa``, gzipped or not), one proteome each."""
    validate: str = "UP000000625_83333.fasta"
    """The proteome held out for validation (a file name in ``root``)."""
    max_len: int = 512
    """Context in tokens (``<cls>`` and ``<eos>`` included); longer sequences are cropped at random."""
    tokens_per_batch: int = 16384
    """Padded tokens per optimizer step over all ranks and accumulation micro-steps."""
    val_sequences: int = 512
    """Held-out sequences evaluated (a seeded subset; 0: all)."""
    mask_rate: float = 0.15

    def __post_init__(self) -> None:
        if self.max_len < 3 or self.tokens_per_batch < self.max_len or self.val_sequences < 0:
            raise ValueError("data.max_len >= 3, data.tokens_per_batch >= max_len, data.val_sequences >= 0")
        if not 0.0 < self.mask_rate < 1.0:
            raise ValueError(f"data.mask_rate must lie in (0, 1), got {self.mask_rate}")


@dataclass(kw_only=True, slots=True, frozen=True)
class ModelConfig:
    shape: Shape = "small"
    """tiny (tests), small (0.8 M parameters: the CPU preset), or one of ESM-2's: 8M, 35M, 150M, 650M."""
    dropout: float = 0.0
    checkpointing: bool = False
    """Recompute each layer's activations in the backward pass (less memory, ~1/3 more compute)."""

    def __post_init__(self) -> None:
        check_literals(self)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must lie in [0, 1), got {self.dropout}")


@dataclass(kw_only=True, slots=True, frozen=True)
class ProteinConfig:
    """``cudalab train protein``: one model shape on one set of proteomes."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def shape_of(name: str) -> Any:
    from cudalab.protein.model import EsmShape

    return EsmShape(layers=4, hidden=128, heads=4) if name == "small" else SHAPES[name]


def preset(root: str = "data/protein", shape: Shape = "small") -> ProteinConfig:
    """AdamW (ESM-2's betas 0.9/0.98, weight decay 0.01), linear warm-up then cosine decay, the
    evaluation every 50 steps keeping the best held-out loss."""
    small = shape in ("tiny", "small")
    return ProteinConfig(
        data=DataConfig(
            root=root, max_len=512 if small else 1024, tokens_per_batch=16384 if small else 131072
        ),
        model=ModelConfig(shape=shape),
        train=TrainConfig(
            max_epochs=1 if small else 10,
            max_steps=300 if small else 0,
            optimizer="adamw",
            lr=2e-3 if small else 4e-4,
            weight_decay=0.01,
            schedule="cosine",
            warmup_steps=30 if small else 2000,
            min_lr_ratio=0.1,
            clip_grad_norm=1.0,
            eval_every=50,
            checkpoint_every=50,
            early_stop_metric="val_loss",
            early_stop_mode="min",
            log_every=10,
            keep_last=2,
        ),
    )


FASTA_SUFFIXES = (".fasta", ".fa", ".faa", ".fasta.gz", ".fa.gz", ".faa.gz")


def fasta_files(root: str | Path) -> list[Path]:
    """The FASTA files of a folder, sorted; ``ValueError`` when there are none."""
    r = Path(root)
    if not r.is_dir():
        raise ValueError(f"{r}: no such folder (give --data a folder of FASTA files)")
    files = sorted(p for p in r.iterdir() if p.name.endswith(FASTA_SUFFIXES))
    if len(files) < 2:
        raise ValueError(f"{r}: needs two or more FASTA files (proteomes), found {len(files)}")
    return files


@functools.lru_cache(maxsize=4)
def load_split(root: str, validate: str) -> tuple[Corpus, Corpus, float]:
    """Train and held-out corpora and the unigram baseline's held-out perplexity (read once per process)."""
    train, val = split_proteomes(fasta_files(root), validate)
    return train, val, unigram_perplexity(train, val)


class MaskedLanguageModelling:
    """ESM-2 pretraining for the engine."""

    def __init__(self, cfg: ProteinConfig) -> None:
        self.cfg = cfg
        self.train_corpus, self.val_corpus, self.unigram_ppl = load_split(cfg.data.root, cfg.data.validate)
        self.shape = shape_of(cfg.model.shape)

    def setup(self, device: torch.device, info: DistInfo, seed: int) -> None:
        self.device, self.info, self.seed = device, info, seed
        d, t = self.cfg.data, self.cfg.train
        parts = info.world_size * t.grad_accum
        self.budget = d.tokens_per_batch // parts
        if self.budget < d.max_len:
            raise ValueError(
                f"data.tokens_per_batch {d.tokens_per_batch} over {parts} micro-batches leaves {self.budget} "
                f"tokens each, below max_len {d.max_len}"
            )
        lengths = [min(len(s), d.max_len) for s in self.train_corpus.tokens]
        self.order = TokenBatches(lengths, self.budget, seed=seed, rank=info.rank, world_size=info.world_size)
        self._micro = len(self.order) - len(self.order) % t.grad_accum
        # the evaluation's fixed subset, crops and masks
        rng = np.random.default_rng([seed, 0xE7A1])
        n = len(self.val_corpus)
        pick = rng.permutation(n)[: d.val_sequences] if d.val_sequences else np.arange(n)
        self.val_tokens = [crop(self.val_corpus.tokens[i], d.max_len, rng) for i in sorted(pick)]
        self._len_sum = 0
        self._seqs = 0
        self.peak_flops = _peak_flops(device, info.world_size)

    def build_model(self) -> nn.Module:
        m = self.cfg.model
        return EsmMLM(self.shape, dropout=m.dropout, checkpointing=m.checkpointing)

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "embed" not in n]
        rest = [p for n, p in model.named_parameters() if not (p.ndim > 1 and "embed" not in n)]
        return [
            {"params": decay, "betas": (0.9, 0.98)},
            {"params": rest, "weight_decay": 0.0, "betas": (0.9, 0.98)},
        ]

    def micro_batches_per_epoch(self) -> int:
        return self._micro

    def train_batches(self, epoch: int, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        d = self.cfg.data
        for i, idx in enumerate(self.order.epoch(epoch, start), start=start):
            if i >= self._micro:
                return
            seqs = [
                crop(self.train_corpus.tokens[j], d.max_len, epoch_rng(self.seed, epoch, 1, int(j)))
                for j in idx
            ]
            tokens = pad_batch(seqs)
            g = generator(epoch_seed(self.seed, epoch, salt=1 + i * self.info.world_size + self.info.rank))
            inputs, labels = mask_tokens(tokens, g, rate=d.mask_rate)
            yield inputs.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    def training_step(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        inputs, labels = batch
        logits = model(inputs)
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)

    def batch_size(self, batch: tuple[torch.Tensor, torch.Tensor]) -> int:
        """Tokens of the micro-batch, padding left out (the log's "examples" are tokens)."""
        keep = batch[0] != PAD
        n = int(keep.sum())
        self._len_sum += n
        self._seqs += int(keep.shape[0])
        return n

    def interval_metrics(self, mean_loss: float, items: int, seconds: float) -> dict[str, float]:
        """Perplexity, tokens/s and MFU of the last log interval (see the module for the formula)."""
        tokens_per_s = items / seconds
        mean_len = self._len_sum / max(self._seqs, 1)
        self._len_sum = self._seqs = 0
        out = {"perplexity": perplexity(mean_loss), "tokens_per_s": tokens_per_s}
        if self.peak_flops:
            out["mfu"] = flops_per_token(self.shape, int(mean_len)) * tokens_per_s / self.peak_flops
        return out

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        g = generator(epoch_seed(self.seed, 0, salt=0xE7A1))
        total, count = 0.0, 0
        for i in range(0, len(self.val_tokens), 64):
            tokens = pad_batch(self.val_tokens[i : i + 64])
            inputs, labels = mask_tokens(tokens, g, rate=self.cfg.data.mask_rate)
            logits = model(inputs.to(self.device)).float()
            labels = labels.to(self.device)
            total += float(
                F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")
            )
            count += int((labels != -100).sum())
        loss = total / max(count, 1)
        ppl = perplexity(loss)
        return {"val_loss": loss, "val_perplexity": ppl, "unigram_perplexity": self.unigram_ppl,
                "vs_unigram": ppl / self.unigram_ppl}  # fmt: skip


def _peak_flops(device: torch.device, world_size: int) -> float | None:
    """The job's dense bf16 peak, FLOP/s (None on a CPU or a GPU not in the table)."""
    if device.type != "cuda":
        return None
    from cudalab.env.peaks import lookup

    peak = lookup(torch.cuda.get_device_name(device))
    tflops = peak.matmul_tflops("bf16") if peak else None
    return tflops * 1e12 * world_size if tflops else None


def _headline(cfg: ProteinConfig, summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "shape": cfg.model.shape,
        "headline": {"metric": "val_perplexity", "value": summary.get("val_perplexity_mean"), "std": None},
    }


def experiment() -> Experiment[ProteinConfig]:
    """Protein MLM for the engine's driver: ``runs/protein/<id>/seed-<n>/``."""
    return Experiment(
        kind=TASK,
        make_task=MaskedLanguageModelling,
        subject=lambda cfg: (
            f"ESM-2 {cfg.model.shape} on {Path(cfg.data.root).name} (held out: {cfg.data.validate})"
        ),
        summarise=_headline,
        columns=("val_perplexity", "unigram_perplexity", "vs_unigram"),
    )


__all__ = ["ProteinConfig", "experiment", "math", "preset"]
