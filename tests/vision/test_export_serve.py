"""``cudalab export`` (torch.export, ONNX) with its parity check, and ``cudalab serve``: answers that
match the exported model, dynamic batching, load shedding, draining, and a bad-input corpus that gets
4xx answers while the server keeps serving."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cudalab.cli import main
from cudalab.errors import ExitCode

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def artefacts(trained: Path) -> dict[str, Path]:
    out = {}
    for fmt in ("onnx", "torch-export"):
        assert main(["export", str(trained), "--format", fmt, "--images", "200"]) == ExitCode.OK
        out[fmt] = trained / "export" / fmt
    return out


@pytest.mark.parametrize("fmt", ["onnx", "torch-export"])
def test_export_writes_the_program_and_a_parity_that_passes(artefacts: dict[str, Path], fmt: str) -> None:
    folder = artefacts[fmt]
    parity = json.loads((folder / "parity.json").read_text())
    assert parity["images"] == 200 and parity["passed"]
    assert parity["top1_agreement"] == 1.0 and parity["max_abs_logit_diff"] <= 1e-4
    meta = json.loads((folder / "model.json").read_text())
    program = folder / meta["file"]
    from cudalab._io import file_sha256

    assert meta["sha256"] == file_sha256(program) and meta["image_size"] == 32 and len(meta["classes"]) == 10
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_exported_programs_take_any_batch_and_match_the_eager_model(
    trained: Path, artefacts: dict[str, Path]
) -> None:
    from cudalab.runs.rundir import RunDir
    from cudalab.serve.export import Runner, load_trained

    model = load_trained(RunDir(trained)).model
    torch.manual_seed(1)
    for n in (1, 3, 17):  # batch sizes the export never saw
        x = torch.rand(n, 3, 32, 32)
        with torch.no_grad():
            ref = model(x).numpy()
        for fmt, folder in artefacts.items():
            got = Runner(folder / json.loads((folder / "model.json").read_text())["file"], fmt)(x.numpy())  # type: ignore[arg-type]
            assert got.shape == (n, 10) and np.abs(got - ref).max() < 1e-4, (fmt, n)


def test_an_operator_the_format_lacks_is_refused_in_one_line(tmp_path: Path) -> None:
    from cudalab.serve.export import ExportRefusedError, export_program

    @torch.library.custom_op("cudalab_test::mystery", mutates_args=())
    def mystery(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @mystery.register_fake
    def _(x: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(x)

    class Odd(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return mystery(x).mean((2, 3))

    with pytest.raises(ExportRefusedError, match=r"unsupported operator cudalab_test\.mystery\.default"):
        export_program(Odd().eval(), "onnx", tmp_path / "m.onnx", 8)
    assert not (tmp_path / "m.onnx").exists()

    class Branchy(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean((2, 3)) if x.sum() > 0 else x.amax((2, 3))

    with pytest.raises(ExportRefusedError, match="data-dependent") as info:
        export_program(Branchy().eval(), "torch-export", tmp_path / "m.pt2", 8)
    assert "\n" not in str(info.value)


def test_export_of_what_is_not_a_finished_vision_run_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", "nosuch", "--runs", str(tmp_path)]) == ExitCode.USAGE
    assert "nosuch: no such run" in capsys.readouterr().err
    run = tmp_path / "vision" / "x"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text("{}")
    assert main(["export", str(run)]) == ExitCode.USAGE
    assert "no finished vision model here" in capsys.readouterr().err


# -- the server ------------------------------------------------------------------------------------


def _jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def samples(tiny: Path) -> list[tuple[str, bytes]]:
    files = sorted((tiny / "test").glob("*/*.jpg"))[::20][:8]
    return [(f.name, f.read_bytes()) for f in files]


def _client(artefact: Path, **cfg: object):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from cudalab.serve.server import ServeConfig, create_app, load_artefact

    return TestClient(create_app(load_artefact(artefact), ServeConfig(**cfg)), raise_server_exceptions=False)  # type: ignore[arg-type]


def test_predictions_are_the_exported_models_own(
    artefacts: dict[str, Path], samples: list[tuple[str, bytes]]
) -> None:
    from cudalab.serve.server import load_artefact, load_image, softmax

    model = load_artefact(artefacts["onnx"])
    with _client(artefacts["onnx"]) as client:
        name, data = samples[0]
        one = client.post("/predict?k=3", content=data, headers={"content-type": "image/jpeg"})
        assert one.status_code == 200
        top = one.json()["predictions"][0]["top"]
        x = load_image(data, name, 32, 10**6)[None]
        probs = softmax(model.predict(x))[0]
        assert [t["index"] for t in top] == list(np.argsort(-probs)[:3])
        assert [t["probability"] for t in top] == pytest.approx(sorted(probs, reverse=True)[:3], abs=1e-6)
        assert top[0]["label"] == model.classes[top[0]["index"]]
        many = client.post("/predict?k=1", files=[("file", (n, d, "image/jpeg")) for n, d in samples])
        assert many.status_code == 200
        answers = many.json()["predictions"]
        assert [a["name"] for a in answers] == [n for n, _ in samples]  # in the order sent
        xs = np.stack([load_image(d, n, 32, 10**6) for n, d in samples])
        assert [a["top"][0]["index"] for a in answers] == list(softmax(model.predict(xs)).argmax(1))
        assert client.get("/healthz").json()["status"] == "ok"
        assert client.get("/openapi.json").json()["paths"]["/predict"]


def _bad_corpus(good: bytes) -> list[tuple[str, dict, int, str]]:
    """(name, request kwargs, expected status, fragment of the detail)."""
    from PIL import Image

    bomb = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(bomb, format="PNG")  # 100 megapixels in a few kB
    jpeg = {"content-type": "image/jpeg"}
    return [
        ("not an image", {"content": b"hello world", "headers": jpeg}, 400, "not an image"),
        ("truncated JPEG", {"content": good[: len(good) * 2 // 3], "headers": jpeg}, 400, "truncated"),
        ("empty body", {"content": b"", "headers": jpeg}, 400, "empty"),
        ("100-megapixel bomb", {"content": bomb.getvalue(), "headers": {"content-type": "image/png"}}, 413,
         "10000 x 10000"),
        ("wrong content type", {"content": good, "headers": {"content-type": "text/plain"}}, 415, "content type"),
        ("no content type", {"content": good, "headers": {"content-type": ""}}, 415, "content type"),
        ("oversize body", {"content": good * 200, "headers": jpeg}, 413, "limit"),
        ("too many files", {"files": [("f", (f"{i}.jpg", good, "image/jpeg")) for i in range(6)]}, 413, "multipart"),
        ("form without files", {"content": b'--xx\r\nContent-Disposition: form-data; name="a"\r\n\r\nb\r\n--xx--\r\n',
                                "headers": {"content-type": "multipart/form-data; boundary=xx"}}, 400, "no file"),
        ("broken multipart", {"content": b"--xx\r\nnonsense", "headers": {"content-type": "multipart/form-data; boundary=xx"}},
         400, ""),
        ("one bad file among good", {"files": [("f", ("ok.jpg", good, "image/jpeg")), ("f", ("bad.jpg", b"xx", "image/jpeg"))]},
         400, "bad.jpg"),
    ]  # fmt: skip


def test_the_bad_input_corpus_gets_4xx_and_the_server_keeps_serving(
    artefacts: dict[str, Path], samples: list[tuple[str, bytes]]
) -> None:
    good = samples[0][1]
    with _client(artefacts["torch-export"], max_body_bytes=len(good) * 50, max_images=5) as client:
        for name, kwargs, status, fragment in _bad_corpus(good):
            r = client.post("/predict", **kwargs)
            assert r.status_code == status, (name, r.status_code, r.text)
            assert fragment in r.json()["detail"] if fragment else r.json()["detail"], name
            ok = client.post("/predict", content=good, headers={"content-type": "image/jpeg"})
            assert ok.status_code == 200, name  # still serving
        bad_k = client.post("/predict?k=0", content=good, headers={"content-type": "image/jpeg"})
        assert bad_k.status_code == 422
        metrics = client.get("/metrics").text
    assert 'status="500"' not in metrics and 'status="200"' in metrics


class SlowModel:
    """A model that takes ``seconds`` per call and records its batch sizes."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.batches = seconds, []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.batches.append(len(x))
        time.sleep(self.seconds)
        return np.tile(np.arange(10, dtype=np.float32), (len(x), 1))


