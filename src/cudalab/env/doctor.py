"""The doctor: probe (or load recorded facts), smoke-test a usable GPU, diagnose, and judge."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cudalab import __version__
from cudalab.env.diagnose import Finding, Verdict, diagnose, verdict
from cudalab.env.facts import Facts
from cudalab.errors import CudalabError, ExitCode


@dataclass(frozen=True)
class DoctorReport:
    """Facts, the findings drawn from them, and the verdict."""

    facts: Facts
    findings: list[Finding]
    verdict: Verdict
    elapsed_s: float

    def exit_code(self, require_gpu: bool = False) -> ExitCode:
        """1 when a GPU is present but unusable or something failed; with ``require_gpu`` also when no GPU
        is usable at all (a CPU-only machine included); 0 otherwise."""
        if self.verdict.problems:
            return ExitCode.PROBLEM
        if require_gpu and self.verdict.state != "ready":
            return ExitCode.PROBLEM
        return ExitCode.OK

    def to_dict(self) -> dict[str, Any]:
        """JSON form; ``cudalab doctor --facts`` reads it back (only ``facts`` is needed)."""
        return {
            "cudalab": __version__,
            "verdict": {
                "state": self.verdict.state,
                "gpus": self.verdict.gpus,
                "headline": self.verdict.headline,
                "cause": self.verdict.cause.check if self.verdict.cause else None,
            },
            "findings": [asdict(f) for f in self.findings],
            "facts": self.facts.to_dict(),
            "elapsed_s": self.elapsed_s,
        }


def run_doctor(
    facts_file: str | Path | None = None, *, import_torch: bool | None = None, smoke: bool = True
) -> DoctorReport:
    """Examine this machine, or the facts recorded in ``facts_file``.

    Parameters
    ----------
    facts_file
        A report from ``cudalab doctor --json`` on another machine; nothing here is probed then.
    import_torch
        Passed to :func:`cudalab.env.probe.collect` (None: only when there is a sign of a GPU).
    smoke
        Run the functional GPU tests when torch can use a GPU.
    """
    t0 = time.perf_counter()
    if facts_file is not None:
        facts = Facts.load(facts_file)
    else:
        from cudalab.env.probe import collect

        facts = collect(import_torch=import_torch)
        if smoke and facts.value("torch", "cuda_available", False):
            from cudalab.env.smoke import run_smoke

            facts = Facts(probes={**facts.probes, "smoke": run_smoke()}, meta=facts.meta)
    try:
        findings = diagnose(facts)
        judged = verdict(facts, findings)
    except (TypeError, AttributeError, KeyError, ValueError, IndexError) as exc:
        if facts_file is None:  # our own probes' facts: a bug, shown as one
            raise
        # a recorded report whose nested values have shapes no doctor wrote
        raise CudalabError(
            f"{facts_file}: a value has the wrong shape ({type(exc).__name__}: {exc})"
        ) from None
    return DoctorReport(facts, findings, judged, time.perf_counter() - t0)
