"""Diagnosis: pure functions from :class:`~cudalab.env.facts.Facts` to findings (cause, evidence, fix).

Each rule looks at the facts and returns one :class:`Finding` for the table, or None when it does not
apply on this machine. Rules run in stack order (hardware, driver, NVML, environment, PyTorch, smoke),
and the first failure is the verdict's cause: a missing driver explains a CUDA-less torch, not the
other way round. Nothing here touches the machine, so every cause is tested from a recorded fixture.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cudalab import __version__
from cudalab.env import cuda_compat as cc
from cudalab.env.facts import Facts

Status = Literal["pass", "info", "warn", "fail"]

#: /dev/shm below this is too small for DataLoader workers and NCCL's shared-memory transport;
#: Docker's default is 64 MiB. NVIDIA's container guide recommends --ipc=host or a large --shm-size.
SHM_MIN_BYTES = 1 << 30

#: CUDA driver API status codes (cuda.h, CUresult) that name a broken setup.
CUDA_ERROR_NO_DEVICE = 100
CUDA_ERROR_SYSTEM_NOT_READY = 802  # fabric manager not running on an NVSwitch system
CUDA_ERROR_SYSTEM_DRIVER_MISMATCH = 803  # kernel module and user-space driver differ
CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE = 804  # forward-compat libcuda on a GPU that cannot use it
CUDA_ERROR_UNKNOWN = 999


@dataclass(frozen=True, slots=True)
class Finding:
    """One row of the doctor's table.

    Attributes
    ----------
    check
        Stable id of the check or cause (``"driver-too-old"``); fixtures and tests key on it.
    title
        Short label shown in the table.
    status
        ``pass``, ``info``, ``warn`` or ``fail``.
    evidence
        One line: what was seen that led here.
    fix
        What to do, when there is something to do.
    """

    check: str
    title: str
    status: Status
    evidence: str
    fix: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to "can this machine do GPU work?".

    Attributes
    ----------
    state
        ``ready`` (torch uses the GPUs), ``cpu-only`` (no NVIDIA GPU here), ``unusable`` (a GPU is present
        but cannot be used) or ``unchecked`` (GPU signs present, but torch was not imported).
    gpus
        GPUs torch can use.
    headline
        One sentence.
    cause
        The first failing finding, if any.
    """

    state: Literal["ready", "cpu-only", "unusable", "unchecked"]
    gpus: int
    headline: str
    cause: Finding | None

    @property
    def problems(self) -> bool:
        """True when the doctor found something that stops or endangers GPU work."""
        return self.state == "unusable" or self.cause is not None


# --------------------------------------------------------------------------------------------------
# derived view of the facts, computed once
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _View:
    facts: Facts
    in_container: bool
    runtime: str | None
    pci_gpus: int
    nvswitches: int
    driver: str | None  # kernel module version
    nodes: bool  # /dev/nvidia<N> and /dev/nvidiactl
    cu_init: int | None
    nvml_error: str | None
    gpus: list[dict[str, Any]]  # NVML's view (name, uuid, compute_capability, mig, ...)
    torch_ok: bool
    torch_imported: bool
    torch_version: str | None
    torch_cuda: str | None
    torch_hip: str | None
    torch_cuda_error: str | None
    cuda_available: bool

    @property
    def gpu_hardware(self) -> bool:
        return bool(self.pci_gpus or self.driver or self.nodes or self.gpus)

    @property
    def torch_mm(self) -> str:
        v = cc.parse_version(self.torch_version)
        return f"{v[0]}.{v[1]}" if v and len(v) >= 2 else "x.y"

    def image_tag(self, variant: str) -> str:
        return f"cudalab:{__version__}-torch{self.torch_mm}-{variant}"


def _view(f: Facts) -> _View:
    torch = f.probe("torch")
    nvml_gpus = f.value("nvml", "gpus", []) or []
    return _View(
        facts=f,
        in_container=f.value("container", "runtime") is not None,
        runtime=f.value("container", "runtime"),
        pci_gpus=len(f.value("pci", "gpus", []) or []),
        nvswitches=len(f.value("pci", "nvswitches", []) or [])
        + len(f.value("device_nodes", "nvswitches", []) or []),
        driver=f.value("nvml", "driver_version") or f.value("driver", "version"),
        nodes=bool(f.value("device_nodes", "gpus")) and bool(f.value("device_nodes", "nvidiactl")),
        cu_init=f.value("libcuda", "cu_init"),
        nvml_error=f.error("nvml"),
        gpus=[g for g in nvml_gpus if isinstance(g, dict)],
        torch_ok=bool(torch and torch.get("version")),
        torch_imported=bool(torch and torch.get("imported")),
        torch_version=f.value("torch", "version"),
        torch_cuda=f.value("torch", "cuda"),
        torch_hip=f.value("torch", "hip"),
        torch_cuda_error=f.value("torch", "cuda_error"),
        cuda_available=bool(f.value("torch", "cuda_available", False)),
    )


