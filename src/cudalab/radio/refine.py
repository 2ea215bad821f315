"""DM refinement of candidates: the grid says which trial, the data say which DM.

heimdall's grid spaces trials so that a pulse loses at most ~25 % of its S/N between two of them,
which on coarse channels means steps of several pc cm^-3. Each top candidate is therefore
re-dedispersed from the data at finely spaced DMs spanning its neighbouring trials, filtered with its
boxcar, and the DM of greatest S/N (interpolated with a parabola) is reported, as FETCH's ``dm_opt``.
"""

from __future__ import annotations

import numpy as np
import torch

from cudalab.radio.constants import dispersion_delay_s
from cudalab.radio.dedisperse import dedisperse
from cudalab.radio.observation import Observation
from cudalab.radio.rfi import RfiConfig, clean_block
from cudalab.radio.search import normalise

#: Trials across the interval between the neighbouring grid DMs.
FINE_TRIALS = 41


def refine_dm(
    obs: Observation,
    sample: int,
    width: int,
    dm_lo: float,
    dm_hi: float,
    *,
    k_dm: float,
    rfi: RfiConfig,
    device: torch.device,
    trials: int = FINE_TRIALS,
) -> tuple[float, float]:
    """The DM in ``[dm_lo, dm_hi]`` that maximises the boxcar S/N of a pulse at ``sample`` of ``width``.

    Returns ``(dm, snr)`` with the S/N measured in a window of ``max(4096, 16 width)`` samples.
    """
    h = obs.header
    dms = np.linspace(dm_lo, dm_hi, trials)
    delays = np.rint(dispersion_delay_s(dms[:, None], h.freqs_mhz[None, :], h.fmax_mhz, k_dm) / h.tsamp_s)
    delays = delays.astype(np.int64)
    half = max(2048, 8 * width)
    nout = 2 * half
    data = obs.read_padded(sample - half, nout + int(delays.max()))
    x, mask = clean_block(torch.from_numpy(data).to(device), rfi)
    series = dedisperse(x, torch.from_numpy(delays).to(device), nout, weights=(~mask).float())
    z = normalise(series, nout)  # one baseline and noise level for the whole window
    csum = torch.nn.functional.pad(torch.cumsum(z.double(), dim=1), (1, 0))
    snr = (csum[:, width:] - csum[:, :-width]) / np.sqrt(width)  # boxcar starting at t
    centre = half - width // 2
    lo, hi = max(0, centre - 2 * width - 4), min(snr.shape[1], centre + 2 * width + 5)
    best = snr[:, lo:hi].max(dim=1).values.cpu().numpy()  # (trials,)
    i = int(np.argmax(best))
    dm = float(dms[i])
    if 0 < i < trials - 1:  # parabola through the peak and its neighbours
        a, b, c = best[i - 1], best[i], best[i + 1]
        denom = a - 2 * b + c
        if denom < 0:
            dm += float(0.5 * (a - c) / denom) * float(dms[1] - dms[0])
    return dm, float(best[i])
