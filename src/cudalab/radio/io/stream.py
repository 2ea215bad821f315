"""Blocks of an observation on the compute device, read ahead and copied while the previous one computes.

A search is a loop over blocks of ``gulp + overlap`` samples that advance by ``gulp``: each repeats the
last ``overlap`` samples of the previous one's extent, so a stage that needs that much look-ahead
(dedispersion: the largest delay) sees every output sample exactly once, in ``block.valid`` outputs
per block. A block that would run past the file's end reaches back instead, so that it is as long as
the others: its first ``head`` samples were another block's new ones and only give context (a row's
baseline and noise measured on a sliver at the file's end would be wild). This module is the one way
blocks are made. Done naively each block is read from the file, converted to float32 on the host, copied to the GPU
and only then computed, and the GPU idles through the first three. :class:`BlockStream` overlaps them:

- a reader thread reads block ``k + 2`` from the file (the memory map's pages are touched in the
  copy, which releases the GIL) into one of two page-locked (pinned) host buffers;
- the host-to-device copy of block ``k + 1`` runs on a side CUDA stream, asynchronously;
- block ``k`` computes on the default stream, which waits on that copy's event only when it needs it.

SIGPROC data travel as stored (8-bit samples are a quarter of float32's bytes) and become float32
total intensity on the device (:func:`raw_to_intensity`); other formats travel as float32.

Memory: host, two pinned buffers of one block each in the file's sample type (plus, for sub-byte
files, one unpacked block in the reader); device, the float32 form of the current block and the
stored form of the next (and, briefly, of the current). On a CPU the same code runs without pinned
memory or streams, and the reader thread still overlaps file reading with compute: three float32
blocks (the one computing, one queued, one being read).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from cudalab.radio.io.observation import Observation

# Sample types that travel to the device as stored, and their torch type there.
_RAW_DTYPES = {
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.int8): torch.int8,
    np.dtype("<i2"): torch.int16,
    np.dtype("<f4"): torch.float32,
}
_POLL_S = 0.1  # how often a waiting thread checks whether the stream was closed


@dataclass(frozen=True, slots=True)
class DeviceBlock:
    """A stretch of data on the compute device.

    Attributes
    ----------
    start
        Index of the first sample in the file.
    data
        Float32 total intensity.  Shape: ``(nchans, nsamples)``.
    valid
        Samples new in this block, from ``head`` on; the rest is the overlap that the next block starts
        with (or the file's end).
    head
        Samples at the start that an earlier block already had as new ones: context only (0 but for a
        block that reaches back from the file's end).
    """

    start: int
    data: torch.Tensor
    valid: int
    head: int = 0


def raw_to_intensity(raw: torch.Tensor) -> torch.Tensor:
    """``(n, nifs, nchans)`` stored samples -> ``(nchans, n)`` float32 total intensity.

    The rule of :meth:`cudalab.radio.io.sigproc.SigprocReader.read`, in torch so it runs on the device:
    two IFs are summed (AA + BB), otherwise the first is kept (Stokes I of four).
    """
    total = raw[:, :2].to(torch.float32).sum(dim=1) if raw.shape[1] == 2 else raw[:, 0].to(torch.float32)
    return total.T.contiguous()


@dataclass(frozen=True, slots=True)
class _Item:
    start: int
    valid: int
    head: int
    array: NDArray[Any]  # a view of a pinned slot (CUDA), or the block itself (CPU)
    raw: bool
    slot: int  # -1: not in a pinned slot


_END = object()


class BlockStream:
    """Iterate ``obs`` in blocks of ``gulp + overlap`` samples advancing by ``gulp``, on ``device``.

    Block ``k`` has new samples ``[k * gulp, k * gulp + gulp)`` (fewer at the file's end) and holds
    ``[k * gulp, k * gulp + gulp + overlap)``, bit for bit as ``obs.read`` gives them, as a
    :class:`DeviceBlock`; one that would run past the end starts earlier instead (at a multiple of
    ``align``, as late as keeps it within ``gulp + overlap``), its first ``head`` samples context only.
    Use it as a context manager (or call :meth:`close`) so the reader thread stops when the loop ends early.
    """

    def __init__(
        self, obs: Observation, gulp: int, overlap: int, device: torch.device, *, align: int = 1
    ) -> None:
        if gulp < 1 or overlap < 0 or align < 1 or gulp % align:
            raise ValueError(
                f"need gulp >= 1 (a multiple of align >= 1) and overlap >= 0, not {gulp}, {overlap}, {align}"
            )
        self.obs = obs
        self.gulp = gulp
        self.overlap = overlap
        self.align = align
        self.device = device
        reader = obs.reader
        dtype = getattr(reader, "raw_dtype", None)
        self._cuda = device.type == "cuda"
        # raw samples to a GPU; on a CPU the reader thread converts (the conversion overlaps compute too)
        self.raw = self._cuda and hasattr(reader, "read_raw") and dtype in _RAW_DTYPES
        self._ready: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._free: queue.Queue[tuple[int, torch.cuda.Event | None]] = queue.Queue()
        self._pinned: list[torch.Tensor] = []
        self._copy_stream: torch.cuda.Stream | None = None
        h = obs.header
        #: bytes per sample as moved to the device: as stored, or float32 total intensity
        self.bytes_per_sample = h.nchans * (h.npol_stored * np.dtype(dtype).itemsize if self.raw else 4)
        if self._cuda:
            nbytes = self.bytes_per_sample * min(gulp + overlap, max(h.nsamples, 1))
            self._pinned = [torch.empty(nbytes, dtype=torch.uint8, pin_memory=True) for _ in range(2)]
            for slot in range(len(self._pinned)):
                self._free.put((slot, None))
            self._copy_stream = torch.cuda.Stream(device=device)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read_ahead, name="cudalab-block-reader", daemon=True)
        self._started = False

    @property
    def pinned_bytes(self) -> int:
        """Page-locked host memory held (0 on a CPU)."""
        return sum(p.numel() for p in self._pinned)

    # -------------------------------------------------------------------- reader thread

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._ready.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _read_ahead(self) -> None:
        try:
            total = self.obs.header.nsamples
            count = self.gulp + self.overlap
            for new in range(0, total, self.gulp):
                if self._stop.is_set():
                    return
                start = new
                if new + count > total:  # reach back from the file's end: as long as the others
                    start = min(new, -(-max(0, total - count) // self.align) * self.align)
                array = (
                    self.obs.reader.read_raw(start, count)  # type: ignore[attr-defined]
                    if self.raw
                    else self.obs.read(start, min(count, total - start))
                )
                slot = -1
                if self._cuda:
                    slot = self._take_slot()
                    if slot < 0:
                        return
                    dst = self._pinned[slot].numpy()[: array.nbytes].view(array.dtype).reshape(array.shape)
                    np.copyto(dst, array)  # touches the file's pages; releases the GIL
                    array = dst
                if not self._put(
                    _Item(start, min(self.gulp, total - new), new - start, array, self.raw, slot)
                ):
                    return
            self._put(_END)
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(exc)

    def _take_slot(self) -> int:
        while not self._stop.is_set():
            try:
                slot, copied = self._free.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if copied is not None:
                copied.synchronize()  # the slot's previous block has left for the device
            return slot
        return -1

    # -------------------------------------------------------------------- consumer

    def _issue(self, item: _Item) -> tuple[_Item, torch.Tensor]:
        """Start moving ``item`` to the device: (the item, its bytes there, usable on the current stream)."""
        assert self._copy_stream is not None
        compute = torch.cuda.current_stream(self.device)
        nbytes = item.array.nbytes
        with torch.cuda.stream(self._copy_stream):
            moved = self._pinned[item.slot][:nbytes].to(self.device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(self._copy_stream)
        self._free.put((item.slot, copied))
        compute.wait_event(copied)
        moved.record_stream(compute)  # allocated on the side stream, used on this one
        return item, moved

    @staticmethod
    def _materialise(item: _Item, moved: torch.Tensor) -> DeviceBlock:
        """The float32 block, converted only now: the next block waits on the device as stored."""
        typed = moved.view(_RAW_DTYPES[item.array.dtype] if item.raw else torch.float32)
        shaped = typed.view(item.array.shape)
        data = raw_to_intensity(shaped) if item.raw else shaped
        return DeviceBlock(item.start, data, item.valid, item.head)

    def _next_item(self, block: bool) -> _Item | object | None:
        """The next item, ``_END``, or None when ``block`` is False and none is ready yet."""
        try:
            got = self._ready.get(timeout=None) if block else self._ready.get_nowait()
        except queue.Empty:
            return None
        if isinstance(got, BaseException):
            raise got
        return got

    def __iter__(self) -> Iterator[DeviceBlock]:
        if self._started:
            raise RuntimeError("a BlockStream is iterated once")
        self._started = True
        self._thread.start()
        try:
            if not self._cuda:  # the reader thread already overlaps reading with compute
                while (got := self._next_item(block=True)) is not _END:
                    assert isinstance(got, _Item)
                    yield DeviceBlock(got.start, torch.from_numpy(got.array), got.valid, got.head)
                return
            pending: tuple[_Item, torch.Tensor] | None = None
            ended = False
            while True:
                if pending is None:
                    if ended:
                        return
                    got = self._next_item(block=True)
                    if got is _END:
                        return
                    assert isinstance(got, _Item)
                    pending = self._issue(got)
                current, pending = pending, None
                if not ended:  # start the next block's copy now, if it has been read, so it overlaps
                    got = self._next_item(block=False)
                    if got is _END:
                        ended = True
                    elif isinstance(got, _Item):
                        pending = self._issue(got)
                block = self._materialise(*current)
                del current  # the stored form: freed once converted
                yield block
        finally:
            self.close()

    def close(self) -> None:
        """Stop the reader thread (idempotent)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> BlockStream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