def _has(text: str | None, *needles: str) -> bool:
    low = (text or "").lower()
    return any(n.lower() in low for n in needles)


def _pip_torch(variant: str) -> str:
    return f"pip install --force-reinstall torch --index-url https://download.pytorch.org/whl/{variant}"


def _variants_this_driver_runs(v: _View, exclude: str | None = None) -> str | None:
    """Which torch build and image this driver runs: "install the cu128 build (...): pip ...; image: ...".

    The newest variant that runs at all comes first (current torch releases ship only the newest
    variants); one that needs minor-version compatibility says so, and the newest native one follows.
    None when the driver runs none of them.
    """
    if not v.driver:
        return None

    def runs(variant: str) -> bool:
        return (
            variant != exclude and cc.best_variant(v.driver or "", (variant,), minor_compat=True) is not None
        )

    pick = next((x for x in cc.WHEEL_VARIANTS if runs(x)), None)
    if pick is None:
        return None
    native = cc.best_variant(v.driver)
    text = f"install the {pick} build"
    if pick != native:
        text += f" (runs through CUDA {cc.cuda_of_variant(pick)[0]}.x minor-version compatibility)"
    text += f": {_pip_torch(pick)}"
    if native and native not in (pick, exclude):
        text += f"; natively this driver runs {native}"
    image = next((x for x in cc.IMAGE_VARIANTS if runs(x)), None)
    if image:
        text += f"; image: {v.image_tag(image)}"
    return text


# --------------------------------------------------------------------------------------------------
# rules, in stack order
# --------------------------------------------------------------------------------------------------

Rule = Callable[[_View], "Finding | None"]


def rule_platform(v: _View) -> Finding:
    os_ = v.facts.value("os", default={}) or {}
    where = f"{v.runtime} container" if v.in_container else "host"
    image = v.facts.value("container", "image")
    evidence = f"{os_.get('distro') or os_.get('system', '?')}, kernel {os_.get('kernel', '?')}, {where}"
    if image:
        evidence += f", image {image}"
    return Finding("platform", "Platform", "info", evidence)


def rule_gpu_hardware(v: _View) -> Finding:
    if v.gpu_hardware:
        n = max(v.pci_gpus, len(v.gpus), len(v.facts.value("device_nodes", "gpus", []) or []))
        names = sorted({g.get("name", "?") for g in v.gpus if g.get("name")})
        return Finding(
            "gpu-hardware", "NVIDIA GPU", "pass", f"{n} GPU(s)" + (f": {', '.join(names)}" if names else "")
        )
    if v.in_container:
        return Finding(
            "no-gpu",
            "NVIDIA GPU",
            "info",
            f"no NVIDIA GPU, driver or device node visible in this {v.runtime} container: CPU only",
            "if the host has GPUs, start the container with them: docker run --gpus all ... "
            "(needs the NVIDIA Container Toolkit on the host)",
        )
    return Finding(
        "no-gpu", "NVIDIA GPU", "info", "no NVIDIA GPU on the PCI bus, no driver: this machine is CPU only"
    )


def rule_container_without_gpus(v: _View) -> Finding | None:
    nvd = (v.facts.value("visible_devices", "NVIDIA_VISIBLE_DEVICES") or "").strip().lower()
    asked = nvd not in ("", "void", "none")
    if not v.in_container or v.nodes or not (v.driver or v.pci_gpus or asked):
        return None
    seen = []
    if v.pci_gpus:
        seen.append(f"{v.pci_gpus} NVIDIA GPU(s) on the PCI bus")
    if v.driver:
        seen.append(f"host driver {v.driver}")
    if asked:
        seen.append(f"NVIDIA_VISIBLE_DEVICES={nvd}")
    return Finding(
        "container-no-gpus",
        "GPUs in container",
        "fail",
        f"{v.runtime} container without /dev/nvidia* device nodes although {', '.join(seen)}",
        "start the container with GPUs: docker run --gpus all (compose: deploy.resources.reservations.devices; "
        "Kubernetes: resources.limits nvidia.com/gpu); on the host install the NVIDIA Container Toolkit and run "
        "'sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker'",
    )


