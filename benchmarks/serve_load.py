"""Serving under load: ``cudalab serve`` (dynamic batching) against a minimal unbatched FastAPI handler
serving the same exported model, on loopback, in the same run.

Both servers run as their own processes (uvicorn, one worker each) on the same artefact: ours is
``cudalab serve ART``; the reference is the handler at the bottom of this file (read the body,
decode it with Pillow, resize, run the model on that one image, answer the top 5). A bounded load
generator (asyncio + httpx, one process) keeps ``c`` requests in flight for ``--seconds`` at each
concurrency ``c`` in ``--concurrency`` (1 to 64), sending real CIFAR-10 test JPEGs, and counts
throughput (answered requests/s), p50 and p99 latency, and errors (any answer but 200, or no answer).

Printed as JSON lines, one per (server, concurrency), then one ``serve_load_summary`` with the
throughput ratio at each concurrency. Without ``--artefact``, a CIFAR ResNet-18 (random weights:
the speed of a model does not depend on what it learnt) is exported first (``--format``).

    python benchmarks/serve_load.py [--artefact DIR] [--concurrency 1,4,16,64] [--seconds 10]
                                    [--format onnx|torch-export] [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Request

DATA = (
    Path(os.environ.get("CUDALAB_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "vision"
)
HERE = Path(__file__).resolve()


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sample_jpegs(n: int = 200) -> list[bytes]:
    with tarfile.open(DATA / "cifar10-tiny.tgz") as tar:
        members = sorted((m for m in tar.getmembers() if m.name.endswith(".jpg") and "/test/" in m.name),
                         key=lambda m: m.name)[:n]  # fmt: skip
        return [tar.extractfile(m).read() for m in members]  # type: ignore[union-attr]


def make_artefact(out: Path, fmt: str) -> Path:
    import torch

    from cudalab.serve.export import write_artefact
    from cudalab.vision.models import ImageClassifier, build_backbone

    torch.manual_seed(0)
    model = ImageClassifier(build_backbone("resnet18", 10, 32), (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)).eval()
    write_artefact(
        model, fmt, out, classes=[f"class{i}" for i in range(10)], size=32, extra={"arch": "resnet18"}
    )
    return out


def split_cpus() -> tuple[set[int], set[int]]:
    """(the load generator's cores, the server's): a quarter (at least one) for the generator, so that
    the server under test never competes with its own load for a core (on 2 cores: one each)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return set(cpus), set(cpus)
    k = max(1, len(cpus) // 4)
    return set(cpus[:k]), set(cpus[k:])


def start(argv: list[str], port: int, cpus: set[int]) -> subprocess.Popen[bytes]:
    import httpx

    env = {**os.environ, "PYTHONPATH": str(HERE.parents[1] / "src")}
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"server {' '.join(argv[:4])} did not start")


async def load(url: str, images: list[bytes], concurrency: int, seconds: float) -> dict[str, Any]:
    """Keep ``concurrency`` requests in flight for ``seconds``; latencies and errors."""
    import httpx

    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def worker(k: int) -> None:
            nonlocal errors
            i = k
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    r = await client.post(
                        url, content=images[i % len(images)], headers={"content-type": "image/jpeg"}
                    )
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1
                i += concurrency

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "errors": errors,
        "throughput_rps": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--artefact", type=Path)
    p.add_argument("--concurrency", default="1,4,16,64")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--serve-args", default="", help="Extra options of `cudalab serve` (e.g. '--max-batch 16')."
    )
    p.add_argument("--servers", default="cudalab,reference")
    p.add_argument(
        "--format",
        default="onnx",
        choices=("onnx", "torch-export"),
        help="The artefact made without --artefact (torch-export on a GPU: no onnxruntime-gpu needed).",
    )
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reference-server", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.reference_server:
        reference_server(a.reference_server, a.port, a.device)
        return
    if a.quick:
        a.concurrency, a.seconds = "1,8", 2.0
    levels = [int(c) for c in a.concurrency.split(",")]
    client_cpus, server_cpus = split_cpus()
    images = sample_jpegs()
    with tempfile.TemporaryDirectory() as tmp:
        artefact = a.artefact or make_artefact(Path(tmp) / "artefact", a.format)
        meta = json.loads((artefact / "model.json").read_text())
        results: dict[str, dict[int, dict[str, Any]]] = {}
        servers = {
            "cudalab": [sys.executable, "-m", "cudalab", "serve", str(artefact), "--device", a.device,
                        "--log-level", "warning", *a.serve_args.split()],
            "reference": [sys.executable, str(HERE), "--reference-server", str(artefact), "--device", a.device],
        }  # fmt: skip
        for name, argv in servers.items():
            if name not in a.servers.split(","):
                continue
            port = free_port()
            proc = start([*argv, "--port", str(port)], port, server_cpus)
            os.sched_setaffinity(0, client_cpus)
            try:
                url = f"http://127.0.0.1:{port}/predict"
                asyncio.run(load(url, images, 1, min(1.0, a.seconds)))  # warm-up
                results[name] = {}
                for c in levels:
                    r = asyncio.run(load(url, images, c, a.seconds))
                    results[name][c] = r
                    emit({"benchmark": "serve_load", "server": name, "concurrency": c, "model": meta.get("arch"),
                          "format": meta["format"], "device": a.device, **r})  # fmt: skip
            finally:
                proc.terminate()
                proc.wait(timeout=60)
        if set(results) != set(servers):
            return
        emit({
            "benchmark": "serve_load_summary", "device": a.device,
            "client_cpus": sorted(client_cpus), "server_cpus": sorted(server_cpus),
            "seconds_per_level": a.seconds,
            "throughput_ratio": {c: results["cudalab"][c]["throughput_rps"] / max(results["reference"][c]["throughput_rps"], 1e-9)
                                 for c in levels},
            "errors": {name: sum(r["errors"] for r in by_c.values()) for name, by_c in results.items()},
        })  # fmt: skip


def reference_server(artefact: Path, port: int, device: str) -> None:
    """The reference: a minimal unbatched FastAPI handler (one image per model call)."""
    import io

    import uvicorn
    from fastapi import FastAPI
    from PIL import Image

    from cudalab.serve.export import Runner

    meta = json.loads((artefact / "model.json").read_text())
    runner = Runner(artefact / meta["file"], meta["format"], device, threads=len(os.sched_getaffinity(0)))
    size, classes = int(meta["image_size"]), meta["classes"]
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        with Image.open(io.BytesIO(await request.body())) as im:
            x = np.asarray(im.convert("RGB").resize((size, size)), dtype=np.float32).transpose(2, 0, 1) / 255
        logits = runner(np.ascontiguousarray(x[None]))[0]
        e = np.exp(logits - logits.max())
        probs = e / e.sum()
        return {
            "top": [{"label": classes[j], "probability": float(probs[j])} for j in np.argsort(-probs)[:5]]
        }

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
