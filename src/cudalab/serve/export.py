"""``cudalab export RUN``: a trained image classifier as a ``torch.export`` program or an ONNX model,
checked against the eager model on real validation images every time.

An artefact is a folder::

    model.pt2 | model.onnx   the program (dynamic batch: 1 to MAX_BATCH images of 3 x S x S in [0, 1])
    model.json               format, class names, input size, source run, the program's sha256
    parity.json              max |logit difference| and top-1 agreement against the eager model

The parity check runs the eager model (fp32, eval mode, CPU) and the artefact (through
``torch.export.load(...).module()``, or onnxruntime's CPU provider) on up to ``images`` validation
images of the run's data and passes when top-1 agreement is 100 % and the largest logit difference is
at most ``tolerance`` (1e-4). A model that the format cannot express is refused in one line naming
the operator. The folder is published atomically: complete or absent.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from cudalab._io import atomic_write_json, file_sha256
from cudalab.errors import CudalabError
from cudalab.runs.rundir import RunDir, staged

Format = Literal["onnx", "torch-export"]
FORMATS: tuple[Format, ...] = ("onnx", "torch-export")
FILES: dict[str, str] = {"onnx": "model.onnx", "torch-export": "model.pt2"}
MAX_BATCH = 4096
TOLERANCE = 1e-4
ARTEFACT_JSON = "model.json"
PARITY_JSON = "parity.json"


class ExportRefusedError(CudalabError):
    """The format cannot express the model (an unsupported operator, data-dependent control flow)."""


@dataclass(frozen=True, slots=True)
class Trained:
    """A finished vision seed: its eval-mode model (CPU, fp32) and what ``model.json`` says of it."""

    model: nn.Module
    card: dict[str, Any]
    run: RunDir


def seed_dir(run: RunDir) -> RunDir:
    """The seed folder of a vision run (the first finished one), or the run itself when it is one."""
    from cudalab.vision.task import MODEL_JSON

    if (run.path / MODEL_JSON).is_file():
        return run
    seeds = sorted(
        (p for p in run.path.glob("seed-*") if (p / MODEL_JSON).is_file()), key=lambda p: int(p.name[5:])
    )
    if not seeds:
        raise CudalabError(
            f"{run.path}: no finished vision model here (model.json missing; did training finish?)"
        )
    return RunDir(seeds[0])


def load_trained(run: RunDir) -> Trained:
    """The model of a finished vision run (``model.json`` and ``model.pt`` of its first seed)."""
    from cudalab.vision.models import ImageClassifier, build_backbone
    from cudalab.vision.task import MODEL_JSON, MODEL_WEIGHTS

    seed = seed_dir(run)
    try:
        card = json.loads((seed.path / MODEL_JSON).read_text())
        state = torch.load(seed.path / MODEL_WEIGHTS, map_location="cpu", weights_only=True)
        backbone = build_backbone(card["arch"], len(card["classes"]), int(card["image_size"]))
        model = ImageClassifier(backbone, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), tta_flip=bool(card["tta_flip"]))
        model.load_state_dict(state)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise CudalabError(
            f"{seed.path}: cannot load the trained model ({str(exc).splitlines()[0]})"
        ) from None
    return Trained(model.eval(), card, seed)


def validation_images(run: RunDir, size: int, count: int) -> torch.Tensor:
    """Up to ``count`` of the run's validation images (seeded subset), fitted to ``size``, in [0, 1]."""
    from cudalab.runs.config import load_toml
    from cudalab.vision import data as vdata

    cfg = load_toml(run.config_path)
    d = cfg.get("data", {})
    try:
        folder = vdata.open_image_folder(d.get("root", ""), val_fraction=float(d.get("val_fraction", 0.1)))
    except ValueError as exc:
        raise CudalabError(f"{run.path}: the run's validation images are not readable ({exc})") from None
    files = folder.val.files
    pick = np.sort(np.random.default_rng(0).permutation(len(files))[:count])
    return vdata.decode_all([files[i] for i in pick], size).float() / 255