def rule_driver(v: _View) -> Finding | None:
    if not v.gpu_hardware:
        return None
    if v.driver is None:
        if v.in_container:
            return None  # rule_container_without_gpus speaks for it
        return Finding(
            "no-driver",
            "Kernel driver",
            "fail",
            f"{v.pci_gpus} NVIDIA GPU(s) on the PCI bus but /proc/driver/nvidia/version is absent: no driver loaded",
            "install the NVIDIA driver (Ubuntu: 'sudo ubuntu-drivers install' or 'sudo apt install nvidia-driver-580-open'), "
            "then 'sudo modprobe nvidia' or reboot; if it is installed, 'sudo dmesg | grep -i nvidia' shows why it did "
            "not load (Secure Boot blocks unsigned modules)",
        )
    if not v.nodes and not v.in_container:
        return Finding(
            "device-nodes",
            "Device nodes",
            "fail",
            f"driver {v.driver} is loaded but /dev/nvidia0 or /dev/nvidiactl is missing",
            "create them: 'sudo nvidia-modprobe -u -c=0' (or run 'sudo nvidia-smi' once); check udev rules",
        )
    kind = "open" if v.facts.value("driver", "open_kernel_module") else "proprietary"
    return Finding("driver", "Kernel driver", "pass", f"{kind} kernel module {v.driver}")


def rule_driver_library_mismatch(v: _View) -> Finding | None:
    kernel = v.facts.value("driver", "version")
    user = v.facts.value("libcuda", "file_version")
    forward = bool(v.facts.value("libcuda", "forward_compat"))
    by_nvml = _has(v.nvml_error, "version mismatch")
    by_cuinit = v.cu_init == CUDA_ERROR_SYSTEM_DRIVER_MISMATCH
    by_files = bool(kernel and user and kernel != user and not forward)
    if not (by_nvml or by_cuinit or by_files):
        return None
    evidence = []
    if by_nvml:
        evidence.append(f"NVML: {v.nvml_error}")
    if by_cuinit:
        evidence.append("cuInit: CUDA_ERROR_SYSTEM_DRIVER_MISMATCH (803)")
    if kernel and user:
        evidence.append(f"kernel module {kernel}, libcuda {user}")
    return Finding(
        "driver-lib-mismatch",
        "Driver/library",
        "fail",
        "; ".join(evidence),
        "the driver was upgraded without a reboot: reboot, or stop every GPU process and reload the modules "
        "('sudo rmmod nvidia_uvm nvidia_drm nvidia_modeset nvidia && sudo modprobe nvidia')"
        + ("; in a container, also check the image does not ship its own libcuda" if v.in_container else ""),
    )


def rule_nvml_unknown_error(v: _View) -> Finding | None:
    gpu_errors = [g.get("error") for g in v.gpus if g.get("error")]
    unknown = _has(v.nvml_error, "unknown error") or any(_has(e, "unknown error") for e in gpu_errors)
    if not unknown and not (v.cu_init == CUDA_ERROR_UNKNOWN and v.in_container):
        return None
    nvml_said = v.nvml_error or (gpu_errors[0] if gpu_errors else "initialised")
    evidence = f"NVML: {nvml_said}"
    if v.cu_init == CUDA_ERROR_UNKNOWN:
        evidence += "; cuInit: CUDA_ERROR_UNKNOWN (999)"
    if v.in_container:
        return Finding(
            "nvml-unknown-error",
            "GPU access",
            "fail",
            evidence
            + f"; in a {v.runtime} container: the host's 'systemctl daemon-reload' revoked its device access",
            "restart the container now; for good, on the host: use CDI ('sudo nvidia-ctk cdi generate --output="
            "/etc/cdi/nvidia.yaml'), or 'sudo nvidia-ctk system create-dev-char-symlinks --create-all', or set "
            '"exec-opts": ["native.cgroupdriver=cgroupfs"] in /etc/docker/daemon.json',
        )
    return Finding(
        "nvml-unknown-error",
        "GPU access",
        "fail",
        evidence,
        "look for Xid errors ('sudo dmesg | grep -i xid'), check 'nvidia-smi -q'; a GPU that fell off the bus needs a reboot",
    )


