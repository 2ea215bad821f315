"""``cudalab serve ARTEFACT``: an exported image classifier behind an HTTP API (FastAPI + uvicorn).

Endpoints:

- ``POST /predict?k=5``: one image as the raw body (``image/*`` or ``application/octet-stream``) or
  any number of files as ``multipart/form-data`` (every file field, any name); answers the top-k
  class names with probabilities per image, in the order sent.
- ``GET /healthz``: 200 with the model and queue depth while serving, 503 while draining.
- ``GET /metrics``: Prometheus text: requests by path and status, ``/predict`` latency, batch sizes,
  images, queue depth, and the GPU memory in use when the model runs on a GPU.
- ``GET /docs``: the OpenAPI page.

Batching: each image joins one bounded queue; a single batcher takes every queued image (up to
``max_batch``), waits at most ``max_wait_ms`` for more, and runs them as one batch on one inference
thread while the next batch gathers. At low load an image runs at once; under load, batches grow.
An image that waited longer than ``timeout_ms`` before its batch started is answered 503 (the
latency cap), as is a request that would overflow the queue (with ``Retry-After``): an overloaded
server sheds load instead of queueing without bound.

Bad input is a 4xx with a one-line ``detail`` and the server keeps serving: a body over
``max_body_bytes`` (413, checked from ``Content-Length`` and while reading), more than
``max_images`` files (413), an unsupported content type (415), a file that is not an image or is
truncated (400, naming the file), an image over ``max_pixels`` (413, checked from the header before
anything is decoded: a decompression bomb never reaches memory). On shutdown (SIGTERM or Ctrl-C)
uvicorn stops accepting connections, requests in flight are answered, and the queue is drained
before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
import warnings
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.exceptions import HTTPException

from cudalab.errors import CudalabError


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """How the server batches and what it accepts."""

    max_batch: int = 64
    max_wait_ms: float = 0.0
    """How long a batch waits for more images once the model is free; 0: it runs at once with what
    queued while the previous batch ran (batches grow with the load, never with added latency)."""
    queue_size: int = 1024
    """Images waiting at most; a request that would overflow the queue is answered 503."""
    timeout_ms: float = 5000.0
    """The latency cap: an image not started within this time of arriving is answered 503."""
    max_body_bytes: int = 32 << 20
    max_images: int = 256
    """Files per request at most."""
    max_pixels: int = 40_000_000
    """Pixels per image at most (width x height from the header, before decoding)."""
    top_k: int = 5

    def __post_init__(self) -> None:
        for name in ("max_batch", "queue_size", "max_body_bytes", "max_images", "max_pixels", "top_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0 or self.timeout_ms <= 0:
            raise ValueError("max_wait_ms must be >= 0 and timeout_ms > 0")


class BadInputError(Exception):
    """A request the server refuses: an HTTP status and a one-line reason."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


# -- the model -------------------------------------------------------------------------------------


@dataclass
class Artefact:
    """An exported model folder (``model.json`` beside the program), loaded for inference."""

    path: Path
    meta: dict[str, Any]
    predict: Callable[[np.ndarray], np.ndarray]
    """float32 N x 3 x S x S in [0, 1] -> logits N x classes."""
    device: str

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def size(self) -> int:
        return int(self.meta["image_size"])


def load_artefact(path: Path, device: str = "cpu", threads: int = 0) -> Artefact:
    """Load an artefact folder written by ``cudalab export`` (or the program file inside one)."""
    from cudalab.serve.export import ARTEFACT_JSON, FORMATS, Runner

    folder = path.parent if path.is_file() else path
    meta_path = folder / ARTEFACT_JSON
    if not meta_path.is_file():
        raise CudalabError(
            f"{path}: not an exported model ({ARTEFACT_JSON} missing; make one with `cudalab export`)"
        )
    try:
        meta = json.loads(meta_path.read_text())
        fmt = meta["format"]
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}")
        runner = Runner(folder / meta["file"], fmt, device, threads)
        _ = meta["classes"], int(meta["image_size"])
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise CudalabError(f"{meta_path}: cannot load the model ({str(exc).splitlines()[0]})") from None
    except Exception as exc:
        raise CudalabError(f"{folder}: cannot load the model ({str(exc).splitlines()[0]})") from None
    return Artefact(folder, meta, runner, device)


