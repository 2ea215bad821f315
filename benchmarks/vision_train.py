"""Vision training: our engine against a plain torchvision loop, and the fast recipe against ResNet-18
at equal wall time, on the CIFAR-10 JPEG copy.

1. **Reference loop** (measured first): torchvision's ``ImageFolder`` with the textbook CIFAR
   transforms (random crop with 4-pixel padding, flip, ``ToTensor``, ``Normalize``), a DataLoader
   with workers and pinned memory, the CIFAR ResNet-18 and SGD (momentum 0.9, lr 0.1, cosine), a
   plain ``for`` loop with the same precision; images/s and the final validation accuracy.
2. **Ours, same network and budget**: ``cudalab train vision`` (preset ``resnet18``) for the same
   epochs through the engine: images/s (training images over training time) and accuracy; the ratio.
3. **Fast recipe**: the ``fast`` preset (after airbench94) for ``--fast-epochs`` epochs: accuracy,
   wall time, and the time at which it first reached ``--target`` (90.5 % on a GPU with the whole
   set: what airbench94's recipe reaches on this JPEG copy).
4. **Equal wall time**: ResNet-18 (our preset) given the fast recipe's wall time (its epochs from the
   reference loop's images/s), and the two accuracies.

Printed as JSON lines (``benchmark``: ``vision_reference``, ``vision_ours``, ``vision_fast``,
``vision_equal_time``).

    python benchmarks/vision_train.py [--data TAR|DIR] [--train-images N] [--val-images N]
                                      [--epochs E] [--fast-epochs E] [--device auto] [--quick]

``--quick``: the tiny subset, one epoch each (a smoke run). On a GPU:
``--train-images 0 --val-images 0 --epochs 2 --fast-epochs 10 --target 0.905``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812

from cudalab.train.experiment import run_experiment
from cudalab.vision.data import open_image_folder
from cudalab.vision.models import build_backbone
from cudalab.vision.task import VisionConfig, experiment, prepare, preset

DATA = (
    Path(os.environ.get("CUDALAB_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "vision"
)


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def reference_loop(cfg: VisionConfig, epochs: int, device: torch.device) -> dict[str, Any]:
    """The textbook torchvision loop over the same images (see the module)."""
    from torch.utils.data import DataLoader, Dataset
    from torchvision.transforms import v2

    d = prepare(cfg.data)
    mean, std = list(d.mean), list(d.std)
    train_tf = v2.Compose([v2.RandomCrop(d.size, padding=4), v2.RandomHorizontalFlip(), v2.ToImage(),
                           v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])  # fmt: skip
    val_tf = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])

    class Files(Dataset[tuple[torch.Tensor, int]]):
        def __init__(self, files: tuple[Path, ...], labels: Any, tf: Any) -> None:
            self.files, self.labels, self.tf = files, labels, tf

        def __len__(self) -> int:
            return len(self.files)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            from PIL import Image

            with Image.open(self.files[i]) as im:
                return self.tf(im.convert("RGB")), int(self.labels[i])

    workers = min(8, len(os.sched_getaffinity(0)))
    pin = device.type == "cuda"
    train = DataLoader(Files(d.train.files, d.train.labels, train_tf), batch_size=cfg.data.batch_size,
                       shuffle=True, num_workers=workers, pin_memory=pin, drop_last=True,
                       persistent_workers=True)  # fmt: skip
    val = DataLoader(Files(d.val.files, d.val.labels, val_tf), batch_size=500, num_workers=workers)
    torch.manual_seed(0)
    model = build_backbone("resnet18", len(d.folder.classes), d.size).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    steps = epochs * len(train)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    seen, t0 = 0, time.perf_counter()
    for _ in range(epochs):
        model.train()
        for x, y in train:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with amp:
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    model.eval()
    correct = total = 0
    with torch.no_grad(), amp:
        for x, y in val:
            correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
            total += len(y)
    return {"images_per_s": seen / seconds, "train_s": seconds, "val_acc": correct / total, "epochs": epochs}


def engine_run(cfg: VisionConfig, runs: Path, run_id: str) -> dict[str, Any]:
    """Train ``cfg`` through the engine; images/s, accuracy, and the metrics log."""
    t0 = time.perf_counter()
    result = run_experiment(experiment(), cfg, runs_root=runs, run_id=run_id)
    wall = time.perf_counter() - t0
    seed = result.run.path / "seed-0"
    records = [json.loads(line) for line in (seed / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "train/images_per_s" in r]
    evals = [r for r in records if "eval/val_acc" in r]
    train_s = float(train[-1]["time_s"]) if train else float("nan")
    n = len(prepare(cfg.data).train)
    steps = evals[-1]["step"] if evals else 0
    return {
        "images_per_s": steps * cfg.data.batch_size / train_s if train_s else float("nan"),
        "train_s": train_s,
        "wall_s": wall,
        "val_acc": max(r["eval/val_acc"] for r in evals),
        "final_val_acc": evals[-1]["eval/val_acc"],
        "records": records,
        "train_images": n,
    }


def time_to(records: list[dict[str, Any]], target: float) -> float | None:
    """Training seconds at the first evaluation reaching ``target`` (the last logged time before it)."""
    last_time = 0.0
    for r in records:
        if "time_s" in r:
            last_time = float(r["time_s"])
        if r.get("eval/val_acc", -1) >= target:
            return last_time
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DATA / "cifar10-jpeg.tar.gz"))
    p.add_argument("--train-images", type=int, default=5000)
    p.add_argument("--val-images", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=1, help="Epochs of the reference loop and of ours.")
    p.add_argument("--fast-epochs", type=int, default=10)
    p.add_argument("--target", type=float, default=0.905)
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    if a.quick:
        a.data, a.train_images, a.val_images, a.epochs, a.fast_epochs = (
            str(DATA / "cifar10-tiny.tgz"),
            500,
            200,
            1,
            2,
        )
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if a.device == "auto" else a.device))  # fmt: skip
    open_image_folder(a.data)  # fail early, in one line
    base = preset(a.data, "resnet18")
    data = replace(base.data, train_images=a.train_images, val_images=a.val_images)
    quiet = {"device": device.type, "progress": False, "tensorboard": False, "seed": 0}
    r18 = replace(base, data=data, train=replace(base.train, max_epochs=a.epochs, warmup_steps=0, **quiet))
    where = {"device": str(device), "torch": torch.__version__, "train_images": len(prepare(r18.data).train),
             "val_images": len(prepare(r18.data).val), "data": Path(a.data).name}  # fmt: skip

    ref = reference_loop(r18, a.epochs, device)
    emit({"benchmark": "vision_reference", **where, **ref})
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        ours = engine_run(r18, runs, "resnet18")
        emit({"benchmark": "vision_ours", **where, "epochs": a.epochs, "images_per_s": ours["images_per_s"],
              "train_s": ours["train_s"], "val_acc": ours["final_val_acc"],
              "reference_images_per_s": ref["images_per_s"],
              "ratio_images_per_s": ours["images_per_s"] / ref["images_per_s"]})  # fmt: skip

        fast_base = preset(a.data, "fast")
        fast_cfg = replace(
            fast_base,
            data=replace(fast_base.data, train_images=a.train_images, val_images=a.val_images),
            train=replace(fast_base.train, max_epochs=a.fast_epochs, **quiet),
        )
        steps = a.fast_epochs * max(1, len(prepare(fast_cfg.data).train) // fast_cfg.data.batch_size)
        fast_cfg = replace(fast_cfg, train=replace(fast_cfg.train, warmup_steps=max(1, steps // 5)))
        fast = engine_run(fast_cfg, runs, "fast")
        reached = time_to(fast["records"], a.target)
        emit({"benchmark": "vision_fast", **where, "epochs": a.fast_epochs, "val_acc": fast["val_acc"],
              "train_s": fast["train_s"], "images_per_s": fast["images_per_s"], "target": a.target,
              "time_to_target_s": reached,
              "airbench94_s": None, "airbench94_note": "airbench94 is not installed here: not measured"})  # fmt: skip

        # ResNet-18 given the fast recipe's training time: its epochs from the engine's measured rate
        budget_epochs = max(1, math.floor(fast["train_s"] * ours["images_per_s"] / ours["train_images"]))
        equal = replace(r18, train=replace(r18.train, max_epochs=budget_epochs))
        plain = engine_run(equal, runs, "resnet18-equal")
        emit({"benchmark": "vision_equal_time", **where, "fast_train_s": fast["train_s"],
              "fast_val_acc": fast["val_acc"], "resnet18_epochs": budget_epochs,
              "resnet18_train_s": plain["train_s"], "resnet18_val_acc": plain["val_acc"],
              "fast_minus_resnet18": fast["val_acc"] - plain["val_acc"]})  # fmt: skip


if __name__ == "__main__":
    main()
