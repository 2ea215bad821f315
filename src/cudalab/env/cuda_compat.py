"""What NVIDIA driver a CUDA build needs, and which PyTorch build a given driver can run.

Sources: NVIDIA, *CUDA Toolkit Release Notes*, table "CUDA Toolkit and Corresponding Driver
Versions" (Linux x86_64, minimum driver of each toolkit's GA release), and *CUDA Compatibility*,
section "Minor Version Compatibility" (an application built with any CUDA X.y runs on a driver of
major X's first release, with limits on PTX JIT).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Minimum Linux driver for each CUDA toolkit (GA release), as (major, minor) -> driver version.
MIN_DRIVER: dict[tuple[int, int], str] = {
    (11, 0): "450.36.06",
    (11, 1): "455.23",
    (11, 2): "460.27.03",
    (11, 3): "465.19.01",
    (11, 4): "470.42.01",
    (11, 5): "495.29.05",
    (11, 6): "510.39.01",
    (11, 7): "515.43.04",
    (11, 8): "520.61.05",
    (12, 0): "525.60.13",
    (12, 1): "530.30.02",
    (12, 2): "535.54.03",
    (12, 3): "545.23.06",
    (12, 4): "550.54.14",
    (12, 5): "555.42.02",
    (12, 6): "560.28.03",
    (12, 8): "570.26",
    (12, 9): "575.51.03",
    (13, 0): "580.65.06",
}

#: Minor-version compatibility: the oldest driver that runs any CUDA of that major (PTX JIT excepted).
MINOR_COMPAT_FLOOR: dict[int, str] = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}

#: PyTorch wheel variants (download.pytorch.org/whl/<variant>) and image variants, newest first.
#: cu118 and cu124 were last published for torch 2.7 and 2.6; cu126 / cu128 / cu130 are current.
WHEEL_VARIANTS: tuple[str, ...] = ("cu130", "cu128", "cu126", "cu124", "cu118")
IMAGE_VARIANTS: tuple[str, ...] = ("cu130", "cu128", "cu126")

_VERSION_RE = re.compile(r"^\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?")


def parse_version(text: str | None) -> tuple[int, ...] | None:
    """``"570.124.06"`` -> ``(570, 124, 6)``; None for text that holds no version."""
    if not text:
        return None
    m = _VERSION_RE.match(str(text))
    if not m:
        return None
    return tuple(int(g) for g in m.groups() if g is not None)


def cuda_version_from_int(code: int | None) -> str | None:
    """The driver API's integer (``cuDriverGetVersion``, NVML) to text: ``12080`` -> ``"12.8"``."""
    if not code or code <= 0:
        return None
    return f"{code // 1000}.{(code % 1000) // 10}"


def variant_of(cuda: str | None) -> str | None:
    """``"12.8"`` -> ``"cu128"``; None for a CPU build."""
    v = parse_version(cuda)
    if v is None or len(v) < 2:
        return None
    return f"cu{v[0]}{v[1]}"


def cuda_of_variant(variant: str) -> tuple[int, int]:
    """``"cu128"`` -> ``(12, 8)``."""
    digits = variant.removeprefix("cu")
    return int(digits[:-1]), int(digits[-1])


def min_driver_for(cuda: str) -> str | None:
    """Minimum driver for CUDA ``cuda`` (``"12.8"``); a minor missing from the table takes the
    nearest lower minor of the same major, which needs at most that driver. None when unknown."""
    v = parse_version(cuda)
    if v is None or len(v) < 2:
        return None
    major, minor = v[0], v[1]
    known = sorted(k for k in MIN_DRIVER if k[0] == major and k[1] <= minor)
    if not known:
        return None
    return MIN_DRIVER[known[-1]]


@dataclass(frozen=True, slots=True)
class DriverSupport:
    """Whether a driver runs a CUDA build, and why.

    Attributes
    ----------
    status
        ``"native"`` (driver >= the toolkit's minimum), ``"minor-compat"`` (runs through minor-version
        compatibility: kernels run, PTX JIT of newer PTX does not), ``"too-old"``, or ``"unknown"``.
    required
        The minimum driver for full support, when known.
    reason
        One sentence a human can act on.
    """

    status: str
    required: str | None
    reason: str


