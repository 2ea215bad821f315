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
from cudalab.errors import CudalabError, ExitCode

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
    from cudalab.radio.observation import open_observation

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
            cfg = replace(cfg, nchans=nchans, foff_mhz=cfg.foff_mhz * cfg.nchans / nchans)
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


def _search_config(
    dm_min: float,
    dm_max: float,
    snr: float,
    max_width_ms: float,
    device: str,
    cutouts: int,
    top: int,
    zero_dm: bool,
    gulp: int,
    subbands: int = 0,
    kernel: str = "auto",
) -> Any:
    from cudalab.radio.pipeline import SearchConfig
    from cudalab.radio.rfi import RfiConfig

    try:
        return SearchConfig(
            dm_min=dm_min,
            dm_max=dm_max,
            snr_threshold=snr,
            max_width_s=max_width_ms / 1e3,
            device=device,  # type: ignore[arg-type]  # validated by SearchConfig.__post_init__
            cutouts=cutouts,
            report_top=top,
            gulp=gulp,
            subbands=subbands,
            kernel=kernel,  # type: ignore[arg-type]  # validated by SearchConfig.__post_init__
            rfi=RfiConfig(zero_dm=zero_dm),
        )
    except ValueError as exc:
        raise _value_error(exc) from None


def _print_candidates(console: Console, result: Any, out: Path, truth: dict[str, Any] | None = None) -> None:
    from cudalab.radio.evaluate import match_one

    h = result.header
    console.print(
        f"[bold]{Path(h.path).name}[/]: {h.nchans} ch, {h.duration_s:.2f} s; {len(result.plan.dms)} DM trials to "
        f"{result.plan.dms[-1]:.0f}; {len(result.masked_channels)} channels masked; {result.device} ({result.kernel}), "
        f"{result.seconds:.1f} s ({result.realtime_factor:.2f}x real time)"
    )
    table = Table(title=f"{len(result.candidates)} candidates (times at {h.fmax_mhz:.1f} MHz)")
    for col in ("#", "S/N", "DM", "time (s)", "width (ms)", "members"):
        table.add_column(col, justify="right")
    if truth is not None:
        table.add_column("injected", justify="left")
    for i, c in enumerate(result.candidates[:15]):
        row = [
            str(i),
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
        Path, typer.Option("--out", "-o", help="Output folder (replaced if it holds a previous search).")
    ],
    dm_min: Annotated[float, typer.Option(help="Smallest DM, pc cm^-3.")] = 0.0,
    dm_max: Annotated[float, typer.Option(help="Largest DM, pc cm^-3.")] = 1000.0,
    snr: Annotated[float, typer.Option(help="Detection threshold (boxcar S/N).")] = 6.0,
    max_width_ms: Annotated[float, typer.Option(help="Widest boxcar, ms.")] = 50.0,
    device: Annotated[str, typer.Option(help="auto (GPU when usable), cuda or cpu.")] = "auto",
    cutouts: Annotated[int, typer.Option(help="FETCH cutouts for the brightest N.")] = 20,
    top: Annotated[int, typer.Option(help="Candidates plotted in the report.")] = 8,
    zero_dm: Annotated[bool, typer.Option("--zero-dm/--no-zero-dm", help="Subtract the DM-0 series.")] = True,
    gulp: Annotated[int, typer.Option(help="Samples per block (memory bound).")] = 1 << 15,
    subbands: Annotated[
        int, typer.Option(help="0: direct dedispersion; N: two stages with N sub-bands (fewer adds).")
    ] = 0,
    kernel: Annotated[
        str,
        typer.Option(help="Dedispersion kernel: auto (Triton on a GPU, torch on a CPU), triton or torch."),
    ] = "auto",
    truth: Annotated[Path | None, typer.Option(help="A simulator truth table: mark injected pulses.")] = None,
) -> None:
    """Search a file: candidates.csv, candidates.cand, cands/*.h5 (FETCH) and report.html in --out."""
    from cudalab.radio.pipeline import run_search
    from cudalab.radio.simulate import load_truth

    cfg = _search_config(
        dm_min, dm_max, snr, max_width_ms, device, cutouts, top, zero_dm, gulp, subbands, kernel
    )
    truth_table = None
    if truth is not None:
        try:
            truth_table = load_truth(truth)
        except (OSError, ValueError) as exc:
            raise CudalabError(f"{truth}: not a truth table ({exc.__class__.__name__})") from None
    console = _console()
    with _progress(console) as progress:
        result = run_search(path, out, cfg, progress=_Bars(progress), truth=truth_table)
    _print_candidates(console, result, out, truth_table)
    raise typer.Exit(ExitCode.OK)


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the simulated file and the search.")
    ] = Path("demo-out"),
    device: Annotated[str, typer.Option(help="auto (GPU when usable), cuda or cpu.")] = "auto",
    seed: Annotated[int, typer.Option(help="Simulation seed.")] = 7,
) -> None:
    """Simulate a realistic observation (bursts at several DMs and widths, a pulsar, RFI), search it, report."""
    from cudalab.radio.evaluate import recovery
    from cudalab.radio.pipeline import run_search
    from cudalab.radio.simulate import demo_config
    from cudalab.radio.simulate import simulate as run_sim

    console = _console()
    data = out / "demo.fil"
    cfg = _search_config(0.0, 1000.0, 6.0, 50.0, device, 20, 8, True, 1 << 15)
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
    raise typer.Exit(ExitCode.OK if rec["recovered"] == rec["injected"] else ExitCode.PROBLEM)
