"""The steps of the GPU acceptance run (``gpu_check.py``), in the order they run.

A benchmark joins the acceptance by adding a :class:`Step` to :data:`STEPS`; the driver's logic never
changes. Each step declares what it needs (Python modules, folders of the real data), how long it
takes on an H100 (its estimate, from which the driver plans a budget) and the most it may take (its
cap, after which it is stopped), and which fields of the JSON records it prints make its line of the
table. Commands are argument lists; ``{python}`` and ``{data}`` stand for the interpreter and the
real-data folder.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    """One command of the acceptance run.

    Attributes
    ----------
    name
        Short id: the log is ``logs/<name>.log``.
    what
        One line: what it shows.
    argv
        The command, with ``{python}`` and ``{data}`` placeholders.
    estimate_s
        Expected seconds on an H100 (machine warm, data in the page cache where it is read twice).
    cap_s
        The step is stopped (its process group killed) after this many seconds.
    needs
        Python modules it imports; a step whose modules are missing is skipped, saying which.
    data
        Folders of the real data (``../shared/data``) it reads; without them it is skipped.
    shown
        Record fields (JSON lines it prints) shown in the table; ``pytest`` reads pytest's summary.
    """

    name: str
    what: str
    argv: tuple[str, ...]
    estimate_s: float
    cap_s: float
    needs: tuple[str, ...] = ()
    data: tuple[str, ...] = ()
    shown: tuple[str, ...] = ()


CORE = ("torch", "numpy", "typer", "rich", "tomli_w")

STEPS: list[Step] = [
    Step(
        name="pytest-gpu",
        what="every gpu-marked test: compiled Triton kernels against the torch references, engine bf16, every GNN model",
        argv=("{python}", "-m", "pytest", "-m", "gpu", "-q", "-rfE", "-p", "no:cacheprovider"),
        estimate_s=150,
        cap_s=200,
        needs=(*CORE, "pytest", "triton", "scipy", "h5py", "astropy", "torch_geometric"),
        shown=("pytest",),  # the tests that read real data skip (and are counted) without it
    ),
    Step(
        name="radio-fast",
        what="search speed on the FAST-like beam (4096 ch, 49.152 us, DM 0-3000, 30 s): every method, recall",
        argv=("{python}", "benchmarks/radio_search.py", "--case", "fast", "--duration", "30"),
        estimate_s=110,
        cap_s=240,
        needs=(*CORE, "triton", "scipy", "h5py", "astropy"),
        shown=("method", "realtime_factor_search", "realtime_factor_dedisp", "recall", "peak_device_gb"),
    ),
    Step(
        name="radio-classifier",
        what="the candidate classifiers' scoring rate from two 256 x 256 planes, fp32 and bf16, against 20,000/s",
        argv=("{python}", "benchmarks/radio_classifier.py", "--throughput"),
        estimate_s=10,  # imports and CUDA start-up; the scoring itself is about 2 s
        cap_s=40,
        needs=(*CORE, "scipy", "h5py", "torchvision"),
        shown=("model", "precision", "candidates_per_s_256x256", "ratio"),
    ),
    Step(
        name="doctor",
        what="cudalab doctor's wall time (smoke tests included) against a bare `import torch`",
        argv=("{python}", "benchmarks/doctor_latency.py", "--repeats", "3"),
        estimate_s=25,
        cap_s=60,
        needs=CORE,
        shown=("case", "doctor_s", "reference_s", "ratio_to_reference"),
    ),
    Step(
        name="bench",
        what="cudalab bench against the same figures timed by hand in the same run",
        argv=("{python}", "benchmarks/bench_vs_hand.py"),
        estimate_s=30,
        cap_s=90,
        needs=CORE,
        shown=("figure", "cudalab_bench", "by_hand", "ratio"),
    ),
    Step(
        name="gnn-table",
        what="the GNN table, one seed per row: accuracy and epoch time of each preset on the GPU",
        argv=("{python}", "benchmarks/graph_table.py", "--data-root", "{data}/planetoid", "--seeds", "1"),
        estimate_s=60,
        cap_s=120,
        needs=(*CORE, "torch_geometric", "scipy"),
        data=("planetoid",),
        shown=("config", "test_acc_mean", "target", "epoch_time_ms"),
    ),
    Step(
        name="engine-overhead",
        what="the engine's step time against a bare loop on the same model and precision",
        argv=("{python}", "benchmarks/engine_overhead.py", "--data-root", "{data}/planetoid"),
        estimate_s=25,
        cap_s=60,
        needs=(*CORE, "torch_geometric", "scipy"),
        data=("planetoid",),
        shown=("precision", "bare_step_ms", "engine_step_ms", "overhead_pct"),
    ),
    Step(
        name="vision",
        what="CIFAR-10 JPEG: images/s of the engine against a plain torchvision loop (ResNet-18, one epoch), "
        "the fast recipe's time to 90.5 %, ResNet-18 at equal wall time",
        argv=(
            "{python}",
            "benchmarks/vision_train.py",
            "--data",
            "{data}/vision/cifar10-jpeg.tar.gz",
            "--train-images",
            "0",
            "--val-images",
            "0",
            "--epochs",
            "1",
            "--fast-epochs",
            "10",
        ),
        estimate_s=70,
        cap_s=150,
        needs=(*CORE, "torchvision", "PIL", "matplotlib"),
        data=("vision",),
        shown=(
            "benchmark",
            "images_per_s",
            "reference_images_per_s",
            "val_acc",
            "time_to_target_s",
            "train_s",
        ),
    ),
    # later workloads join here: serving under load (benchmarks/serve_load.py --format torch-export
    # --device cuda), protein MFU (benchmarks/protein_mlm.py --shapes 35M,150M --length 1024)
]
