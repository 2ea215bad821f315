"""BlockStream: the blocks of Observation.blocks, bit for bit, read ahead (and on a GPU, copied ahead)."""

from __future__ import annotations

import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from cudalab.errors import CudalabError
from cudalab.radio.io.header import Header
from cudalab.radio.io.observation import Observation, open_observation
from cudalab.radio.io.sigproc import encode_header
from cudalab.radio.io.stream import BlockStream, raw_to_intensity

FILES = [
    "parkes_8bit_1.fil",
    "parkes_2bit.fil",
    "parkes_1bit.fil",
    "parkes_4bit.sf",
    "test_4pol.fits",
    "small.fil",
]


def two_if_file(path: Path, nchans: int = 24, n: int = 1000, seed: int = 0) -> tuple[Path, np.ndarray]:
    """An 8-bit SIGPROC file with two IFs (AA, BB) per sample; returns it and its (n, 2, nchans) samples."""
    h = Header(path="", format="sigproc", nchans=nchans, nsamples=n, tsamp_s=1e-3, fch1_mhz=1500.0,
               foff_mhz=-1.0, nbits=8, npol_stored=2)  # fmt: skip
    samples = np.random.default_rng(seed).integers(0, 256, size=(n, 2, nchans), dtype=np.uint8)
    one_if = b"\x04\x00\x00\x00nifs" + struct.pack("<i", 1)  # the writer stores total intensity only
    head = encode_header(h)
    assert head.count(one_if) == 1
    path.write_bytes(head.replace(one_if, one_if[:-4] + struct.pack("<i", 2)) + samples.tobytes())
    return path, samples


