"""Run the cudalab CLI, but die by SIGKILL halfway through writing the N-th checkpoint file.

    python kill_mid_write.py N train graph ...

What a power cut or an OOM kill does to a writer: the file on disk holds half the bytes.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from typing import Any

import torch

target = int(sys.argv[1])
calls = 0
real_save = torch.save


def torn_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
    global calls
    calls += 1
    if calls < target:
        return real_save(obj, f, *args, **kwargs)
    buf = io.BytesIO()
    real_save(obj, buf)
    data = buf.getvalue()
    f.write(data[: len(data) // 2])
    f.flush()
    os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)
    return None


torch.save = torn_save
sys.argv = ["cudalab", *sys.argv[2:]]
from cudalab.cli import run  # noqa: E402

run()
