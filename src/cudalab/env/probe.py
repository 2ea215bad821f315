"""Probes: read what this machine has, from the hardware up to PyTorch, each saying how it knows.

The order follows the stack so that an early failure explains later ones: the operating system and
container, the GPU on the PCI bus, the kernel driver and its device nodes, the user-space driver
(libcuda) and NVML, the environment variables that hide GPUs, and finally PyTorch and the CUDA
libraries it actually loaded. Probes never raise: a failure is a fact (``ok=False`` with the error).

Importing torch costs 2-4 s on a small machine, more than the doctor's whole budget on a machine
without a GPU, so :func:`collect` imports it only when there is some sign of an NVIDIA GPU (a PCI
device, a kernel driver, device nodes or libcuda) or when asked; otherwise it reads the build from
``torch/version.py`` and says so.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import importlib.metadata
import importlib.util
import os
import platform
import re
import socket
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cudalab.env.cuda_compat import cuda_version_from_int
from cudalab.env.facts import Facts, Probe

#: PCI vendor id of NVIDIA, and the PCI classes of GPUs (VGA controller, 3D controller) and of
#: NVSwitch (bridge, "other"); from the PCI ID repository (pci-ids.ucw.cz).
NVIDIA_PCI_VENDOR = "0x10de"
GPU_PCI_CLASSES = ("0x0300", "0x0302")
NVSWITCH_PCI_CLASS = "0x0680"

#: Shared-library families the doctor follows through LD_LIBRARY_PATH and the process's memory map.
CUDA_LIB_FAMILIES: dict[str, str] = {
    "cuda": "libcuda.so*",
    "nvml": "libnvidia-ml.so*",
    "cudart": "libcudart.so*",
    "cublas": "libcublas.so*",
    "cudnn": "libcudnn.so*",
    "nccl": "libnccl.so*",
}

#: nvidia-* wheels whose version major *is* the CUDA major (the toolkit components that track it).
_CUDA_TRACKING_WHEELS = frozenset(
    {
        "nvidia-cuda-runtime",
        "nvidia-cuda-nvrtc",
        "nvidia-cuda-cupti",
        "nvidia-cublas",
        "nvidia-nvjitlink",
        "nvidia-nvtx",
    }
)


def _timed(name: str, source: str, fn: Callable[[], tuple[bool, Any, str | None]]) -> Probe:
    """Run ``fn`` -> (ok, value, error) and wrap it as a :class:`Probe`; an exception becomes a failed probe."""
    t0 = time.perf_counter()
    try:
        ok, value, error = fn()
    except Exception as exc:  # a probe must never take the doctor down
        ok, value, error = False, None, f"{exc.__class__.__name__}: {exc}"
    return Probe(
        name=name, ok=ok, value=value, source=source, error=error, elapsed_s=time.perf_counter() - t0
    )


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _s(x: Any) -> str:
    """NVML returns bytes in old bindings and str in new ones."""
    return x.decode() if isinstance(x, bytes) else str(x)


# --------------------------------------------------------------------------------------------------
# operating system, container, PCI
# --------------------------------------------------------------------------------------------------


def probe_os() -> Probe:
    def run() -> tuple[bool, Any, str | None]:
        os_release = _read("/etc/os-release") or ""
        pretty = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', os_release, re.M)
        return (
            True,
            {
                "system": platform.system(),
                "kernel": platform.release(),
                "machine": platform.machine(),
                "distro": pretty.group(1) if pretty else None,
                "python": platform.python_version(),
                "python_executable": sys.executable,
                "hostname": socket.gethostname(),
                "cpus": os.cpu_count(),
            },
            None,
        )

    return _timed("os", "platform.uname(), /etc/os-release", run)


def probe_container(environ: Mapping[str, str]) -> Probe:
    def run() -> tuple[bool, Any, str | None]:
        runtime: str | None = None
        evidence: list[str] = []
        if Path("/.dockerenv").exists():
            runtime, evidence = "docker", [*evidence, "/.dockerenv"]
        containerenv = _read("/run/.containerenv")
        image_id = None
        image = environ.get("CUDALAB_IMAGE")
        if containerenv is not None:
            runtime, evidence = "podman", [*evidence, "/run/.containerenv"]
            m = re.search(r'^imageid="([^"]*)"', containerenv, re.M)
            image_id = m.group(1) if m else None
            m = re.search(r'^image="([^"]*)"', containerenv, re.M)
            image = image or (m.group(1) if m else None)
        if environ.get("KUBERNETES_SERVICE_HOST"):
            runtime, evidence = "kubernetes", [*evidence, "KUBERNETES_SERVICE_HOST"]
        cgroup = _read("/proc/1/cgroup") or ""
        if runtime is None:
            for marker, name in (
                ("kubepods", "kubernetes"),
                ("docker", "docker"),
                ("libpod", "podman"),
                ("containerd", "containerd"),
                ("lxc", "lxc"),
            ):
                if marker in cgroup:
                    runtime, evidence = name, [*evidence, f"/proc/1/cgroup mentions {marker}"]
                    break
        label = _read("/etc/cudalab/image.json")
        return (
            True,
            {
                "runtime": runtime,
                "evidence": evidence,
                "image": image,
                # A digest is only known after the image is pushed; the runtime or the user passes it in.
                "image_digest": environ.get("CUDALAB_IMAGE_DIGEST") or image_id,
                "image_label": label.strip() if label else None,
            },
            None,
        )

    return _timed(
        "container",
        "/.dockerenv, /run/.containerenv, /proc/1/cgroup, KUBERNETES_SERVICE_HOST, CUDALAB_IMAGE[_DIGEST]",
        run,
    )


def probe_pci() -> Probe:
    def run() -> tuple[bool, Any, str | None]:
        root = Path("/sys/bus/pci/devices")
        if not root.is_dir():
            return False, None, "/sys/bus/pci/devices is not readable"
        gpus: list[dict[str, str | None]] = []
        nvswitches: list[dict[str, str | None]] = []
        for dev in sorted(root.iterdir()):
            if (_read(dev / "vendor") or "").strip() != NVIDIA_PCI_VENDOR:
                continue
            cls = (_read(dev / "class") or "").strip()[:6]
            entry: dict[str, str | None] = {
                "address": dev.name,
                "device_id": (_read(dev / "device") or "").strip(),
                "class": cls,
            }
            driver_link = dev / "driver"
            entry["kernel_driver"] = driver_link.resolve().name if driver_link.exists() else None
            if cls in GPU_PCI_CLASSES:
                gpus.append(entry)
            elif cls == NVSWITCH_PCI_CLASS:
                nvswitches.append(entry)
        return True, {"gpus": gpus, "nvswitches": nvswitches}, None

    return _timed("pci", "/sys/bus/pci/devices/*/{vendor,class}", run)


# --------------------------------------------------------------------------------------------------
# kernel driver, device nodes, user-space driver, NVML
# --------------------------------------------------------------------------------------------------

_DRIVER_RE = re.compile(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+\.\d+(?:\.\d+)?)")


def probe_driver() -> Probe:
    def run() -> tuple[bool, Any, str | None]:
        text = _read("/proc/driver/nvidia/version")
        if text is None:
            return (
                False,
                None,
                "/proc/driver/nvidia/version is absent: no NVIDIA kernel module is loaded here",
            )
        first = text.splitlines()[0] if text else ""
        m = _DRIVER_RE.search(first)
        version = m.group(1) if m else (_read("/sys/module/nvidia/version") or "").strip() or None
        return (
            True,
            {"version": version, "open_kernel_module": "Open Kernel Module" in first, "text": first},
            None,
        )

    return _timed("driver", "/proc/driver/nvidia/version", run)


def probe_device_nodes() -> Probe:
    def run() -> tuple[bool, Any, str | None]:
        nodes = sorted(glob.glob("/dev/nvidia*"))
        gpus = [n for n in nodes if re.fullmatch(r"/dev/nvidia\d+", n)]
        value = {
            "nodes": nodes,
            "gpus": gpus,
            "nvidiactl": "/dev/nvidiactl" in nodes,
            "uvm": "/dev/nvidia-uvm" in nodes,
            "nvswitches": [n for n in nodes if n.startswith("/dev/nvidia-nvswitch")],
            "mig_caps": Path("/dev/nvidia-caps").is_dir(),
        }
        ok = bool(gpus) and "/dev/nvidiactl" in nodes
        return ok, value, None if ok else "no /dev/nvidia<N> with /dev/nvidiactl"

    return _timed("device_nodes", "glob /dev/nvidia*", run)


def _loaded_libraries() -> list[str]:
    """Paths of shared objects mapped into this process (Linux /proc/self/maps)."""
    maps = _read("/proc/self/maps") or ""
    return sorted({line.split(maxsplit=5)[-1] for line in maps.splitlines() if ".so" in line and "/" in line})


def _loaded_by_family(paths: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for family, pattern in CUDA_LIB_FAMILIES.items():
        stem = pattern.rstrip("*")
        hits = [p for p in paths if Path(p).name.startswith(stem)]
        if hits:
            out[family] = hits
    return out


def probe_libcuda() -> Probe:
    """Load the user-space driver and call ``cuInit``: its status code names most broken setups."""

    def run() -> tuple[bool, Any, str | None]:
        try:
            lib = ctypes.CDLL("libcuda.so.1")
        except OSError as exc:
            return False, None, str(exc)
        path = next((p for p in _loaded_libraries() if Path(p).name.startswith("libcuda.so")), None)
        real = os.path.realpath(path) if path else None
        file_version = None
        if real:
            m = re.search(r"libcuda\.so\.(\d+\.\d+(?:\.\d+)?)$", real)
            file_version = m.group(1) if m else None
        code = int(lib.cuInit(0))
        name_p = ctypes.c_char_p()
        lib.cuGetErrorName(code, ctypes.byref(name_p))
        name = name_p.value.decode() if name_p.value else str(code)
        drv = ctypes.c_int(0)
        lib.cuDriverGetVersion(ctypes.byref(drv))
        count = ctypes.c_int(0)
        if code == 0:
            lib.cuDeviceGetCount(ctypes.byref(count))
        value = {
            "path": path,
            "realpath": real,
            "file_version": file_version,
            "forward_compat": bool(real and "/compat/" in real),
            "cu_init": code,
            "cu_init_name": name,
            "driver_cuda": cuda_version_from_int(drv.value),
            "device_count": count.value,
        }
        return code == 0, value, None if code == 0 else f"cuInit returned {code} ({name})"

    return _timed("libcuda", "ctypes: libcuda.so.1 cuInit(0), cuDriverGetVersion", run)


def probe_nvml() -> Probe:
    def run() -> tuple[bool, Any, str | None]:
        try:
            import pynvml
        except ImportError as exc:
            return False, None, f"nvidia-ml-py is not installed ({exc})"
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            return False, None, str(exc)
        try:
            value: dict[str, Any] = {
                "driver_version": _s(pynvml.nvmlSystemGetDriverVersion()),
                "nvml_version": _s(pynvml.nvmlSystemGetNVMLVersion()),
                "driver_cuda": cuda_version_from_int(pynvml.nvmlSystemGetCudaDriverVersion()),
            }
            count = pynvml.nvmlDeviceGetCount()
            value["gpus"] = [_nvml_gpu(pynvml, i) for i in range(count)]
        except pynvml.NVMLError as exc:
            return False, None, str(exc)
        finally:
            with contextlib.suppress(pynvml.NVMLError):
                pynvml.nvmlShutdown()
        errors = [g["error"] for g in value["gpus"] if g.get("error")]
        return not errors, value, errors[0] if errors else None

    return _timed("nvml", "nvidia-ml-py: nvmlInit, nvmlDeviceGet*", run)


def _nvml_gpu(pynvml: Any, index: int) -> dict[str, Any]:
    """One GPU as NVML sees it; a failing query leaves ``error`` (e.g. ``"Unknown Error"``)."""
    gpu: dict[str, Any] = {"index": index}
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        gpu["name"] = _s(pynvml.nvmlDeviceGetName(h))
        gpu["uuid"] = _s(pynvml.nvmlDeviceGetUUID(h))
        gpu["pci_bus_id"] = _s(pynvml.nvmlDeviceGetPciInfo(h).busId)
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
        gpu["compute_capability"] = [int(major), int(minor)]
        mem = pynvml.nvmlDeviceGetMemoryInfo(h)
        gpu["memory_total_bytes"] = int(mem.total)
        gpu["memory_used_bytes"] = int(mem.used)
    except pynvml.NVMLError as exc:
        gpu["error"] = str(exc)
        return gpu
    # Optional queries: not every GPU supports them; absence is not an error.
    try:
        current, pending = pynvml.nvmlDeviceGetMigMode(h)
        gpu["mig"] = {"current": bool(current), "pending": bool(pending)}
        if current:
            instances = []
            for j in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(h)):
                try:
                    mh = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(h, j)
                    instances.append(_s(pynvml.nvmlDeviceGetUUID(mh)))
                except pynvml.NVMLError:
                    continue
            gpu["mig"]["instances"] = instances
    except pynvml.NVMLError:
        gpu["mig"] = None
    try:
        gpu["pcie_max"] = {
            "generation": int(pynvml.nvmlDeviceGetMaxPcieLinkGeneration(h)),
            "width": int(pynvml.nvmlDeviceGetMaxPcieLinkWidth(h)),
        }
    except pynvml.NVMLError:
        gpu["pcie_max"] = None
    return gpu


# --------------------------------------------------------------------------------------------------
# environment variables, /dev/shm, installed wheels, LD_LIBRARY_PATH
# --------------------------------------------------------------------------------------------------


def probe_visible_devices(environ: Mapping[str, str]) -> Probe:
    keys = (
        "CUDA_VISIBLE_DEVICES",
        "NVIDIA_VISIBLE_DEVICES",
        "CUDA_DEVICE_ORDER",
        "NVIDIA_DRIVER_CAPABILITIES",
    )
    return _timed("visible_devices", "environment", lambda: (True, {k: environ.get(k) for k in keys}, None))


def probe_shm() -> Probe:
    def run() -> tuple[bool, Any, str | None]:
        try:
            st = os.statvfs("/dev/shm")
        except OSError as exc:
            return False, None, f"/dev/shm: {exc.strerror}"
        return True, {"total_bytes": st.f_blocks * st.f_frsize, "free_bytes": st.f_bavail * st.f_frsize}, None

    return _timed("shm", "os.statvfs('/dev/shm')", run)


def probe_compilers(environ: Mapping[str, str]) -> Probe:
    """The C and C++ compilers Triton and torch.compile would find (``CC``/``CXX``, else the usual
    names on PATH), and whether Triton is installed (found, not imported)."""

    def run() -> tuple[bool, Any, str | None]:
        import importlib.util
        import shutil

        def first(var: str, names: tuple[str, ...]) -> str | None:
            given = environ.get(var)
            if given:
                return shutil.which(given) or (given if os.access(given, os.X_OK) else None)
            return next((found for n in names if (found := shutil.which(n))), None)

        return (
            True,
            {
                "cc": first("CC", ("cc", "gcc", "clang")),
                "cxx": first("CXX", ("c++", "g++", "clang++")),
                "triton": importlib.util.find_spec("triton") is not None,
            },
            None,
        )

    return _timed("compilers", "CC/CXX, PATH; importlib.util.find_spec('triton')", run)


def wheel_cuda_major(name: str, version: str) -> int | None:
    """CUDA major a ``nvidia-*`` wheel belongs to: from a ``-cuNN`` suffix, else from the version of the
    toolkit components whose version tracks CUDA's (``nvidia-cublas 13.1`` -> 13); None otherwise."""
    m = re.search(r"-cu(\d+)$", name)
    if m:
        return int(m.group(1))
    if name in _CUDA_TRACKING_WHEELS:
        major = re.match(r"(\d+)", version)
        return int(major.group(1)) if major else None
    return None


