"""``cudalab radio ...``: info, simulate, search, demo."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from cudalab._console import command_group
from cudalab._console import stdout_console as _console
from cudalab.env.device import DeviceChoice
from cudalab.errors import CudalabError, ExitCode
from cudalab.runs.cli import ConfigOption, PrintConfigOption, RootOption, SetOption, print_config_toml

app = command_group("radio", "Search radio data for fast radio bursts and pulsar single pulses.")


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f} %"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


class _Bars:
    """Adapts the pipeline's ``progress(stage, done, total)`` callback to rich bars, one per stage."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total)
        self.progress.update(self.tasks[stage], completed=done, total=total)


def _value_error(exc: ValueError) -> CudalabError:
    return CudalabError(str(exc))


@app.command()
def info(
    path: Annotated[Path, typer.Argument(help="SIGPROC (.fil/.tim) or PSRFITS search-mode file.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the header as JSON.")] = False,
) -> None:
    """Print a file's header as the search sees it."""
    from cudalab.radio.io.observation import open_observation

    h = open_observation(path).header
    summary = h.summary() | {"extra": {k: v for k, v in h.extra.items() if isinstance(v, (str, int, float))}}
    if json_out:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        raise typer.Exit(ExitCode.OK)
    table = Table(title=str(path), show_header=False)
    for k, v in summary.items():
        if k != "extra":
            table.add_row(k, str(v))
    _console().print(table)
    raise typer.Exit(ExitCode.OK)


@app.command()
def simulate(
    out: Annotated[
        Path, typer.Argument(help="SIGPROC file to write; the truth goes to OUT.truth.json / .csv.")
    ],
    preset: Annotated[str, typer.Option(help="demo: bursts, a pulsar and RFI; noise: noise only.")] = "demo",
    bursts: Annotated[
        int, typer.Option(help="Add this many random bursts (DM, width, S/N from the ranges).")
    ] = 0,
    duration_s: Annotated[
        float | None, typer.Option("--duration", help="Seconds (preset's by default).")
    ] = None,
    nchans: Annotated[int | None, typer.Option(help="Channels (preset's by default).")] = None,
    dm_max: Annotated[float, typer.Option(help="Largest DM of random bursts.")] = 1000.0,
    snr_min: Annotated[float, typer.Option(help="Smallest S/N of random bursts.")] = 8.0,
    snr_max: Annotated[float, typer.Option(help="Largest S/N of random bursts.")] = 30.0,
    background: Annotated[
        Path | None, typer.Option(help="Real noise to inject into (tiled as needed).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Everything random derives from it.")] = 7,
) -> None:
    """Write a synthetic observation with a truth table (deterministic for a seed)."""
    import numpy as np

    from cudalab.radio.simulate import SimConfig, demo_config, planned_header, random_bursts
    from cudalab.radio.simulate import simulate as run_sim

    if preset not in ("demo", "noise"):
        raise CudalabError(f"--preset must be demo or noise, not {preset!r}")
    try:
        cfg = demo_config(seed) if preset == "demo" else SimConfig(seed=seed)
        cfg = replace(cfg, seed=seed, background=str(background) if background else None)
        if duration_s is not None:
            cfg = replace(cfg, duration_s=duration_s)
        if nchans is not None:
            cfg = cfg.with_nchans(nchans)
        if preset == "noise":
            cfg = replace(cfg, bursts=(), pulsars=(), rfi=())
        if bursts:
            hdr = planned_header(cfg)
            extra = random_bursts(
                bursts,
                np.random.default_rng([seed, 99]),
                header=hdr,
                dm_range=(10.0, dm_max),
                width_range_s=(0.3e-3, 10e-3),
                snr_range=(snr_min, snr_max),
                k_dm=cfg.k_dm,
            )
            cfg = replace(cfg, bursts=cfg.bursts + tuple(extra))
    except ValueError as exc:
        raise _value_error(exc) from None
    console = _console()
    with _progress(console) as progress:
        task = progress.add_task("simulate", total=1)
        truth = run_sim(cfg, out, progress=lambda d, t: progress.update(task, completed=d, total=t))
    h = truth["header"]
    console.print(
        f"wrote {out}: {h['nchans']} channels x {h['nsamples']} samples ({h['duration_s']:.2f} s), "
        f"{len(truth['pulses'])} pulses, {len(truth['rfi'])} RFI events; truth in {out.with_suffix('.truth.json')}"
    )
    raise typer.Exit(ExitCode.OK)