def driver_supports(driver: str, cuda: str) -> DriverSupport:
    """Judge whether driver ``driver`` (``"570.124.06"``) runs code built for CUDA ``cuda`` (``"12.8"``)."""
    dv = parse_version(driver)
    cv = parse_version(cuda)
    required = min_driver_for(cuda)
    if dv is None or cv is None or required is None:
        return DriverSupport("unknown", required, f"no table entry for driver {driver} with CUDA {cuda}")
    req = parse_version(required)
    assert req is not None
    if dv >= req:
        return DriverSupport(
            "native", required, f"driver {driver} >= {required}, the minimum for CUDA {cuda}"
        )
    floor = MINOR_COMPAT_FLOOR.get(cv[0])
    floor_v = parse_version(floor)
    if floor_v is not None and dv >= floor_v:
        return DriverSupport(
            "minor-compat",
            required,
            f"driver {driver} < {required} (CUDA {cuda}) but >= {floor}: runs through CUDA {cv[0]}.x "
            "minor-version compatibility; kernels that need PTX JIT or newer driver features fail",
        )
    return DriverSupport(
        "too-old", required, f"driver {driver} is older than {required}, the minimum for CUDA {cuda}"
    )


def newest_native_cuda(driver: str) -> str | None:
    """The newest CUDA in the table this driver runs natively (``"535.104"`` -> ``"12.2"``)."""
    dv = parse_version(driver)
    if dv is None:
        return None
    best: tuple[int, int] | None = None
    for cuda, req in MIN_DRIVER.items():
        rv = parse_version(req)
        if rv is not None and dv >= rv and (best is None or cuda > best):
            best = cuda
    return None if best is None else f"{best[0]}.{best[1]}"


def best_variant(
    driver: str, variants: tuple[str, ...] = WHEEL_VARIANTS, *, minor_compat: bool = False
) -> str | None:
    """The newest variant among ``variants`` that ``driver`` runs natively (or, with ``minor_compat``,
    through minor-version compatibility); None when none does."""
    accepted = ("native", "minor-compat") if minor_compat else ("native",)
    for variant in variants:  # newest first
        major, minor = cuda_of_variant(variant)
        if driver_supports(driver, f"{major}.{minor}").status in accepted:
            return variant
    return None


# --------------------------------------------------------------------------------------------------
# GPU architectures in a build's arch list
# --------------------------------------------------------------------------------------------------


def _arch_num(tag: str) -> tuple[int, int, bool, bool] | None:
    """``"sm_90a"`` -> ``(9, 0, False, True)``: (major, minor, is_ptx, arch_specific)."""
    m = re.fullmatch(r"(sm|compute)_(\d+)(\d)([af]?)", tag.strip())
    if not m:
        return None
    return int(m.group(2)), int(m.group(3)), m.group(1) == "compute", m.group(4) != ""


def arch_runs(capability: tuple[int, int], arch_list: list[str]) -> str | None:
    """Which entry of a build's ``arch_list`` serves a GPU of compute ``capability``, or None.

    SASS for ``sm_XY`` runs on GPUs of the same major X and minor >= Y (binary compatibility within a
    major); ``sm_XYa`` / ``sm_XYf`` only on exactly (or, for ``f``, the family of) X.Y; PTX
    (``compute_XY``) is JIT-compiled for any GPU of capability >= X.Y.
    """
    major, minor = capability
    for tag in arch_list:
        parsed = _arch_num(tag)
        if parsed is None:
            continue
        a_major, a_minor, is_ptx, specific = parsed
        if is_ptx and (a_major, a_minor) <= (major, minor):
            return tag
        if not is_ptx and a_major == major and a_minor <= minor and (not specific or a_minor == minor):
            return tag
    return None


def variant_for_capability(capability: tuple[int, int]) -> str:
    """A human hint for which wheel generation carries kernels for ``capability``."""
    if capability >= (10, 0):
        return "cu128 or newer (Blackwell kernels first shipped in the CUDA 12.8 wheels)"
    if capability < (7, 0):
        return "cu126 or older (the cu128 and later wheels dropped Maxwell and Pascal, sm_5x/sm_6x)"
    if capability < (7, 5):
        return "cu126 or cu128 (CUDA 13 dropped Volta, sm_70)"
    return "any current variant (cu126, cu128, cu130)"