def probe_nvidia_wheels() -> Probe:
    def run() -> tuple[bool, Any, str | None]:
        wheels = []
        for dist in importlib.metadata.distributions():
            name = (dist.metadata["Name"] or "").lower().replace("_", "-")
            if name.startswith("nvidia-") and name != "nvidia-ml-py":
                wheels.append(
                    {
                        "name": name,
                        "version": dist.version,
                        "cuda_major": wheel_cuda_major(name, dist.version),
                    }
                )
        wheels.sort(key=lambda w: str(w["name"]))
        majors = sorted({w["cuda_major"] for w in wheels if w["cuda_major"] is not None})
        return True, {"wheels": wheels, "cuda_majors": majors}, None

    return _timed("nvidia_wheels", "importlib.metadata.distributions()", run)


def probe_ld_library_path(environ: Mapping[str, str]) -> Probe:
    def run() -> tuple[bool, Any, str | None]:
        raw = environ.get("LD_LIBRARY_PATH")
        entries = []
        for d in (raw or "").split(":"):
            if not d:
                continue
            libs: dict[str, list[str]] = {}
            if Path(d).is_dir():
                for family, pattern in CUDA_LIB_FAMILIES.items():
                    hits = sorted(Path(p).name for p in glob.glob(str(Path(d) / pattern)))
                    if hits:
                        libs[family] = hits
            entries.append({"dir": d, "exists": Path(d).is_dir(), "cuda_libs": libs})
        return True, {"raw": raw, "entries": entries}, None

    return _timed("ld_library_path", "LD_LIBRARY_PATH, glob of CUDA libraries in each entry", run)