def _search_flags(
    *,
    dm_min: float | None = None,
    dm_max: str | None = None,
    snr: float | None = None,
    max_width_ms: float | None = None,
    device: DeviceChoice | None = None,
    cutouts: int | None = None,
    top: int | None = None,
    zero_dm: bool | None = None,
    gulp: int | None = None,
    subbands: int | None = None,
    kernel: str | None = None,
    classify: bool | None = None,
    classifier: Path | None = None,
    min_prob: str | None = None,
) -> dict[str, Any]:
    """The flags given, as the SearchConfig fields they set (a flag not given sets nothing)."""
    given: dict[str, Any] = {
        "dm_min": dm_min,
        "dm_max": None if dm_max in (None, "auto") else dm_max,
        "snr_threshold": snr,
        "max_width_s": None if max_width_ms is None else max_width_ms / 1e3,
        "device": None if device is None else device.value,
        "cutouts": cutouts,
        "report_top": top,
        "gulp": gulp,
        "subbands": subbands,
        "kernel": kernel,
    }
    flags = {k: v for k, v in given.items() if v is not None}
    if classify is not None:
        flags["classify"] = "on" if classify else "off"
    if classifier is not None:
        flags["classifier"] = str(classifier)
    if min_prob is not None:
        flags["min_prob"] = -1.0 if min_prob == "auto" else min_prob
    if dm_max == "auto":
        flags["dm_max_auto"] = True
    if zero_dm is not None:
        flags["rfi"] = {"zero_dm": zero_dm}
    return flags


def _resolve_search_config(config: Path | None, flags: dict[str, Any], overrides: list[str] | None) -> Any:
    from cudalab.radio.pipeline.config import default_config
    from cudalab.runs.config import resolve

    try:
        return resolve(default_config(), config_file=config, flags=flags, overrides=overrides)
    except ValueError as exc:
        raise CudalabError(str(exc) if config else f"config: {exc}") from None


def _print_candidates(console: Console, result: Any, out: Path, truth: dict[str, Any] | None = None) -> None:
    from cudalab.radio.evaluate import match_one

    h = result.header
    console.print(
        f"[bold]{Path(h.path).name}[/]: {h.nchans} ch, {h.duration_s:.2f} s; {len(result.plan.dms)} DM trials to "
        f"{result.plan.dms[-1]:.0f}; {len(result.masked_channels)} channels masked; "
        + (
            f"{result.nonfinite_samples} NaN/Inf samples set to their channel's median; "
            if result.nonfinite_samples
            else ""
        )
        + f"{result.device} ({result.kernel}), "
        f"{result.seconds:.1f} s ({result.realtime_factor:.2f}x real time)"
    )
    for warning in result.warnings():
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    u = result.unsearched()
    lost = [r for r in u["ranges"] if r["unsearched_s"][1] > 0]
    if lost:
        worst = lost[-1]
        console.print(
            f"unsearched: the last {lost[0]['unsearched_s'][0]:.3g}-{worst['unsearched_s'][1]:.3g} s of the file at "
            f"DM {lost[0]['dm'][0]:.4g}-{worst['dm'][1]:.4g} (each trial's sweep past the end; per DM range in "
            "search.json)",
            highlight=False,
        )
    cls = result.classification
    if cls is not None:
        console.print(
            f"classifier {cls['model']}: {cls['scored']} candidates scored in {cls['seconds']:.1f} s; "
            f"{cls['removed']} below P(real) {cls['min_prob']:g} removed (operating threshold {cls['threshold']:.3g})",
            highlight=False,
        )
    table = Table(title=f"{len(result.candidates)} candidates (times at {h.fmax_mhz:.1f} MHz)")
    for col in (
        "#",
        *(("P(real)",) if cls is not None else ()),
        "S/N",
        "DM",
        "time (s)",
        "width (ms)",
        "members",
    ):
        table.add_column(col, justify="right")
    if truth is not None:
        table.add_column("injected", justify="left")
    for i, c in enumerate(result.candidates[:15]):
        row = [
            str(i),
            *((f"{c.prob:.3f}",) if cls is not None else ()),
            f"{c.snr:.1f}",
            f"{c.dm:.1f}",
            f"{c.time_s:.4f}",
            f"{c.width_s * 1e3:.2f}",
            str(c.members),
        ]
        if truth is not None:
            m = match_one(c, truth)
            row.append(m or "")
        table.add_row(*row)
    console.print(table)
    console.print(f"report: {out / 'report.html'}   candidates: {out / 'candidates.csv'}")


