"""Torch's CPU thread count, fitted to the cores other processes leave free.

Torch parallelises each CPU operation over its intra-op threads (OpenMP), and each operation ends at a
barrier where the threads wait for the slowest. With the cores to itself that is a gain; with another
process on them, one of its threads is descheduled for a whole time slice at every barrier while the
others spin, and a search of thousands of small operations slowed 5-20x (issue 22: a 60 s, 64-channel
search took 1.1 s quiet and 3.7-24.7 s beside two busy processes on 2 cores with 2 threads; 2.2-2.3 s
with 1 thread). PRESTO, single-threaded, slowed by 5-25 %.

:class:`CpuShare` measures, between calls, how much of the cores this process may use was taken by
others (Linux's ``/proc/stat`` per CPU, less this process's own CPU time) and sets the thread count to
the cores left free (at least one, at most what torch had). Elsewhere it changes nothing. It does
not see a cgroup CPU quota (a container limited to fewer cores than its affinity mask shows):
``OMP_NUM_THREADS`` or ``torch.set_num_threads`` set the ceiling there.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from types import TracebackType

import torch

#: Shorter intervals between measurements are not judged (their jiffy counts are too coarse).
MIN_INTERVAL_S = 0.1

#: A core counts as free when at least this fraction of it is (``floor(free + 1 - FREE_FRACTION)``).
FREE_FRACTION = 0.7


def _cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def busy_seconds(cpus: list[int], stat: Path = Path("/proc/stat")) -> float | None:
    """CPU seconds the CPUs ``cpus`` have spent busy (not idle, not waiting on I/O) since boot, from
    ``/proc/stat``; None where it cannot be read."""
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return None
    want = {f"cpu{c}" for c in cpus}
    ticks = 0
    for line in lines:
        parts = line.split()
        if parts and parts[0] in want:
            v = [int(x) for x in parts[1:9]]  # user nice system idle iowait irq softirq steal
            ticks += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    return ticks / os.sysconf("SC_CLK_TCK")


class CpuShare:
    """Sets torch's intra-op threads to the cores others leave free, at each :meth:`update`.

    Use as a context manager: the thread count in force before is restored on exit.
    ``threads`` is the count now; ``history`` the counts chosen, in order.
    """

    def __init__(self, max_threads: int | None = None) -> None:
        self.cpus = _cpus()
        self.max_threads = max_threads or torch.get_num_threads()
        self.threads = self.max_threads
        self.history: list[int] = []
        self._before = torch.get_num_threads()
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float | None]:
        return time.monotonic(), time.process_time(), busy_seconds(self.cpus)

    def others(self) -> float | None:
        """Cores used by other processes since the last measurement (None: not measurable, or too
        soon); starts a new interval when it answers."""
        now = self._sample()
        wall, own, busy = (
            a - b if a is not None and b is not None else None for a, b in zip(now, self._last, strict=True)
        )
        if busy is None or wall is None or wall < MIN_INTERVAL_S:
            return None
        self._last = now
        assert own is not None
        return max(0.0, (busy - own) / wall)

    def update(self) -> int:
        """Measure and set the thread count; returns it."""
        others = self.others()
        if others is not None:
            free = len(self.cpus) - others
            n = max(1, min(self.max_threads, math.floor(free + 1 - FREE_FRACTION)))
            if n != torch.get_num_threads():
                torch.set_num_threads(n)
            self.threads = n
        self.history.append(self.threads)
        return self.threads

    def probe(self, seconds: float = MIN_INTERVAL_S) -> int:
        """Measure over at least ``seconds`` since the last measurement (or since this object was
        made), waiting for what is left of them, then update; at once when there is no choice to make
        (one thread at most). What this process did in the interval (opening a file, planning) is
        its own CPU time, which the measurement leaves out, so only the remainder is waited."""
        if self.max_threads <= 1:
            return self.update()
        wait = seconds - (time.monotonic() - self._last[0])
        if wait > 0:
            time.sleep(wait)
        return self.update()

    def __enter__(self) -> CpuShare:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        torch.set_num_threads(self._before)