def _slow_client(artefact: Path, model: SlowModel, **cfg: object):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from cudalab.serve.server import ServeConfig, create_app, load_artefact

    loaded = load_artefact(artefact)
    loaded.predict = model
    return TestClient(create_app(loaded, ServeConfig(**cfg)), raise_server_exceptions=False)  # type: ignore[arg-type]


def _concurrently(client, data: bytes, n: int) -> list[int]:  # type: ignore[no-untyped-def]
    codes: list[int] = [0] * n

    def one(i: int) -> None:
        codes[i] = client.post("/predict", content=data, headers={"content-type": "image/jpeg"}).status_code

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return codes


def test_concurrent_requests_are_batched(
    artefacts: dict[str, Path], samples: list[tuple[str, bytes]]
) -> None:
    model = SlowModel(0.05)
    with _slow_client(artefacts["onnx"], model, max_batch=16, max_wait_ms=20) as client:
        codes = _concurrently(client, samples[0][1], 24)
        metrics = client.get("/metrics").text
    assert codes == [200] * 24
    assert sum(model.batches) == 24 and max(model.batches) > 1 and len(model.batches) < 24
    assert max(model.batches) <= 16
    assert "cudalab_batch_size_sum 24.0" in metrics and "cudalab_queue_depth 0.0" in metrics


