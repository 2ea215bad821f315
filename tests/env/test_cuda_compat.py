"""The minimum-driver table, minor-version compatibility and arch-list matching."""

from __future__ import annotations

import pytest

from cudalab.env import cuda_compat as cc


@pytest.mark.parametrize(
    ("cuda", "driver"),
    [
        ("11.8", "520.61.05"),
        ("12.1", "530.30.02"),
        ("12.4", "550.54.14"),
        ("12.6", "560.28.03"),
        ("12.8", "570.26"),
        ("13.0", "580.65.06"),
    ],
)
def test_minimum_driver_table_as_published(cuda: str, driver: str) -> None:
    assert cc.min_driver_for(cuda) == driver
    assert cc.driver_supports(driver, cuda).status == "native"


def test_a_minor_missing_from_the_table_takes_the_nearest_lower_one() -> None:
    assert cc.min_driver_for("12.7") == cc.MIN_DRIVER[(12, 6)]
    assert cc.min_driver_for("14.0") is None
    assert cc.driver_supports("600.1", "14.0").status == "unknown"


@pytest.mark.parametrize(
    ("driver", "cuda", "status"),
    [
        ("570.26", "12.8", "native"),
        ("570.25.99", "12.8", "minor-compat"),  # one patch below the minimum, still CUDA 12.x's floor
        ("525.60.13", "12.9", "minor-compat"),
        ("525.60.12", "12.1", "too-old"),
        ("535.183.01", "13.0", "too-old"),  # CUDA 13's minor-version compatibility starts at 580
        ("580.65.06", "13.0", "native"),
        ("470.82.01", "11.8", "minor-compat"),
        ("450.80.01", "11.8", "too-old"),
    ],
)
def test_driver_support(driver: str, cuda: str, status: str) -> None:
    assert cc.driver_supports(driver, cuda).status == status


def test_versions_compare_numerically_not_as_text() -> None:
    assert cc.parse_version("570.124.06") == (570, 124, 6)
    assert cc.driver_supports("1000.1", "13.0").status == "native"  # "1000" < "580" as text
    assert cc.parse_version("garbage") is None


def test_variants_a_driver_runs() -> None:
    assert cc.newest_native_cuda("535.183.01") == "12.2"
    assert cc.best_variant("535.183.01") == "cu118"
    assert cc.best_variant("535.183.01", minor_compat=True) == "cu128"
    assert cc.best_variant("580.95.05") == "cu130"
    assert cc.best_variant("450.36.06") is None
    assert cc.cuda_version_from_int(12080) == "12.8" and cc.cuda_version_from_int(13000) == "13.0"
    assert cc.variant_of("12.8") == "cu128" and cc.variant_of(None) is None


@pytest.mark.parametrize(
    ("cap", "arch_list", "served_by"),
    [
        ((9, 0), ["sm_80", "sm_90"], "sm_90"),
        ((8, 9), ["sm_80", "sm_86"], "sm_80"),  # SASS runs on a later minor of the same major
        ((12, 0), ["sm_80", "sm_90"], None),  # Blackwell consumer GPU on a pre-12.8 wheel
        ((12, 0), ["sm_80", "compute_90"], "compute_90"),  # PTX is JIT-compiled forward
        ((9, 0), ["sm_90a"], "sm_90a"),
        ((10, 0), ["sm_90a"], None),  # arch-specific SASS does not run elsewhere
        ((6, 1), ["sm_75", "sm_80", "sm_90"], None),  # Pascal dropped
        ((7, 5), ["sm_70"], "sm_70"),
    ],
)
def test_arch_list_matching(cap: tuple[int, int], arch_list: list[str], served_by: str | None) -> None:
    assert cc.arch_runs(cap, arch_list) == served_by