# --------------------------------------------------------------------------------------------------
# PyTorch
# --------------------------------------------------------------------------------------------------

_VERSION_PY_RE = {
    "version": re.compile(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", re.M),
    "cuda": re.compile(r"^cuda\s*(?::[^=]*)?=\s*(?:['\"]([^'\"]+)['\"]|None)", re.M),
    "hip": re.compile(r"^hip\s*(?::[^=]*)?=\s*(?:['\"]([^'\"]+)['\"]|None)", re.M),
    "git_version": re.compile(r"^git_version\s*=\s*['\"]([^'\"]+)['\"]", re.M),
}


def probe_torch_static() -> Probe:
    """The torch build read from ``torch/version.py`` without importing torch (milliseconds, not seconds)."""

    def run() -> tuple[bool, Any, str | None]:
        spec = importlib.util.find_spec("torch")
        if spec is None or not spec.submodule_search_locations:
            return False, {"imported": False}, "No module named 'torch'"
        pkg = Path(next(iter(spec.submodule_search_locations)))
        text = _read(pkg / "version.py")
        if text is None:
            return False, {"imported": False, "path": str(pkg)}, f"{pkg}/version.py is unreadable"
        value: dict[str, Any] = {"imported": False, "path": str(pkg)}
        for key, rx in _VERSION_PY_RE.items():
            m = rx.search(text)
            value[key] = m.group(1) if m else None
        return True, value, None

    return _timed("torch", "torch/version.py read without importing (no GPU here to test)", run)


def probe_torch_import() -> Probe:
    """Import torch and ask it what it was built for and which CUDA libraries it really loaded."""

    def run() -> tuple[bool, Any, str | None]:
        t0 = time.perf_counter()
        try:
            import torch
        except (ImportError, OSError) as exc:
            tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
            return False, {"imported": False, "exception": exc.__class__.__name__}, tb
        value: dict[str, Any] = {
            "imported": True,
            "import_s": time.perf_counter() - t0,
            "path": str(Path(torch.__file__).parent),
            "version": torch.__version__,
            "cuda": torch.version.cuda,
            "hip": getattr(torch.version, "hip", None),
            "git_version": getattr(torch.version, "git_version", None),
        }
        cuda_build = torch.version.cuda is not None
        value["arch_list"] = torch.cuda.get_arch_list() if cuda_build else []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            available = bool(torch.cuda.is_available())
        value["cuda_available"] = available
        value["cuda_warnings"] = [str(w.message).strip() for w in caught]
        value["cuda_error"] = None
        if cuda_build and not available:
            try:
                torch.cuda.init()
            except Exception as exc:  # the message is the diagnosis, e.g. "driver too old (found 11040)"
                value["cuda_error"] = str(exc).strip()
        value["devices"] = []
        if available:
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                value["devices"].append(
                    {
                        "index": i,
                        "name": p.name,
                        "compute_capability": [p.major, p.minor],
                        "memory_total_bytes": int(p.total_memory),
                        "multiprocessors": int(p.multi_processor_count),
                    }
                )
        try:
            value["cudnn"] = torch.backends.cudnn.version() if cuda_build else None
        except Exception as exc:
            value["cudnn"], value["cudnn_error"] = None, f"{exc.__class__.__name__}: {exc}"
        try:
            nccl = torch.cuda.nccl.version() if cuda_build else None
            value["nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl
        except Exception as exc:
            value["nccl"], value["nccl_error"] = None, f"{exc.__class__.__name__}: {exc}"
        value["loaded_libs"] = _loaded_by_family(_loaded_libraries())
        return True, value, value["cuda_error"]

    return _timed(
        "torch", "import torch; torch.version, torch.cuda, torch.backends.cudnn, /proc/self/maps", run
    )


# --------------------------------------------------------------------------------------------------
# collection
# --------------------------------------------------------------------------------------------------


def gpu_evidence(probes: Mapping[str, Probe]) -> bool:
    """Any sign of an NVIDIA GPU: a PCI device, a kernel driver, device nodes, or a loadable libcuda."""
    pci = probes.get("pci")
    return bool(
        (pci is not None and pci.get("gpus"))
        or (probes["driver"].ok if "driver" in probes else False)
        or (probes["device_nodes"].get("gpus") if "device_nodes" in probes else False)
        or (probes["libcuda"].ok if "libcuda" in probes else False)
    )


def collect(import_torch: bool | None = None, environ: Mapping[str, str] | None = None) -> Facts:
    """Run every probe on this machine, in stack order.

    Parameters
    ----------
    import_torch
        True: import torch; False: read its build only; None (default): import it when there is any sign
        of an NVIDIA GPU, since only then can the import tell more than ``torch/version.py``.
    environ
        The environment to judge (``os.environ`` by default); injectable for tests.
    """
    env = os.environ if environ is None else environ
    t0 = time.perf_counter()
    probes: dict[str, Probe] = {}
    for p in (
        probe_os(),
        probe_container(env),
        probe_pci(),
        probe_driver(),
        probe_device_nodes(),
        probe_libcuda(),
        probe_nvml(),
        probe_visible_devices(env),
        probe_shm(),
        probe_compilers(env),
        probe_nvidia_wheels(),
        probe_ld_library_path(env),
    ):
        probes[p.name] = p
    do_import = gpu_evidence(probes) if import_torch is None else import_torch
    probes["torch"] = probe_torch_import() if do_import else probe_torch_static()
    meta = {
        "collected_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "hostname": probes["os"].get("hostname"),
        "collect_s": time.perf_counter() - t0,
        "torch_imported": do_import,
    }
    return Facts(probes=probes, meta=meta)