def rule_fabric_manager(v: _View) -> Finding | None:
    by_torch = _has(v.torch_cuda_error, "system not yet initialized", "error 802")
    if v.cu_init != CUDA_ERROR_SYSTEM_NOT_READY and not by_torch:
        return None
    switches = f"{v.nvswitches} NVSwitch device(s)" if v.nvswitches else "an NVSwitch system"
    return Finding(
        "fabric-manager",
        "Fabric manager",
        "fail",
        f"cuInit: CUDA_ERROR_SYSTEM_NOT_READY (802) on {switches}: the NVSwitch fabric is not initialised",
        f"start the fabric manager of exactly the driver's version ({v.driver or 'see nvidia-smi'}): "
        "'sudo apt install nvidia-fabricmanager-<branch>' then 'sudo systemctl enable --now nvidia-fabricmanager'; "
        "'nvidia-smi -q | grep -A2 Fabric' should then show State: Completed",
    )


def rule_forward_compat(v: _View) -> Finding | None:
    by_torch = _has(v.torch_cuda_error, "forward compatibility was attempted", "error 804")
    if v.cu_init != CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE and not by_torch:
        return None
    lib = v.facts.value("libcuda", "realpath") or "a forward-compatibility libcuda"
    fix = (
        "forward compatibility (the cuda-compat package) works only on data-centre GPUs: remove its folder "
        "(e.g. /usr/local/cuda/compat) from LD_LIBRARY_PATH and /etc/ld.so.conf.d, then 'sudo ldconfig'"
    )
    alternative = _variants_this_driver_runs(v, exclude=cc.variant_of(v.torch_cuda))
    if alternative:
        fix += f"; then {alternative}"
    return Finding(
        "forward-compat",
        "Forward compat",
        "fail",
        f"cuInit: CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE (804); libcuda loaded from {lib}",
        fix,
    )


def rule_visible_devices(v: _View) -> Finding | None:
    raw = v.facts.value("visible_devices", "CUDA_VISIBLE_DEVICES")
    nvd = v.facts.value("visible_devices", "NVIDIA_VISIBLE_DEVICES")
    if nvd is not None and nvd.strip().lower() in ("void", "none") and v.gpu_hardware:
        return Finding(
            "visible-devices",
            "Visible devices",
            "fail",
            f"NVIDIA_VISIBLE_DEVICES={nvd}: the container runtime was told to expose no GPU",
            "start the container with NVIDIA_VISIBLE_DEVICES=all (or --gpus all)",
        )
    if raw is None:
        return None
    total = len(v.gpus) or v.pci_gpus or len(v.facts.value("device_nodes", "gpus", []) or [])
    entries = [e.strip() for e in raw.split(",")]
    if raw.strip() == "" or entries[0] in ("-1", "none", "NoDevFiles"):
        return Finding(
            "visible-devices",
            "Visible devices",
            "fail",
            f"CUDA_VISIBLE_DEVICES={raw!r} hides every GPU"
            + (f" (this machine has {total})" if total else ""),
            "unset CUDA_VISIBLE_DEVICES, or list the GPUs to use: export CUDA_VISIBLE_DEVICES=0,1",
        )
    uuids = [str(g.get("uuid", "")) for g in v.gpus]
    mig_uuids = [str(u) for g in v.gpus for u in ((g.get("mig") or {}).get("instances") or [])]
    usable = 0
    for e in entries:  # CUDA stops at the first entry it cannot resolve; so do we
        if re.fullmatch(r"\d+", e):
            ok = total == 0 or int(e) < total
        elif e.startswith(("GPU-", "MIG-")):
            ok = not uuids or any(u.startswith(e) for u in uuids + mig_uuids)
        else:
            ok = False
        if not ok:
            known = (
                f"this machine has {total} GPU(s), indices 0-{total - 1}" if total else "no GPU is visible"
            )
            return Finding(
                "visible-devices",
                "Visible devices",
                "fail",
                f"CUDA_VISIBLE_DEVICES={raw!r}: entry {e!r} names no GPU here ({known}); CUDA ignores it and all after it",
                "list existing indices or UUIDs ('nvidia-smi -L' prints them), or unset CUDA_VISIBLE_DEVICES",
            )
        usable += 1
    return Finding(
        "visible-devices",
        "Visible devices",
        "pass",
        f"CUDA_VISIBLE_DEVICES={raw} ({usable} of {total or '?'} GPUs)",
    )