@app.command()
def search(
    path: Annotated[Path, typer.Argument(help="SIGPROC or PSRFITS search-mode file.")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="The run folder (replaced if it holds a previous search); default RUNS/radio-search/ID.",
        ),
    ] = None,
    dm_min: Annotated[float | None, typer.Option(help="Smallest DM, pc cm^-3 (dm_min; default 0).")] = None,
    dm_max: Annotated[
        str | None,
        typer.Option(
            help="Largest DM, pc cm^-3 (dm_max; default 1000), or auto: the largest the file supports."
        ),
    ] = None,
    snr: Annotated[
        float | None, typer.Option(help="Detection threshold, boxcar S/N (snr_threshold; default 6).")
    ] = None,
    max_width_ms: Annotated[
        float | None, typer.Option(help="Widest boxcar, ms (max_width_s; default 50 ms).")
    ] = None,
    device: Annotated[DeviceChoice | None, typer.Option(help="auto (GPU when usable), cuda or cpu.")] = None,
    cutouts: Annotated[
        int | None, typer.Option(help="FETCH cutouts for the brightest N (default 20).")
    ] = None,
    top: Annotated[
        int | None, typer.Option(help="Candidates plotted in the report (report_top; default 8).")
    ] = None,
    zero_dm: Annotated[
        bool | None,
        typer.Option(
            "--zero-dm/--no-zero-dm",
            help="Subtract the DM-0 series from trials of sweep >= rfi.zero_dm_min_sweep_s (off by default).",
        ),
    ] = None,
    gulp: Annotated[int | None, typer.Option(help="Samples per block (memory bound; default 32768).")] = None,
    subbands: Annotated[
        int | None,
        typer.Option(
            help="0: direct dedispersion; N: two stages with N sub-bands (fewer adds); "
            "-1 (default): 32 on a CPU for >= 256 channels, else direct."
        ),
    ] = None,
    kernel: Annotated[
        str | None,
        typer.Option(help="Kernels: auto (Triton on a GPU, torch on a CPU), triton or torch."),
    ] = None,
    classify: Annotated[
        bool | None,
        typer.Option(
            "--classify/--no-classify",
            help="Score every candidate with the CNN classifier and rank by it (default: on when a "
            "classifier is at hand, as the shipped one is).",
        ),
    ] = None,
    classifier: Annotated[
        Path | None,
        typer.Option(help="A classifier file (radio export-classifier); default: the shipped one."),
    ] = None,
    min_prob: Annotated[
        str | None,
        typer.Option(
            help="Keep candidates of P(real) >= this (0-1), or auto: the classifier's operating threshold."
        ),
    ] = None,
    truth: Annotated[Path | None, typer.Option(help="A simulator truth table: mark injected pulses.")] = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
    print_config: PrintConfigOption = False,
    runs: RootOption = Path("runs"),
    run_id: Annotated[
        str | None,
        typer.Option("--run-id", help="Name the run folder RUNS/radio-search/ID (instead of --out)."),
    ] = None,
) -> None:
    """Search a file; the run folder holds candidates.csv (and .cand), cands/*.h5 (FETCH), report.html,
    config.toml and manifest.json."""
    flags = _search_flags(
        dm_min=dm_min, dm_max=dm_max, snr=snr, max_width_ms=max_width_ms, device=device, cutouts=cutouts,
        top=top, zero_dm=zero_dm, gulp=gulp, subbands=subbands, kernel=kernel, classify=classify,
        classifier=classifier, min_prob=min_prob,
    )  # fmt: skip
    cfg = _resolve_search_config(config, flags, overrides)
    if print_config:
        print_config_toml(cfg, header="cudalab radio search: resolved config")
        raise typer.Exit(ExitCode.OK)
    from cudalab.radio.io.observation import open_observation
    from cudalab.radio.pipeline.outputs import KIND, check_out_dir, run_search
    from cudalab.radio.simulate import load_truth
    from cudalab.runs.rundir import check_root, check_run_id, new_run_id

    if out is not None and run_id is not None:
        raise CudalabError("--out and --run-id name the same folder: give one")
    try:
        folder = out if out is not None else check_root(runs) / KIND / check_run_id(run_id or new_run_id(cfg))
    except ValueError as exc:
        raise CudalabError(str(exc)) from None
    check_out_dir(folder)  # before any work: a search may take hours
    open_observation(path)  # the file's faults too
    truth_table = None
    if truth is not None:
        try:
            truth_table = load_truth(truth)
        except (OSError, ValueError) as exc:
            raise CudalabError(f"{truth}: not a truth table ({exc})") from None
    console = _console()
    with _progress(console) as progress:
        result = run_search(path, folder, cfg, progress=_Bars(progress), truth=truth_table)
    _print_candidates(console, result, folder, truth_table)
    raise typer.Exit(ExitCode.OK)


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the simulated file and the search.")
    ] = Path("demo-out"),
    device: Annotated[
        DeviceChoice, typer.Option(help="auto (GPU when usable), cuda or cpu.")
    ] = DeviceChoice.auto,
    seed: Annotated[int, typer.Option(help="Simulation seed.")] = 7,
    classify: Annotated[
        bool | None,
        typer.Option(
            "--classify/--no-classify",
            help="Score the candidates with the shipped classifier (default: on when shipped).",
        ),
    ] = None,
) -> None:
    """Simulate a realistic observation (bursts at several DMs and widths, a pulsar, RFI), search it, report."""
    from cudalab.radio.evaluate import classifier_effect, recovery
    from cudalab.radio.pipeline.outputs import check_out_dir, run_search
    from cudalab.radio.simulate import demo_config
    from cudalab.radio.simulate import simulate as run_sim

    console = _console()
    data = out / "demo.fil"
    cfg = _resolve_search_config(None, _search_flags(device=device, classify=classify), None)
    check_out_dir(out / "search")
    with _progress(console) as progress:
        task = progress.add_task("simulate", total=1)
        truth = run_sim(
            demo_config(seed), data, progress=lambda d, t: progress.update(task, completed=d, total=t)
        )
        result = run_search(data, out / "search", cfg, progress=_Bars(progress), truth=truth)
    _print_candidates(console, result, out / "search", truth)
    rec = recovery(result.candidates, truth, snr_min=10.0)
    console.print(
        f"injected bursts of S/N >= 10 recovered: {rec['recovered']}/{rec['injected']}; "
        f"candidates not matching an injected pulse at DM > 5: {rec['unmatched_dispersed']}"
    )
    if result.classification is not None and result.scored is not None:
        fx = classifier_effect(result.scored, truth, result.classification["threshold"])
        b, o = fx["burst"], fx["other"]
        console.print(
            f"classifier at its threshold {fx['threshold']:.3g}: keeps {b['kept']}/{b['found']} bursts found and "
            f"{fx['pulsar']['kept']}/{fx['pulsar']['found']} pulsar pulses, removes {o['removed']}/{o['candidates']} "
            "candidates matching no injected pulse (the report ranks by it; --min-prob auto drops them)"
        )
    raise typer.Exit(ExitCode.OK if rec["recovered"] == rec["injected"] else ExitCode.PROBLEM)