def _unsupported(exc: BaseException) -> str:
    """The operator an exporter's error names, else the error's first meaningful line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", f"{exc}\n{exc.__cause__ or ''}")
    m = re.search(r"OpOverload\(op='([\w.]+)', overload='(\w+)'\)", text) or re.search(
        r"target=torch\.ops\.([\w.]+)\.(\w+)", text
    )
    if m:
        return f"unsupported operator {m.group(1)}.{m.group(2)}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Failed to ", "- ", "#", "(Refer"))]
    return (useful or lines or [type(exc).__name__])[0][:300]


def export_program(model: nn.Module, fmt: Format, path: Path, size: int) -> None:
    """Write ``model`` (eval mode, CPU) to ``path`` in ``fmt`` with a dynamic batch dimension."""
    example = torch.rand(2, 3, size, size)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    dynamic = ({0: batch},)
    if fmt == "torch-export":
        try:
            program = torch.export.export(model, (example,), dynamic_shapes=dynamic)
        except Exception as exc:
            raise ExportRefusedError(f"torch.export refused the model: {_unsupported(exc)}") from None
        torch.export.save(program, str(path))
        return
    import logging
    import warnings

    for name in ("torch.onnx", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onnx_program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                input_names=["images"],
                output_names=["logits"],
                dynamic_shapes=dynamic,
                external_data=False,
                verbose=False,
            )
    except Exception as exc:
        raise ExportRefusedError(f"the ONNX exporter refused the model: {_unsupported(exc)}") from None
    if onnx_program is None:
        raise ExportRefusedError("the ONNX exporter returned no program")
    onnx_program.save(str(path))


class Runner:
    """An artefact's program, callable on a float32 N x 3 x S x S array: logits as float32."""

    def __init__(self, path: Path, fmt: Format, device: str = "cpu", threads: int = 0) -> None:
        self.fmt, self.device = fmt, device
        if fmt == "onnx":
            import onnxruntime as ort

            providers = ["CPUExecutionProvider"]
            if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            options = ort.SessionOptions()
            options.log_severity_level = 3
            # idle threads sleep rather than spin: a server's event loop shares the cores with them
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            if threads:
                options.intra_op_num_threads = threads
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        else:
            self.module = torch.export.load(str(path)).module().to(device)
            if threads and device == "cpu":
                torch.set_num_threads(threads)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if self.fmt == "onnx":
            return np.asarray(self.session.run(["logits"], {"images": images})[0], dtype=np.float32)
        with torch.no_grad():
            out = self.module(torch.from_numpy(images).to(self.device))
        return out.float().cpu().numpy()


def parity(model: nn.Module, runner: Runner, images: torch.Tensor, batch: int = 250) -> dict[str, Any]:
    """Max |logit difference| and top-1 agreement of ``runner`` against ``model`` on ``images``."""
    diffs, agree, n = [], 0, 0
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = images[i : i + batch]
            ref = model(x).float().numpy()
            got = runner(np.ascontiguousarray(x.numpy(), dtype=np.float32))
            diffs.append(float(np.abs(ref - got).max()))
            agree += int((ref.argmax(1) == got.argmax(1)).sum())
            n += len(x)
    max_diff = max(diffs) if diffs else float("nan")
    return {
        "images": n,
        "max_abs_logit_diff": max_diff,
        "top1_agreement": agree / n if n else float("nan"),
        "tolerance": TOLERANCE,
        "passed": bool(n and agree == n and max_diff <= TOLERANCE),
    }


def write_artefact(
    model: nn.Module,
    fmt: Format,
    out: Path,
    *,
    classes: list[str],
    size: int,
    images: torch.Tensor | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Export ``model`` (eval mode, CPU) to the artefact folder ``out`` (see the module), with the
    parity check on ``images`` when given; returns the parity (None without images)."""
    result = None
    with staged(out, owned=(ARTEFACT_JSON,)) as tmp:
        program = tmp / FILES[fmt]
        t0 = time.perf_counter()
        export_program(model, fmt, program, size)
        seconds = time.perf_counter() - t0
        if images is not None:
            result = parity(model, Runner(program, fmt), images)
            result["format"] = fmt
            atomic_write_json(tmp / PARITY_JSON, result)
        atomic_write_json(
            tmp / ARTEFACT_JSON,
            {
                "format": fmt,
                "file": program.name,
                "sha256": file_sha256(program),
                "classes": classes,
                "image_size": size,
                "input": f"float32 N x 3 x {size} x {size}, RGB in [0, 1], N from 1 to {MAX_BATCH}",
                **(extra or {}),
                "export_seconds": round(seconds, 2),
                "torch": torch.__version__,
            },
        )
    return result


def export_run(run: RunDir, fmt: Format, out: Path, *, images: int = 1000) -> dict[str, Any]:
    """Export a finished vision run to the artefact folder ``out`` (see the module); returns its parity.

    Raises :class:`ExportRefusedError` when the format cannot express the model and
    :class:`~cudalab.errors.CudalabError` for a run that is not a finished vision run.
    """
    trained = load_trained(run)
    size = int(trained.card["image_size"])
    val = validation_images(trained.run, size, images)
    extra = {
        "arch": trained.card["arch"],
        "source_run": str(trained.run.path),
        "val_acc": trained.card.get("val_acc"),
    }
    result = write_artefact(
        trained.model, fmt, out, classes=list(trained.card["classes"]), size=size, images=val, extra=extra
    )
    assert result is not None
    return result


__all__ = [
    "FORMATS",
    "ExportRefusedError",
    "Format",
    "Runner",
    "export_program",
    "export_run",
    "load_trained",
    "parity",
]