def rule_mig(v: _View) -> Finding | None:
    empty = [
        g for g in v.gpus if (g.get("mig") or {}).get("current") and not (g["mig"].get("instances") or [])
    ]
    pending = [g for g in v.gpus if g.get("mig") and g["mig"].get("current") != g["mig"].get("pending")]
    if empty:
        idx = ",".join(str(g["index"]) for g in empty)
        return Finding(
            "mig-no-instances",
            "MIG",
            "fail",
            f"MIG mode is on for GPU {idx} but it has no MIG instances, so CUDA sees no device there",
            f"create instances: 'sudo nvidia-smi mig -i {empty[0]['index']} -cgi 1g.10gb,1g.10gb -C' "
            "(profiles: 'nvidia-smi mig -lgip'), or turn MIG off: "
            f"'sudo nvidia-smi -i {empty[0]['index']} -mig 0' and reset the GPU",
        )
    if pending:
        idx = ",".join(str(g["index"]) for g in pending)
        return Finding(
            "mig-pending",
            "MIG",
            "warn",
            f"a MIG mode change is pending on GPU {idx}",
            f"reset the GPU to apply it: 'sudo nvidia-smi -r -i {pending[0]['index']}' (or reboot)",
        )
    if any((g.get("mig") or {}).get("current") for g in v.gpus):
        n = sum(len(g["mig"].get("instances") or []) for g in v.gpus if g.get("mig"))
        return Finding("mig", "MIG", "pass", f"MIG enabled with {n} instance(s)")
    return None


def rule_torch_import(v: _View) -> Finding | None:
    p = v.facts.probe("torch")
    if p is None:
        return None
    if p.ok and not v.torch_imported:
        return Finding(
            "torch-import",
            "PyTorch",
            "info",
            f"torch {v.torch_version} (CUDA {v.torch_cuda or 'none'}), read from torch/version.py; "
            "not imported, as there is no GPU to test",
            "run 'cudalab doctor --import-torch' to check that it imports",
        )
    if p.ok:
        return None
    err = p.error or "unknown import failure"
    if _has(err, "no module named 'torch'"):
        fix = "install it: pip install torch (or 'make demo' in the cudalab checkout)"
    elif _has(err, "undefined symbol") and _has(err, "nccl"):
        fix = (
            "an NCCL from LD_LIBRARY_PATH shadows the one torch was built with: remove that folder from "
            "LD_LIBRARY_PATH (or reinstall nvidia-nccl-cu12/cu13 to match torch)"
        )
    elif _has(err, "undefined symbol"):
        fix = (
            "a CUDA library from LD_LIBRARY_PATH or another CUDA major shadows torch's own: unset LD_LIBRARY_PATH "
            "and retry; if it then works, remove the offending folder for good"
        )
    elif _has(err, "libcudnn"):
        fix = "cuDNN is missing or broken: pip install --force-reinstall nvidia-cudnn-cu12 (or -cu13, matching torch)"
    elif _has(err, "libcudart", "libcublas", "libnvrtc", "libcusparse", "libnvjitlink"):
        fix = (
            "torch's CUDA wheels are missing or of another CUDA major: reinstall torch for one variant, e.g. "
            + _pip_torch("cu128")
        )
    else:
        fix = "reinstall torch in a clean virtual environment; if that fails, send 'cudalab doctor --json' to the team"
    return Finding("torch-import", "PyTorch", "fail", f"import torch failed: {err}", fix)


def rule_cpu_only_wheel(v: _View) -> Finding | None:
    if not v.torch_ok:
        return None
    if v.torch_cuda is not None:
        kind = "CUDA build" if v.gpu_hardware else "CUDA build, used on the CPU here"
        return Finding(
            "torch-build", "PyTorch build", "pass", f"torch {v.torch_version}, {kind} (CUDA {v.torch_cuda})"
        )
    if v.torch_hip:
        return Finding(
            "torch-build",
            "PyTorch build",
            "info",
            f"torch {v.torch_version} is a ROCm build (HIP {v.torch_hip})",
        )
    if not v.gpu_hardware:
        return Finding(
            "torch-build",
            "PyTorch build",
            "info",
            f"torch {v.torch_version} is a CPU-only build; no GPU here",
        )
    variant = (cc.best_variant(v.driver) if v.driver else None) or "cu128"
    return Finding(
        "cpu-only-wheel",
        "PyTorch build",
        "fail",
        f"torch {v.torch_version} is a CPU-only build (torch.version.cuda is None) on a machine with NVIDIA GPUs",
        f"pip uninstall -y torch && {_pip_torch(variant)}"
        + (f" ({variant}: the newest variant driver {v.driver} runs)" if v.driver else ""),
    )