# --------------------------------------------------------------------------------------------------
# the candidate classifier: its training set, scoring FETCH files, exporting a trained one
# --------------------------------------------------------------------------------------------------


@app.command()
def dataset(
    out: Annotated[
        Path,
        typer.Argument(
            help="Folder to write the set into. A set there of the same recipe is grown (or cut), "
            "its observations kept; one of another recipe is replaced."
        ),
    ],
    observations: Annotated[int, typer.Option(help="Observations to simulate and search.")] = 200,
    seed: Annotated[int, typer.Option(help="Observation i is drawn from (seed, i).")] = 0,
    background: Annotated[
        list[Path] | None,
        typer.Option("--background", help="Real noise to inject into (repeatable); train, val and test."),
    ] = None,
    holdout: Annotated[
        list[Path] | None,
        typer.Option("--holdout", help="Real noise for test observations only (repeatable)."),
    ] = None,
    device: Annotated[DeviceChoice, typer.Option(help="Where the searches run.")] = DeviceChoice.cpu,
    workers: Annotated[
        int,
        typer.Option(help="Processes building observations at once (the set is the same for any number)."),
    ] = 1,
    overrides: SetOption = None,
) -> None:
    """Build a classifier training set: simulate observations, search them, cut out every candidate in
    FETCH's layout and label it by truth matching (reproducible from the seed). A build that is
    stopped resumes when the same command is run again."""
    import time

    from cudalab.radio.classify.dataset import JOURNAL, OWNED, DatasetConfig, build_dataset
    from cudalab.runs.config import resolve
    from cudalab.runs.rundir import check_output_dir

    try:
        cfg = resolve(
            DatasetConfig(),
            flags={
                "observations": observations,
                "seed": seed,
                "backgrounds": tuple(str(p) for p in background or ()),
                "holdout": tuple(str(p) for p in holdout or ()),
                "device": device.value,
            },
            overrides=list(overrides or []),
        )
        check_output_dir(out, owned=OWNED)
    except ValueError as exc:
        raise CudalabError(str(exc)) from None
    from cudalab.radio.io.observation import open_observation

    for f in (*cfg.backgrounds, *cfg.holdout):
        open_observation(f)  # a bad background fails here, in one line
    console = _console()
    started = time.monotonic()
    last = [started]

    def line(done: int, total: int, counts: dict[str, int]) -> None:
        if time.monotonic() - last[0] >= 30 or done == total:
            last[0] = time.monotonic()
            sys.stderr.write(f"dataset: {done}/{total} observations, {sum(counts.values())} candidates, "
                             f"{last[0] - started:.0f} s\n")  # fmt: skip

    try:
        if console.is_terminal:
            with _progress(console) as progress:
                task = progress.add_task("observations", total=cfg.observations)
                meta = build_dataset(
                    cfg,
                    out,
                    lambda d, t, c: progress.update(
                        task, completed=d, description=f"{sum(c.values())} cands"
                    ),
                    workers=workers,
                )
        else:
            meta = build_dataset(cfg, out, line, workers=workers)
    except ValueError as exc:
        raise CudalabError(str(exc)) from None
    except KeyboardInterrupt:
        journal = out.parent / JOURNAL.format(out.name)
        sys.stderr.write(f"dataset: stopped; the observations finished are kept in {journal}: "
                         "the same command resumes the build\n")  # fmt: skip
        raise
    taken = meta["resumed"] + meta["taken"]
    table = Table(
        title=f"{out}: {meta['candidates']} candidates; {meta['built']} observations built in "
        f"{meta['seconds']:.0f} s" + (f", {taken} kept from before" if taken else "")
    )
    kinds = sorted({k for c in meta["counts"].values() for k in c})
    table.add_column("split")
    for k in kinds:
        table.add_column(k, justify="right")
    for split, c in meta["counts"].items():
        table.add_row(split, *(str(c.get(k, 0)) for k in kinds))
    console.print(table)
    raise typer.Exit(ExitCode.OK)


