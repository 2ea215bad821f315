"""Protein MLM training speed: our ESM-2 against Hugging Face's EsmForMaskedLM, same shape, batch and precision.

For each shape, both models take the same masked batch (``--batch`` sequences of ``--length``
tokens) through forward, backward and an AdamW step, ``--steps`` times after a warm-up, in the same
run; printed as JSON lines: tokens per second of each, their ratio, and on a GPU the MFU of each
(``flops_per_token`` of :mod:`cudalab.protein.model` x tokens/s over the GPU's dense bf16 peak).
With ``--run RUN`` the held-out perplexity curve of a ``cudalab train protein`` run is drawn to
``OUT/protein_perplexity.png`` beside its unigram baseline.

    python benchmarks/protein_mlm.py [--shapes tiny,small] [--length 256] [--batch 16] [--device auto]
                                     [--run RUN] [--out DIR] [--quick]

On a GPU: ``--shapes 35M,150M --length 1024 --batch 16`` (bf16 autocast, the flash attention kernel).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812

from cudalab.protein.data import MASK, PAD, mask_tokens
from cudalab.protein.model import EsmMLM, flops_per_token, load_hf_state_dict
from cudalab.protein.task import _peak_flops, shape_of


def hf_model(shape: Any) -> torch.nn.Module:
    import transformers

    cfg = transformers.EsmConfig(
        vocab_size=33, hidden_size=shape.hidden, num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
        intermediate_size=shape.ffn, max_position_embeddings=4098, position_embedding_type="rotary",
        token_dropout=True, emb_layer_norm_before=False, pad_token_id=PAD, mask_token_id=MASK,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    return (
        transformers.EsmForMaskedLM(cfg, attn_implementation="sdpa")
        if _takes_attn()
        else transformers.EsmForMaskedLM(cfg)
    )


def _takes_attn() -> bool:
    import inspect

    import transformers

    return "attn_implementation" in inspect.signature(transformers.EsmForMaskedLM.__init__).parameters


def time_steps(step: Any, steps: int, device: torch.device) -> float:
    """Seconds per call of ``step`` (after two warm-up calls)."""
    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def measure(name: str, length: int, batch: int, steps: int, device: torch.device) -> dict[str, Any]:
    shape = shape_of(name)
    torch.manual_seed(0)
    tokens = torch.randint(4, 24, (batch, length))
    tokens[:, 0], tokens[:, -1] = 0, 2
    inputs, labels = mask_tokens(tokens, torch.Generator().manual_seed(0))
    inputs, labels = inputs.to(device), labels.to(device)
    bf16 = device.type == "cuda"
    hf = hf_model(shape).to(device).train()
    ours = EsmMLM(shape).to(device).train()
    load_hf_state_dict(ours, hf.state_dict())  # the same weights: the same work
    out: dict[str, Any] = {"benchmark": "protein_mlm", "shape": name, "parameters": shape.parameters(),
                           "length": length, "batch": batch, "device": str(device), "precision": "bf16" if bf16 else "fp32"}  # fmt: skip
    peak = _peak_flops(device, 1)
    for label, model, forward in (
        ("ours", ours, lambda: ours(inputs)),
        ("hf", hf, lambda: hf(input_ids=inputs, attention_mask=(inputs != PAD).long()).logits),
    ):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")

        def step(forward: Any = forward, opt: Any = opt) -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = forward()
            loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        seconds = time_steps(step, steps, device)
        rate = batch * length / seconds
        out[f"{label}_tokens_per_s"] = round(rate, 1)
        if peak:
            out[f"{label}_mfu"] = round(flops_per_token(shape, length) * rate / peak, 4)
        del opt
    out["ratio_ours_to_hf"] = round(out["ours_tokens_per_s"] / out["hf_tokens_per_s"], 3)
    return out


def plot_run(run: Path, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in (run / "seed-0" / "metrics.jsonl").read_text().splitlines()]
    ev = [r for r in records if "eval/val_perplexity" in r]
    tr = [r for r in records if "train/perplexity" in r]
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    ax.plot(
        [r["step"] for r in tr],
        [r["train/perplexity"] for r in tr],
        color="0.6",
        lw=0.8,
        label="train (masked)",
    )
    ax.plot([r["step"] for r in ev], [r["eval/val_perplexity"] for r in ev], "o-", label="held-out proteome")
    if ev:
        u = ev[-1]["eval/unigram_perplexity"]
        ax.axhline(u, color="tab:red", ls="--", lw=0.8, label=f"unigram baseline {u:.2f}")
        ax.axhline(0.85 * u, color="tab:green", ls=":", lw=0.8, label="15 % below it")
    ax.set(xlabel="step", ylabel="perplexity", title=f"protein MLM: {run.name}", ylim=(10, 25))
    ax.legend()
    path = out / "protein_perplexity.png"
    fig.savefig(path, dpi=110)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="tiny,small")
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--run", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.shapes, args.length, args.batch, args.steps = "tiny", 64, 4, 2
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    for name in args.shapes.split(","):
        print(json.dumps(measure(name, args.length, args.batch, args.steps, device)), flush=True)
    if args.run is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        print(json.dumps({"benchmark": "protein_perplexity_plot", "path": str(plot_run(args.run, args.out))}))


if __name__ == "__main__":
    main()