def rule_driver_too_old(v: _View) -> Finding | None:
    if not v.driver or not v.torch_cuda:
        return None
    support = cc.driver_supports(v.driver, v.torch_cuda)
    by_torch = _has(v.torch_cuda_error, "driver on your system is too old")
    if support.status == "native" and not by_torch:
        return Finding(
            "driver-compat", "Driver vs CUDA", "pass", f"{support.reason} (torch {v.torch_version})"
        )
    if support.status == "unknown" and not by_torch:
        return Finding("driver-compat", "Driver vs CUDA", "info", support.reason)
    runs = cc.newest_native_cuda(v.driver)
    fix = f"upgrade the NVIDIA driver to >= {support.required}"
    if support.status == "minor-compat" and not by_torch:
        native = cc.best_variant(v.driver)
        if native:
            fix += f", or for full support install the {native} build: {_pip_torch(native)}"
    else:
        alternative = _variants_this_driver_runs(v, exclude=cc.variant_of(v.torch_cuda))
        fix += f", or {alternative}" if alternative else " (no PyTorch variant runs on this driver)"
    if support.status == "minor-compat" and not by_torch:
        return Finding(
            "driver-too-old",
            "Driver vs CUDA",
            "warn",
            support.reason + (f"; natively this driver runs CUDA <= {runs}" if runs else ""),
            fix,
        )
    evidence = (
        f"torch {v.torch_version} needs driver >= {support.required} (CUDA {v.torch_cuda}); found {v.driver}"
    )
    if runs:
        evidence += f", which runs CUDA <= {runs}"
    return Finding("driver-too-old", "Driver vs CUDA", "fail", evidence, fix)


def _torch_gpus(v: _View) -> list[dict[str, Any]]:
    devs = v.facts.value("torch", "devices", []) or []
    return devs or v.gpus


def rule_arch_missing(v: _View) -> Finding | None:
    arch_list = v.facts.value("torch", "arch_list") or []
    by_torch = _has(v.torch_cuda_error, "no kernel image") or any(
        _has(w, "not compatible with the current pytorch installation")
        for w in (v.facts.value("torch", "cuda_warnings") or [])
    )
    if not arch_list and not by_torch:
        return None
    missing = []
    for g in _torch_gpus(v):
        cap = g.get("compute_capability")
        if not cap or len(cap) != 2:
            continue
        if arch_list and cc.arch_runs((int(cap[0]), int(cap[1])), arch_list) is None:
            missing.append((g.get("name", "GPU"), (int(cap[0]), int(cap[1]))))
    if not missing and not by_torch:
        if not _torch_gpus(v):
            return None
        return Finding(
            "arch",
            "GPU architecture",
            "pass",
            f"kernels for every GPU in torch's arch list {' '.join(arch_list)}",
        )
    if missing:
        name, cap = missing[0]
        evidence = (
            f"{name} is sm_{cap[0]}{cap[1]}; torch {v.torch_version} has kernels for {' '.join(arch_list)} only "
            "(CUDA error: no kernel image is available for execution on the device)"
        )
        hint = cc.variant_for_capability(cap)
    else:
        evidence, hint = f"torch reports: {v.torch_cuda_error}", "a variant built for this GPU"
    return Finding(
        "arch-missing",
        "GPU architecture",
        "fail",
        evidence,
        f"install a torch build with kernels for this GPU: {hint}",
    )


