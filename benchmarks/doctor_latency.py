"""How long `cudalab doctor` takes, end to end, against the floor of starting Python with torch.

Targets (issue 2): under 1 s on a CPU-only machine, under 3 s with GPUs, smoke tests included.
Prints one JSON line per measurement (the figure, the references measured in the same run, the
ratio), then a short table.

    python benchmarks/doctor_latency.py [--repeats N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from cudalab.env.probe import collect, gpu_evidence


def wall(cmd: list[str], repeats: int) -> float:
    """Median wall time of running ``cmd`` to completion, in seconds (after one untimed warm-up run)."""
    subprocess.run(cmd, capture_output=True, check=False)  # warm the page cache
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="1 repeat")
    args = ap.parse_args()
    repeats = 1 if args.quick else args.repeats
    gpu = gpu_evidence(collect(import_torch=False).probes)
    target = 3.0 if gpu else 1.0
    device = "gpu" if gpu else "cpu-only"

    doctor = [sys.executable, "-m", "cudalab", "doctor", "--json"]
    rows = [
        ("cudalab doctor --json", wall(doctor, repeats)),
        ("python -c pass", wall([sys.executable, "-c", "pass"], repeats)),
        ("python -c 'import torch'", wall([sys.executable, "-c", "import torch"], repeats)),
    ]
    if not gpu:
        rows.append(("cudalab doctor --json --import-torch", wall([*doctor, "--import-torch"], repeats)))
    doctor_s = rows[0][1]
    torch_s = rows[2][1]
    record = {
        "benchmark": "doctor_latency",
        "device": device,
        "doctor_s": round(doctor_s, 3),
        "target_s": target,
        "meets_target": doctor_s < target,
        "reference": "python -c 'import torch'",
        "reference_s": round(torch_s, 3),
        "ratio_to_reference": round(doctor_s / torch_s, 3),
        "repeats": repeats,
    }
    print(json.dumps(record))
    for name, s in rows:
        print(json.dumps({"benchmark": "doctor_latency", "command": name, "median_s": round(s, 3)}))
    print(f"\n{'command':<42} {'median':>8}")
    for name, s in rows:
        print(f"{name:<42} {s:>7.3f}s")
    verdict = "meets" if doctor_s < target else "MISSES"
    print(
        f"doctor {doctor_s:.3f} s on a {device} machine {verdict} the {target:.0f} s target "
        f"({doctor_s / torch_s:.2f}x a bare 'import torch')"
    )


if __name__ == "__main__":
    main()
