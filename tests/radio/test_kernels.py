"""The Triton kernels (dedispersion, the fused boxcar search): equal to the torch references
(interpreted on CPU, compiled on GPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cudalab.radio.dedispersion.direct import LiveChannels
from cudalab.radio.kernels import resolve_kernel, triton_importable
from tests.radio.kernel_checks import CHECKS as KERNEL_CHECKS
from tests.radio.kernel_checks import same_candidates

CHECKS = Path(__file__).with_name("kernel_checks.py")


@pytest.mark.skipif(not triton_importable(), reason="Triton is not installed (it comes with torch on Linux)")
def test_the_kernel_equals_the_reference_under_the_interpreter() -> None:
    """Every check of kernel_checks.py, with a fresh seed, in Triton's CPU interpreter.

    A subprocess: Triton reads TRITON_INTERPRET when the kernel is first built, and this process may
    build it compiled (on a GPU machine).
    """
    seed = int(np.random.SeedSequence().entropy % 2**31)
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, str(CHECKS), "cpu", str(seed)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"seed {seed}:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    done = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("ok ")]
    assert done == list(KERNEL_CHECKS), proc.stdout


def test_auto_picks_triton_on_a_gpu_and_torch_on_a_cpu() -> None:
    assert resolve_kernel("auto", torch.device("cpu")).name == "torch"
    assert resolve_kernel("torch", torch.device("cuda")).name == "torch"
    if triton_importable():
        assert resolve_kernel("auto", torch.device("cuda")).name == "triton"
    with pytest.raises(ValueError, match="kernel must be one of"):
        resolve_kernel("fdmt", torch.device("cpu"))


def test_triton_on_a_cpu_without_the_interpreter_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match=r"cannot run here.*--kernel torch"):
        resolve_kernel("triton", torch.device("cpu"))


def test_live_channels_of_a_sub_band_are_numbered_from_its_start() -> None:
    w = np.array([1, 0, 1, 1, 0, 0, 2, 1], dtype=np.float32)
    live = LiveChannels.of(torch.from_numpy(w), 8, torch.device("cpu"))
    assert live.host.tolist() == [0, 2, 3, 6, 7] and live.has_scale
    band = live.within(2, 7)
    assert band.host.tolist() == band.chans.tolist() == [0, 1, 4]
    assert band.scale.tolist() == [1.0, 1.0, 2.0]
    assert live.within(4, 6).host.size == 0
    assert not LiveChannels.of(None, 3, torch.device("cpu")).has_scale
    with pytest.raises(ValueError, match=r"weights must be \(8,\)"):
        LiveChannels.of(w[:5], 8, torch.device("cpu"))


# --------------------------------------------------------------------------------------------------
# on the GPU: the compiled kernel, and the whole search on it
# --------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(KERNEL_CHECKS))
def test_compiled_kernel_equals_the_reference(name: str) -> None:
    seed = int(np.random.SeedSequence().entropy % 2**31)
    KERNEL_CHECKS[name]("cuda", seed)


@pytest.mark.gpu
def test_compiled_kernel_at_fast_scale() -> None:
    """4096 channels, 512 trials, a block longer than 2^31 / 4096 samples: the int64 offsets hold."""
    from cudalab.radio.dedispersion.direct import dedisperse
    from cudalab.radio.kernels.launch import dedisperse_triton

    g = torch.Generator(device="cuda").manual_seed(int(np.random.SeedSequence().entropy % 2**31))
    nchans, ndm, nout, top = 4096, 512, 1 << 16, 1 << 19
    data = torch.randint(0, 256, (nchans, nout + top), generator=g, device="cuda").float()
    delays = torch.sort(torch.randint(0, top, (ndm, nchans), generator=g, device="cuda"), dim=1).values
    assert data.numel() > 2**31
    got = dedisperse_triton(data, delays, nout)
    want = dedisperse(data, delays, nout)
    assert torch.equal(got, want)


@pytest.mark.gpu
@pytest.mark.parametrize("subbands", [0, 16])
def test_search_on_the_kernel_equals_the_search_on_the_reference(subbands: int, tmp_path: Path) -> None:
    from cudalab.radio.pipeline.config import SearchConfig
    from cudalab.radio.pipeline.search import search_file
    from cudalab.radio.simulate import SimConfig, planned_header, random_bursts, simulate

    sim = SimConfig(
        nchans=256, tsamp_s=128e-6, fch1_mhz=1500.0, foff_mhz=-300.0 / 256, duration_s=8.0, seed=5
    )
    bursts = random_bursts(6, np.random.default_rng(5), header=planned_header(sim), dm_range=(50.0, 900.0),
                           width_range_s=(0.3e-3, 5e-3), snr_range=(10.0, 25.0), spacing_s=1.0)  # fmt: skip
    simulate(replace(sim, bursts=tuple(bursts)), tmp_path / "k.fil")
    cfg = SearchConfig(dm_max=1000.0, device="cuda", subbands=subbands, cutouts=0, refine=0, gulp=1 << 14)
    ref = search_file(tmp_path / "k.fil", replace(cfg, kernel="torch"))
    fast = search_file(tmp_path / "k.fil", replace(cfg, kernel="triton"))
    assert fast.kernel == "triton" and ref.kernel == "torch"
    same_candidates(fast.candidates, ref.candidates)