def rule_lib_shadowing(v: _View) -> Finding | None:
    ld_dirs = [Path(e["dir"]) for e in v.facts.value("ld_library_path", "entries", []) or []]
    loaded: dict[str, list[str]] = v.facts.value("torch", "loaded_libs", {}) or {}
    wheels = {w["name"]: w["version"] for w in v.facts.value("nvidia_wheels", "wheels", []) or []}
    problems = []
    for family, label in (("cudnn", "cuDNN"), ("nccl", "NCCL")):
        wheel = next((n for n in wheels if n.startswith(f"nvidia-{family}-")), None)
        for path in loaded.get(family, []):
            parent = Path(path).parent
            if "site-packages" not in path and any(parent == d for d in ld_dirs):
                have = v.facts.value("torch", family)
                problems.append(
                    f"{label} loaded from {path} (LD_LIBRARY_PATH)"
                    + (f", not torch's {wheel} {wheels[wheel]}" if wheel else "")
                    + (f"; version in use {have}" if have else "")
                )
    if not v.torch_imported:  # without the import, say what *would* shadow
        for e in v.facts.value("ld_library_path", "entries", []) or []:
            for family in ("cudnn", "nccl"):
                if e.get("cuda_libs", {}).get(family) and any(
                    n.startswith(f"nvidia-{family}-") for n in wheels
                ):
                    problems.append(
                        f"LD_LIBRARY_PATH entry {e['dir']} holds {', '.join(e['cuda_libs'][family])}"
                    )
    if not problems:
        return None
    status: Status = "fail" if v.torch_imported else "warn"
    return Finding(
        "lib-shadowing",
        "cuDNN/NCCL",
        status,
        "; ".join(problems),
        "the loader searches LD_LIBRARY_PATH before torch's own wheels: remove those folders from LD_LIBRARY_PATH "
        "(check ~/.bashrc, modules, the image's ENV) so torch loads the cuDNN and NCCL it was built with",
    )


def rule_mixed_cuda_wheels(v: _View) -> Finding | None:
    wheels = v.facts.value("nvidia_wheels", "wheels", []) or []
    majors = sorted({w["cuda_major"] for w in wheels if w.get("cuda_major") is not None})
    if len(majors) < 2:
        return None
    tv = cc.parse_version(v.torch_cuda)
    keep = tv[0] if tv else None
    strays = [w["name"] for w in wheels if w.get("cuda_major") not in (None, keep)]
    by_major = ", ".join(
        f"cu{m}: {sum(1 for w in wheels if w.get('cuda_major') == m)} wheels" for m in majors
    )
    fix = (
        f"keep CUDA {keep}'s set (torch {v.torch_version} uses it): pip uninstall -y {' '.join(strays)}"
        if keep
        else "reinstall torch in a clean virtual environment so that one CUDA major's wheels remain"
    )
    return Finding(
        "mixed-cuda-wheels",
        "CUDA wheels",
        "fail",
        f"nvidia-* wheels of two CUDA majors side by side ({by_major})",
        fix,
    )


def rule_shm(v: _View) -> Finding | None:
    p = v.facts.probe("shm")
    if p is None:
        return None
    total = p.get("total_bytes")
    if not p.ok or total is None:
        return Finding(
            "shm-small", "/dev/shm", "warn", f"/dev/shm unavailable ({p.error})", "mount a tmpfs at /dev/shm"
        )
    mib = total / 2**20
    if total < SHM_MIN_BYTES:
        docker = " (Docker's default is 64 MiB)" if v.in_container else ""
        return Finding(
            "shm-small",
            "/dev/shm",
            "warn",
            f"/dev/shm is {mib:.0f} MiB{docker}: DataLoader workers and NCCL's shared-memory transport fail with bus errors",
            "start the container with --ipc=host or --shm-size=16g (compose: shm_size: 16gb); on a host, "
            "'sudo mount -o remount,size=16G /dev/shm'",
        )
    return Finding("shm", "/dev/shm", "pass", f"{mib / 1024:.1f} GiB")


def rule_compiler(v: _View) -> Finding | None:
    """Triton compiles a small C launcher for every kernel at first use, and torch.compile's CPU code
    is C++: without a compiler both fail then ("Failed to find C compiler"), not at import."""
    p = v.facts.probe("compilers")
    if p is None or not p.ok:
        return None
    cc, cxx, triton = p.get("cc"), p.get("cxx"), p.get("triton")
    if cc and cxx:
        return Finding("compiler", "C compiler", "pass", f"C {cc}, C++ {cxx}")
    missing = " and ".join(n for n, found in (("C", cc), ("C++", cxx)) if not found)
    hurt = []
    if triton and not cc:
        hurt.append(
            "Triton kernels (the radio search's GPU kernels, torch.compile on a GPU) fail at first launch"
        )
    if not cxx:
        hurt.append("torch.compile of CPU code fails")
    if not hurt:
        return Finding(
            "compiler", "C compiler", "info", f"no {missing} compiler (nothing installed here needs one)"
        )
    return Finding(
        "no-compiler",
        "C compiler",
        "warn",
        f"no {missing} compiler on PATH (nor CC/CXX): {'; '.join(hurt)} with 'Failed to find C compiler'",
        "install one: 'apt-get install -y gcc g++' (Debian/Ubuntu; the cudalab image has them), "
        "'dnf install gcc gcc-c++', or set CC and CXX to a compiler",
    )