def load_image(data: bytes, name: str, size: int, max_pixels: int) -> np.ndarray:
    """An encoded image as float32 3 x size x size in [0, 1] (shorter side resized, centre cropped).

    :class:`BadInputError` (400 or 413) for anything that is not a whole, reasonably sized image.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadInputError(400, f"{name}: empty file")
    try:
        with warnings.catch_warnings():  # the pixel limit is checked below, against max_pixels
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise BadInputError(413, f"{name}: image over the pixel limit ({max_pixels:,} pixels)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        kind = _magic(data)
        reason = f"truncated or corrupt {kind} image" if kind else "not an image (no known image format)"
        raise BadInputError(400, f"{name}: {reason}") from None
    with im:
        w, h = im.size
        rgb: Image.Image
        if w * h > max_pixels:
            raise BadInputError(413, f"{name}: {w} x {h} image over the pixel limit ({max_pixels:,} pixels)")
        if w < 1 or h < 1:
            raise BadInputError(400, f"{name}: image of size {w} x {h}")
        try:
            im.draft("RGB", (size, size))  # JPEG: decode at a reduced scale when far larger than needed
            rgb = im.convert("RGB")
            scale = size / min(rgb.size)
            if rgb.size != (size, size):
                rgb = rgb.resize(
                    (max(size, round(rgb.size[0] * scale)), max(size, round(rgb.size[1] * scale))),
                    Image.Resampling.BILINEAR,
                    reducing_gap=3.0,
                )
                left, top = (rgb.size[0] - size) // 2, (rgb.size[1] - size) // 2
                rgb = rgb.crop((left, top, left + size, top + size))
            pixels = np.asarray(rgb, dtype=np.float32)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            reason = (
                "truncated or corrupt image"
                if "truncat" in str(exc) or isinstance(exc, OSError)
                else str(exc)
            )
            raise BadInputError(400, f"{name}: {reason}") from None
    return np.ascontiguousarray(pixels.transpose(2, 0, 1) / 255.0, dtype=np.float32)


MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF8", "GIF"), (b"BM", "BMP"))


def _magic(data: bytes) -> str | None:
    """The format an image file's first bytes announce (None for none we know)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in MAGIC if data.startswith(magic)), None)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# -- batching --------------------------------------------------------------------------------------


class OverloadedError(Exception):
    """The queue is full, the latency cap passed, or the server is draining (503)."""


@dataclass
class _Item:
    image: np.ndarray
    arrived: float
    future: asyncio.Future[np.ndarray]