def assert_same_blocks(obs: Observation, gulp: int, overlap: int, device: str, align: int = 1) -> int:
    """Block k has new samples [k gulp, k gulp + gulp) and holds gulp + overlap samples as the reader
    gives them; one that would run past the file's end reaches back (to a multiple of ``align``) and
    says how many of its first samples are context (``head``)."""
    total, count = obs.header.nsamples, gulp + overlap
    with BlockStream(obs, gulp, overlap, torch.device(device), align=align) as stream:
        got = list(stream)
    want = []
    for new in range(0, total, gulp):
        start = new if new + count <= total else min(new, -(-max(0, total - count) // align) * align)
        want.append((start, min(gulp, total - new), new - start))
    assert [(b.start, b.valid, b.head) for b in got] == want
    for g in got:
        assert g.data.dtype == torch.float32 and g.data.device.type == device
        assert g.start % align == 0 and g.head % align == 0
        assert g.data.shape[1] == min(count, total - g.start)  # as long as the others where it can be
        np.testing.assert_array_equal(g.data.cpu().numpy(), obs.read(g.start, min(count, total - g.start)))
    return len(got)


def test_a_block_at_the_files_end_reaches_back_to_be_as_long_as_the_others(shared_data: Path) -> None:
    obs = open_observation(shared_data / "radio" / "parkes_8bit_1.fil")  # 4096 samples
    assert assert_same_blocks(obs, 1000, 500, "cpu", align=8) == 5
    with BlockStream(obs, 1000, 500, torch.device("cpu"), align=8) as stream:
        last = list(stream)[-1]
    assert (last.start, last.head, last.valid, last.data.shape[1]) == (2600, 1400, 96, 1496)
    with pytest.raises(ValueError, match="multiple of align"):
        BlockStream(obs, 1000, 0, torch.device("cpu"), align=16)


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize(("gulp", "overlap"), [(1000, 0), (777, 2500), (1 << 20, 64)])
def test_the_stream_is_the_file_blocks(shared_data: Path, name: str, gulp: int, overlap: int) -> None:
    obs = open_observation(shared_data / "radio" / name)
    n = assert_same_blocks(obs, gulp, overlap, "cpu")
    assert n == -(-obs.header.nsamples // gulp)


def test_two_ifs_are_summed_like_the_reader(tmp_path: Path) -> None:
    path, samples = two_if_file(tmp_path / "aabb.fil")
    obs = open_observation(path)
    assert obs.header.npol_stored == 2
    np.testing.assert_array_equal(obs.read(), samples.sum(axis=1, dtype=np.float32).T)
    assert_same_blocks(obs, 300, 120, "cpu")


@pytest.mark.parametrize("name", ["parkes_8bit_1.fil", "parkes_2bit.fil", "ascending_noise.fil"])
def test_raw_samples_become_what_read_returns(shared_data: Path, name: str, tmp_path: Path) -> None:
    obs = open_observation(shared_data / "radio" / name)
    raw = obs.reader.read_raw(100, 400)  # type: ignore[attr-defined]
    assert raw.shape == (400, obs.header.npol_stored, obs.header.nchans) and raw.dtype == obs.reader.raw_dtype  # type: ignore[attr-defined]
    np.testing.assert_array_equal(
        raw_to_intensity(torch.from_numpy(np.array(raw))).numpy(), obs.read(100, 400)
    )
    path, _ = two_if_file(tmp_path / "aabb.fil", seed=3)
    two = open_observation(path)
    np.testing.assert_array_equal(
        raw_to_intensity(torch.from_numpy(np.array(two.reader.read_raw(0, 1000)))).numpy(),
        two.read(),  # type: ignore[attr-defined]
    )


def test_a_read_error_reaches_the_loop_and_stops_the_reader(shared_data: Path) -> None:
    obs = open_observation(shared_data / "radio" / "parkes_8bit_1.fil")
    real = obs.read
    calls = []

    def failing(start: int = 0, count: int | None = None) -> np.ndarray:
        calls.append(start)
        if len(calls) == 3:
            raise CudalabError(f"{obs.header.path}: truncated at sample {start}")
        return real(start, count)

    obs.read = failing  # type: ignore[method-assign]
    seen = []
    with (
        pytest.raises(CudalabError, match="truncated at sample"),
        BlockStream(obs, 500, 100, torch.device("cpu")) as s,
    ):
        seen.extend(b.start for b in s)
    assert seen == [0, 500]
    assert not any(t.name == "cudalab-block-reader" and t.is_alive() for t in threading.enumerate())


def test_leaving_the_loop_early_stops_the_reader(shared_data: Path) -> None:
    obs = open_observation(shared_data / "radio" / "parkes_8bit_1.fil")
    with BlockStream(obs, 100, 50, torch.device("cpu")) as stream:
        for block in stream:
            assert block.start == 0
            break
    assert not any(t.name == "cudalab-block-reader" and t.is_alive() for t in threading.enumerate())


def test_a_stream_is_iterated_once(shared_data: Path) -> None:
    stream = BlockStream(open_observation(shared_data / "radio" / "small.fil"), 100, 0, torch.device("cpu"))
    assert not stream.raw and stream.pinned_bytes == 0  # a CPU stream moves float32, unpinned
    assert stream.bytes_per_sample == 4 * stream.obs.header.nchans
    list(stream)
    with pytest.raises(RuntimeError, match="once"):
        list(stream)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["parkes_8bit_1.fil", "parkes_2bit.fil", "parkes_4bit.sf"])
def test_on_the_gpu_the_stream_is_the_file_blocks(shared_data: Path, name: str) -> None:
    obs = open_observation(shared_data / "radio" / name)
    for gulp, overlap in [(1000, 0), (777, 2500), (1 << 20, 64)]:
        assert_same_blocks(obs, gulp, overlap, "cuda")
    stream = BlockStream(obs, 1000, 300, torch.device("cuda"))
    per_sample = obs.header.nchans * (obs.reader.raw_dtype.itemsize if stream.raw else 4)  # type: ignore[attr-defined]
    assert stream.bytes_per_sample == per_sample
    assert stream.raw == name.endswith(".fil")
    assert stream.pinned_bytes == 2 * 1300 * per_sample and all(p.is_pinned() for p in stream._pinned)
    stream.close()


@pytest.mark.gpu
def test_on_the_gpu_two_ifs_are_summed(tmp_path: Path) -> None:
    path, _ = two_if_file(tmp_path / "aabb.fil", seed=9)
    assert_same_blocks(open_observation(path), 300, 120, "cuda")