def rule_torch_cuda(v: _View) -> Finding | None:
    if not v.torch_imported or v.torch_cuda is None:
        return None
    if v.cuda_available:
        devs = v.facts.value("torch", "devices", []) or []
        libs = []
        if v.facts.value("torch", "cudnn"):
            libs.append(f"cuDNN {v.facts.value('torch', 'cudnn')}")
        if v.facts.value("torch", "nccl"):
            libs.append(f"NCCL {v.facts.value('torch', 'nccl')}")
        return Finding(
            "torch-cuda",
            "torch.cuda",
            "pass",
            f"{len(devs)} device(s) usable" + (f"; loaded {', '.join(libs)}" if libs else ""),
        )
    if not v.gpu_hardware:
        return None
    return Finding(
        "torch-cuda",
        "torch.cuda",
        "fail",
        f"torch.cuda.is_available() is False: {v.torch_cuda_error or 'no reason given'}",
        "see the first failing row above; if there is none, send 'cudalab doctor --json' to the team",
    )


def rule_smoke(v: _View) -> list[Finding]:
    p = v.facts.probe("smoke")
    if p is None:
        return []
    out = []
    for test in p.get("tests", []) or []:
        ms = f"{1e3 * float(test.get('elapsed_s', 0.0)):.0f} ms"
        if test.get("ok"):
            out.append(
                Finding(
                    f"smoke-{test['name']}",
                    f"Smoke: {test['name']}",
                    "pass",
                    f"{test.get('detail', '')} ({ms})",
                )
            )
        elif test.get("skipped"):
            out.append(
                Finding(
                    f"smoke-{test['name']}", f"Smoke: {test['name']}", "info", test.get("detail", "skipped")
                )
            )
        else:
            out.append(
                Finding(
                    f"smoke-{test['name']}",
                    f"Smoke: {test['name']}",
                    "fail",
                    f"{test.get('detail', '')} ({ms})",
                    "a GPU that fails arithmetic is not safe to use: check 'nvidia-smi -q -d ECC' and "
                    "'dmesg | grep -i xid', and report it",
                )
            )
    return out


RULES: tuple[Rule, ...] = (
    rule_platform,
    rule_gpu_hardware,
    rule_container_without_gpus,
    rule_driver,
    rule_driver_library_mismatch,
    rule_nvml_unknown_error,
    rule_fabric_manager,
    rule_forward_compat,
    rule_visible_devices,
    rule_mig,
    rule_torch_import,
    rule_cpu_only_wheel,
    rule_driver_too_old,
    rule_arch_missing,
    rule_lib_shadowing,
    rule_mixed_cuda_wheels,
    rule_shm,
    rule_compiler,
    rule_torch_cuda,
)


def diagnose(facts: Facts) -> list[Finding]:
    """Every applicable finding for ``facts``, in stack order (smoke tests last)."""
    v = _view(facts)
    findings = [f for f in (rule(v) for rule in RULES) if f is not None]
    return findings + rule_smoke(v)


def verdict(facts: Facts, findings: list[Finding]) -> Verdict:
    """Summarise ``findings`` into the answer the doctor prints last."""
    v = _view(facts)
    cause = next((f for f in findings if f.status == "fail"), None)
    smoke_failed = any(f.check.startswith("smoke-") and f.status == "fail" for f in findings)
    n = len(v.facts.value("torch", "devices", []) or [])
    if v.cuda_available and n and not smoke_failed:
        head = f"GPU ready: {n} device(s) usable by torch {v.torch_version}"
        if cause is not None:
            head += f", but {cause.title.lower()} needs attention"
        return Verdict("ready", n, head, cause)
    if not v.gpu_hardware:
        return Verdict("cpu-only", 0, "CPU only: no NVIDIA GPU on this machine", cause)
    if not v.torch_imported and cause is None:
        return Verdict("unchecked", 0, "GPU present; torch was not imported, so its use is unchecked", None)
    reason = cause.evidence if cause else "torch cannot use it"
    return Verdict("unusable", 0, f"GPU present but unusable: {reason}", cause)