def test_an_overloaded_server_sheds_load_with_503_and_recovers(
    artefacts: dict[str, Path], samples: list[tuple[str, bytes]]
) -> None:
    model = SlowModel(0.3)
    with _slow_client(artefacts["onnx"], model, max_batch=1, queue_size=2, timeout_ms=400) as client:
        codes = _concurrently(client, samples[0][1], 8)
        assert 200 in codes and 503 in codes and set(codes) <= {200, 503}  # queue full or over the cap
        after = client.post("/predict", content=samples[0][1], headers={"content-type": "image/jpeg"})
        assert after.status_code == 200


def test_draining_answers_every_queued_image_then_refuses() -> None:
    from cudalab.serve.server import Batcher, OverloadedError, ServeConfig

    async def scenario() -> tuple[list[int], str]:
        model = SlowModel(0.05)
        batcher = Batcher(model, ServeConfig(max_batch=4, max_wait_ms=0))
        batcher.start()
        image = np.zeros((3, 8, 8), dtype=np.float32)
        waiting = [asyncio.create_task(batcher.submit([image, image])) for _ in range(6)]
        await asyncio.sleep(0.01)
        await batcher.drain()
        done = [len(await w) for w in waiting]
        try:
            await batcher.submit([image])
        except OverloadedError as exc:
            return done, str(exc)
        return done, ""

    done, refusal = asyncio.run(scenario())
    assert done == [2] * 6 and "shutting down" in refusal


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cudalab_serve_starts_answers_and_stops_cleanly_on_sigterm(
    artefacts: dict[str, Path], samples: list[tuple[str, bytes]]
) -> None:
    import httpx

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cudalab",
            "serve",
            str(artefacts["onnx"]),
            "--port",
            str(port),
            "--device",
            "cpu",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        r = httpx.post(
            f"http://127.0.0.1:{port}/predict", content=samples[0][1], headers={"content-type": "image/jpeg"}
        )
        assert r.status_code == 200 and r.json()["predictions"][0]["top"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    # uvicorn drains, then re-raises the signal so that a supervisor sees how it ended
    assert proc.returncode in (0, -signal.SIGTERM), out[-2000:]
    assert "Application shutdown complete" in out and "Traceback" not in out


def test_serve_refuses_what_is_not_an_artefact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", str(tmp_path)]) == ExitCode.USAGE
    assert "not an exported model" in capsys.readouterr().err
