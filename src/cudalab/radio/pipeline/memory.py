"""How much memory a search needs, from its shapes alone, and how its blocks are cut.

A search streams the file in blocks that overlap by the largest dispersion delay (plus the widest
boxcar), so its memory is bounded by one block's worth whatever the file's length:
:func:`memory_bound` says how much, before anything is read, and search.json records it beside the
measured peak on a GPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cudalab.radio.dedispersion.plan import DedispersionPlan
from cudalab.radio.io.header import Header
from cudalab.radio.rfi import CHANNEL_CHUNK
from cudalab.radio.single_pulse.search import boxcar_widths

#: Dedispersed trials searched at once (float32 bytes); the search's temporaries are ~8x this.
SEARCH_CHUNK_BYTES = 1 << 28
#: The sub-band intermediate's budget (:func:`cudalab.radio.dedispersion.subband.dedisperse_subband`).
SUBBAND_BYTES = 1 << 29


@dataclass(frozen=True)
class MemoryBound:
    """The search's working memory for one block, from its shapes (bytes): what bounds it, whatever the
    file's length.

    Attributes
    ----------
    block_samples
        Samples per block (the gulp plus the overlap).
    stored
        One block as the stream moves it: in the file's sample type to a GPU (8-bit: nchans x samples),
        float32 on a CPU.
    block
        One block in float32 (cleaned in place).
    scrunched
        The largest time-scrunched copy of the block (half of it, at factor 2); 0 when nothing scrunches.
    series
        Dedispersed trials alive at once, float32: a chunk of trials (``SEARCH_CHUNK_BYTES``) for the
        direct method, which dedisperses chunk by chunk; the largest group for the sub-band method.
    search
        Baseline and boxcar temporaries: eight times a chunk of trials (``SEARCH_CHUNK_BYTES``).
    subband
        The sub-band intermediate (``SUBBAND_BYTES``), 0 for the direct method.
    pad
        The sub-band method's zero-padded copy of the block at the file's end (where trials of one
        group end at different samples), 0 for the direct method.
    clean
        Cleaning's temporaries: three copies of :data:`cudalab.radio.rfi.CHANNEL_CHUNK` rows of the
        block (alive only while it cleans, before any of the above).
    on_gpu
        Whether the block lives on a GPU (stream with pinned buffers) or the CPU (reader thread).
    """

    block_samples: int
    stored: int
    block: int
    scrunched: int
    series: int
    search: int
    subband: int
    pad: int
    clean: int
    on_gpu: bool

    @property
    def working(self) -> int:
        """Device memory (GPU) or host memory (CPU) of the search, beyond the delay tables."""
        # GPU: the block being converted and the next, as stored; CPU: one block queued and one read
        blocks = 2 * self.stored + self.block if self.on_gpu else 3 * self.block
        return blocks + max(self.clean, self.scrunched + self.pad + self.series + self.search + self.subband)

    @property
    def pinned(self) -> int:
        """Page-locked host memory: two stored blocks (0 on a CPU)."""
        return 2 * self.stored if self.on_gpu else 0

    def summary(self) -> dict[str, float | int | bool]:
        return {**asdict(self), "working": self.working, "pinned": self.pinned}


def outputs_per_block(block_samples: int, valid: int, factor: int, max_delay: int, max_width: int) -> int:
    """Scrunched outputs a group makes from a block: its new samples and a boxcar's reach past them,
    as far as the block's samples (less the group's largest delay) allow."""
    return min(block_samples // factor - max_delay, -(-valid // factor) + max_width // factor)


def memory_bound(
    header: Header,
    gulp: int,
    overlap: int,
    max_width: int,
    groups: list[tuple[int, int, int]],
    *,
    stored_per_sample: int,
    subbands: bool,
    on_gpu: bool,
) -> MemoryBound:
    """:class:`MemoryBound` for blocks of ``gulp + overlap`` samples, boxcars to ``max_width`` samples and
    trial ``groups`` of ``(scrunch factor, trials, largest scrunched delay)``.

    ``stored_per_sample``: bytes per sample as the stream moves them to a GPU
    (:attr:`cudalab.radio.io.stream.BlockStream.bytes_per_sample`).
    """
    c = header.nchans
    block_samples = gulp + overlap
    sizes = [(s, n, outputs_per_block(block_samples, gulp, s, m, max_width)) for s, n, m in groups]
    block = 4 * c * block_samples
    stored = stored_per_sample * block_samples if on_gpu else block
    group = max((4 * n * nout for _, n, nout in sizes), default=0)
    chunk = min(group, SEARCH_CHUNK_BYTES + max((4 * nout for _, _, nout in sizes), default=0))
    scrunched = max((block // s for s, _, _ in sizes if s > 1), default=0)
    return MemoryBound(
        block_samples=block_samples,
        stored=stored,
        block=block,
        scrunched=scrunched,
        series=group if subbands else chunk,
        search=8 * chunk,
        subband=SUBBAND_BYTES if subbands else 0,
        pad=block if subbands else 0,
        clean=3 * 4 * min(c, CHANNEL_CHUNK) * block_samples,
        on_gpu=on_gpu,
    )


def block_geometry(
    plan: DedispersionPlan,
    gulp_samples: int,
    max_width_s: float,
    tsamp_s: float,
    group_delays: list[tuple[int, int]],
) -> tuple[int, int]:
    """``(gulp, overlap)`` in native samples, for trial groups of ``(scrunch factor, largest delay)``.

    Blocks overlap by the largest delay any group applies (rounded or two-stage delays may pass the
    plan's own), the widest boxcar and one scrunched sample. The gulp is at least twice that, so the
    overlap (read and cleaned twice, never searched twice) costs at most half again, and a multiple
    of every scrunch factor, so blocks start on whole scrunched samples.
    """
    max_s = int(plan.scrunch.max())
    overlap = (
        max([plan.max_delay] + [s * m for s, m in group_delays])
        + boxcar_widths(max_width_s, tsamp_s)[-1]
        + max_s
    )
    gulp = max(gulp_samples, 2 * overlap)
    return -(-gulp // max_s) * max_s, overlap