def _h5_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(p.glob("*.h5"))
            if not found:
                raise CudalabError(f"{p}: no .h5 files in this folder")
            files += found
        elif not p.exists():
            raise CudalabError(f"{p}: no such file")
        else:
            files.append(p)
    return files


@app.command()
def classify(
    files: Annotated[
        list[Path], typer.Argument(help="FETCH h5 cutouts (ours, your_candmaker's), or folders of them.")
    ],
    classifier: Annotated[
        Path | None,
        typer.Option(help="A classifier file (radio export-classifier); default: the shipped one."),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write file,prob,... as CSV here.")] = None,
    device: Annotated[
        DeviceChoice, typer.Option(help="auto (GPU when usable), cuda or cpu.")
    ] = DeviceChoice.auto,
    batch: Annotated[int, typer.Option(help="Candidates scored at once.")] = 256,
) -> None:
    """Score FETCH candidate files: the probability that each is a real dispersed pulse."""
    import csv
    import io

    from cudalab._io import atomic_write_text
    from cudalab.env.device import resolve_device
    from cudalab.radio.classify.score import load_classifier

    if batch < 1:
        raise CudalabError(f"--batch must be >= 1, not {batch}")
    paths = _h5_files(files)
    try:
        dev, _ = resolve_device(device.value)
        clf = load_classifier(classifier, dev)
        probs, attrs = clf.score_files(paths, batch)  # nothing is written before every file is read
    except ValueError as exc:
        raise CudalabError(str(exc)) from None
    rows: list[dict[str, Any]] = [
        {"file": str(p), "prob": float(pr), "real": int(pr >= clf.threshold), "dm": a.get("dm"), "snr": a.get("snr"),
         "tcand": a.get("tcand"), "label": a.get("label")}
        for p, pr, a in zip(paths, probs, attrs, strict=True)
    ]  # fmt: skip
    if out is not None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(out, buf.getvalue())
    console = _console()
    table = Table(title=f"{clf.name}: P(real) of {len(rows)} candidates (threshold {clf.threshold:.3g})")
    for col in ("file", "P(real)", "DM", "S/N", "label"):
        table.add_column(col, justify="left" if col == "file" else "right")
    for r in sorted(rows, key=lambda r: -r["prob"])[:30]:
        table.add_row(
            Path(r["file"]).name,
            f"{r['prob']:.3f}",
            _num(r["dm"]),
            _num(r["snr"]),
            "" if r["label"] is None else str(r["label"]),
        )
    console.print(table)
    console.print(
        f"{sum(r['real'] for r in rows)} of {len(rows)} at or above the threshold"
        + (f"; all in {out}" if out else "")
    )
    raise typer.Exit(ExitCode.OK)


def _num(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, int | float) else ""


@app.command("export-classifier")
def export_classifier(
    run: Annotated[Path, typer.Argument(help="A finished `cudalab train radio-classifier` run folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The classifier file to write.")] = Path(
        "radio-classifier.pt"
    ),
) -> None:
    """Turn a training run into a classifier file with its model card (threshold chosen on val, figures
    measured on the held-out test split)."""
    from cudalab.radio.classify.score import export_classifier as export

    try:
        card = export(run, out)
    except (ValueError, OSError) as exc:
        raise CudalabError(str(exc)) from None
    t = card["test"]
    _console().print(
        f"{out}: {card['model']['name']}, threshold {card['threshold']:.3g}; held-out test: AP {t['ap']:.4f}, "
        f"recall {t['recall']:.4f} (S/N >= 10: {t['recall_snr10']:.4f}), false candidates removed {t['reduction']:.4f}; "
        f"card: {out.parent / 'MODEL_CARD.md'}"
    )
    raise typer.Exit(ExitCode.OK)


def _birdies(path: Path | None) -> tuple[tuple[float, float], ...]:
    """A birdie list: one ``frequency_hz [half_width_hz]`` per line ('#' comments; 0.01 Hz wide by default)."""
    if path is None:
        return ()
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CudalabError(f"{path}: cannot read it ({exc.strerror})") from None
    for n, line in enumerate(lines, 1):
        fields = line.split("#")[0].split()
        if not fields:
            continue
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise CudalabError(
                f"{path}: line {n}: not 'frequency_hz [half_width_hz]': {line.strip()!r}"
            ) from None
        if len(values) > 2 or values[0] <= 0 or (len(values) == 2 and values[1] <= 0):
            raise CudalabError(f"{path}: line {n}: give a positive frequency and half-width in Hz")
        out.append((values[0], values[1] if len(values) == 2 else 0.01))
    return tuple(out)


@app.command()
def periodic(
    path: Annotated[
        Path, typer.Argument(help="A filterbank (SIGPROC, PSRFITS) or a time series (.tim, PRESTO .dat).")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="The run folder (replaced if it holds a previous one).")
    ] = Path("periodic-out"),
    dm_min: Annotated[float, typer.Option(help="Smallest DM, pc cm^-3 (filterbanks).")] = 0.0,
    dm_max: Annotated[
        float, typer.Option(help="Largest DM, pc cm^-3 (filterbanks; capped by the file).")
    ] = 1000.0,
    sigma: Annotated[
        float,
        typer.Option(help="Fourier candidates at least this significant, after trials (the FFA's: S/N 7)."),
    ] = 4.0,
    fold: Annotated[int, typer.Option("--fold", min=0, help="Candidates folded (the most significant).")] = 5,
    f_min: Annotated[float, typer.Option("--f-min", help="Lowest spin frequency searched, Hz.")] = 0.5,
    accel_max: Annotated[
        float,
        typer.Option("--accel-max", min=0.0, help="Accelerations searched, +- m/s^2 (binaries; 0: none)."),
    ] = 0.0,
    birdies: Annotated[
        Path | None, typer.Option(help="Frequencies to zap: 'frequency_hz [half_width_hz]' per line.")
    ] = None,
    ffa_min: Annotated[
        float, typer.Option("--ffa-min", min=0.0, help="Shortest period the FFA folds, s (0: no FFA).")
    ] = 0.1,
    ffa_max: Annotated[
        float, typer.Option("--ffa-max", min=0.0, help="Longest period the FFA folds, s.")
    ] = 10.0,
    device: Annotated[DeviceChoice | None, typer.Option(help="auto (GPU when usable), cuda or cpu.")] = None,
) -> None:
    """Search for pulsars: FFT, harmonic sums, sifting, and folding of the best candidates (docs/radio.md)."""
    from cudalab.env.device import resolve_device
    from cudalab.radio.periodic.pipeline import PeriodicJob, run_periodic
    from cudalab.radio.periodic.search import PeriodicConfig

    if dm_max < dm_min or dm_min < 0:
        raise CudalabError(f"--dm-min {dm_min} / --dm-max {dm_max}: need 0 <= dm_min <= dm_max")
    dev, _ = resolve_device((device or DeviceChoice.auto).value)
    job = PeriodicJob(dm_min=dm_min, dm_max=dm_max, fold=fold,
                      search=PeriodicConfig(sigma=sigma, f_min=f_min, birdies=_birdies(birdies),
                                            accel_max=accel_max, ffa_period_min_s=ffa_min,
                                            ffa_period_max_s=ffa_max))  # fmt: skip
    console = Console(stderr=True)
    summary = run_periodic(path, out, job, dev)  # a file it cannot search is a CudalabError, in one line
    best = summary["best"]
    console.print(
        f"[bold]periodic[/]   {summary['dm_trials']} DM trials, {summary['fourier_candidates']} Fourier and "
        f"{summary['ffa_candidates']} FFA candidates, {summary['candidates']} after sifting, {summary['seconds']:.1f} s",
        highlight=False,
    )
    if best:
        console.print(
            f"[bold]best[/]       P {best['period_ms']:.6f} ms, DM {best['dm']:.2f}, folded S/N {best['snr']:.1f}"
        )
    console.print(f"[bold]report[/]     {out / 'report.html'}", highlight=False)
    raise typer.Exit(ExitCode.OK)