@dataclass
class Batcher:
    """One bounded queue of images and one task that runs them in batches (see the module)."""

    predict: Callable[[np.ndarray], np.ndarray]
    cfg: ServeConfig
    on_batch: Callable[[int], None] = lambda n: None
    queue: asyncio.Queue[_Item] = field(init=False)
    closing: bool = False
    busy: bool = False

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.cfg.queue_size)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cudalab-infer")
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name="cudalab-batcher")

    async def submit(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """The logits of ``images``; :class:`OverloadedError` when they cannot be queued or waited too long."""
        if self.closing:
            raise OverloadedError("the server is shutting down")
        if self.queue.qsize() + len(images) > self.cfg.queue_size:
            raise OverloadedError(f"queue full ({self.queue.qsize()} images waiting)")
        loop = asyncio.get_running_loop()
        items = [_Item(x, loop.time(), loop.create_future()) for x in images]
        for it in items:
            self.queue.put_nowait(it)
        return list(await asyncio.gather(*(it.future for it in items)))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        cap, wait = self.cfg.timeout_ms / 1000, self.cfg.max_wait_ms / 1000
        while True:
            batch = [await self.queue.get()]
            self.busy = True
            try:
                deadline = loop.time() + wait
                while len(batch) < self.cfg.max_batch:
                    if not self.queue.empty():
                        batch.append(self.queue.get_nowait())
                        continue
                    left = deadline - loop.time()
                    if left <= 0 or self.closing:
                        break
                    try:
                        batch.append(await asyncio.wait_for(self.queue.get(), left))
                    except TimeoutError:
                        break
                now = loop.time()
                run = []
                for it in batch:
                    if it.future.done():  # the client went away
                        continue
                    if now - it.arrived > cap:
                        it.future.set_exception(
                            OverloadedError(f"waited over the {self.cfg.timeout_ms:g} ms latency cap")
                        )
                    else:
                        run.append(it)
                if not run:
                    continue
                x = np.stack([it.image for it in run])
                self.on_batch(len(run))
                try:
                    logits = await loop.run_in_executor(self.executor, self.predict, x)
                except Exception as exc:
                    for it in run:
                        if not it.future.done():
                            it.future.set_exception(exc)
                    continue
                for it, row in zip(run, logits, strict=True):
                    if not it.future.done():
                        it.future.set_result(row)
            finally:
                self.busy = False

    async def drain(self) -> None:
        """Refuse new images, answer every queued one, then stop."""
        self.closing = True
        while not self.queue.empty() or self.busy:
            await asyncio.sleep(0.005)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.executor.shutdown(wait=True)


# -- the app ---------------------------------------------------------------------------------------


class StatusCounter:
    """Counts answers by path and status (plain ASGI: Starlette's ``BaseHTTPMiddleware`` costs about a
    millisecond a request)."""

    PATHS = frozenset({"/predict", "/healthz", "/metrics"})

    def __init__(self, app: Any, counter: Any) -> None:
        self.app, self.counter = app, counter

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"] if scope["path"] in self.PATHS else "other"

        async def counted(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.counter.labels(path, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counted)


def create_app(artefact: Artefact, cfg: ServeConfig | None = None) -> Any:
    """The FastAPI application serving ``artefact``."""
    cfg = cfg or ServeConfig()
    registry = CollectorRegistry()
    requests = Counter(
        "cudalab_requests", "HTTP requests by path and status", ["path", "status"], registry=registry
    )
    latency = Histogram(
        "cudalab_predict_latency_seconds",
        "Latency of answered /predict requests",
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        registry=registry,
    )
    batch_sizes = Histogram(
        "cudalab_batch_size",
        "Images per model call",
        buckets=tuple(float(2**i) for i in range(0, 11)),
        registry=registry,
    )
    images_total = Counter("cudalab_images", "Images classified", registry=registry)
    depth = Gauge("cudalab_queue_depth", "Images waiting for a batch", registry=registry)
    if artefact.device.startswith("cuda"):
        import torch

        gpu = Gauge("cudalab_gpu_memory_bytes", "GPU memory allocated by the model", registry=registry)
        gpu.set_function(lambda: float(torch.cuda.memory_allocated()))

    state: dict[str, Batcher] = {}
    size, classes = artefact.size, artefact.classes

    def on_batch(n: int) -> None:
        batch_sizes.observe(n)
        images_total.inc(n)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher = Batcher(artefact.predict, cfg, on_batch)
        batcher.start()
        state["batcher"] = batcher
        depth.set_function(lambda: float(batcher.queue.qsize()))
        yield
        await batcher.drain()

    app = FastAPI(
        title="cudalab image classifier",
        version=str(artefact.meta.get("sha256", ""))[:12],
        description=f"{artefact.meta.get('arch', 'model')} over {len(classes)} classes, "
        f"{size} x {size} input ({artefact.meta.get('format')})",
        lifespan=lifespan,
    )

    app.add_middleware(StatusCounter, counter=requests)

    @app.exception_handler(BadInputError)
    async def bad_input(request: Request, exc: BadInputError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(OverloadedError)
    async def overloaded(request: Request, exc: OverloadedError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise BadInputError(400, f"bad Content-Length {declared!r}")
            if int(declared) > cfg.max_body_bytes:
                raise BadInputError(
                    413, f"body of {int(declared):,} bytes over the {cfg.max_body_bytes:,}-byte limit"
                )
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > cfg.max_body_bytes:
                raise BadInputError(413, f"body over the {cfg.max_body_bytes:,}-byte limit")
            chunks.append(chunk)
        body = b"".join(chunks)
        request._body = body
        return body

    @app.post(
        "/predict",
        summary="Classify images",
        description="One image as the body (image/* or application/octet-stream) or files as "
        "multipart/form-data; the top-k classes per image.",
    )
    async def predict(request: Request, k: int = Query(default=cfg.top_k, ge=1)) -> dict[str, Any]:
        t0 = time.perf_counter()
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            await read_body(request)
            try:
                form = await request.form(max_files=cfg.max_images, max_fields=cfg.max_images)
            except HTTPException as exc:
                raise BadInputError(
                    413 if "Too many" in str(exc.detail) else 400, f"multipart body: {exc.detail}"
                ) from None
            uploads = [
                (v.filename or key, await v.read()) for key, v in form.multi_items() if not isinstance(v, str)
            ]
            await form.close()
            if not uploads:
                raise BadInputError(400, "no file in the multipart form")
        elif kind.startswith("image/") or kind == "application/octet-stream":
            uploads = [("body", await read_body(request))]
        else:
            raise BadInputError(
                415, f"content type {kind or 'missing'}: send an image/* body or multipart/form-data files"
            )
        images = [load_image(data, name, size, cfg.max_pixels) for name, data in uploads]
        logits = await state["batcher"].submit(images)
        probs = softmax(np.stack(logits))
        top = np.argsort(-probs, axis=1)[:, : min(k, len(classes))]
        answer = {
            "predictions": [
                {
                    "name": name,
                    "top": [{"label": classes[j], "index": int(j), "probability": float(p[j])} for j in t],
                }
                for (name, _), p, t in zip(uploads, probs, top, strict=True)
            ]
        }
        latency.observe(time.perf_counter() - t0)
        return answer

    @app.get("/healthz", summary="Liveness and readiness")
    async def healthz() -> JSONResponse:
        batcher = state.get("batcher")
        if batcher is None or batcher.closing:
            return JSONResponse({"status": "draining"}, status_code=503)
        return JSONResponse(
            {
                "status": "ok",
                "model": artefact.meta.get("arch"),
                "format": artefact.meta.get("format"),
                "classes": len(classes),
                "device": artefact.device,
                "queue": batcher.queue.qsize(),
            }
        )

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def serve(artefact: Artefact, cfg: ServeConfig, host: str, port: int, log_level: str = "info") -> None:
    """Run the server until SIGTERM/SIGINT (then drain: see the module)."""
    import uvicorn

    uvicorn.run(
        create_app(artefact, cfg),
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=30,
        access_log=False,
    )


__all__ = ["Artefact", "Batcher", "ServeConfig", "create_app", "load_artefact", "load_image", "serve"]
