"""The image's rules, read from docker/Dockerfile and docker/compose.yaml, and the image itself.

No Docker engine runs on the development machines, so the rules are checked on the files (and by
hadolint where it is installed); where `docker info` succeeds, the last test builds the image and runs
the lab's security checks (tests/lab/checks.py) against a container of it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from cudalab.env import cuda_compat
from tests.lab import checks
from tests.lab.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "Dockerfile"
COMPOSE = REPO / "docker" / "compose.yaml"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
TORCH_PIN = next(
    line.split("==")[1]
    for line in (REPO / "constraints.txt").read_text().splitlines()
    if line.startswith("torch==")
)


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def args_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    return dict(a.split("=", 1) for kind, a in stage if kind == "ARG" and "=" in a)


def test_the_base_is_debian_slim_and_make_base_image_makes_it() -> None:
    top = dict(a.split("=", 1) for kind, a in instructions() if kind == "ARG" and "=" in a)
    assert top["BASE"] == "debian:bookworm-slim"
    assert all(a.startswith("${BASE}") for kind, a in instructions() if kind == "FROM")
    makefile = (REPO / "Makefile").read_text()
    assert "BASE_IMAGE  ?= docker.io/library/debian:bookworm-slim" in makefile
    assert "mmdebstrap --quiet --variant=minbase" in makefile and " bookworm - " in makefile
    # the image's Python is Debian's python3, the version constraints.txt is resolved with
    assert "--python-version 3.11.2" in makefile  # bookworm's, not the newest 3.11


def test_build_args_match_the_venv_and_the_doctor() -> None:
    build, final = stages()
    for stage in (build, final):
        assert args_of(stage)["TORCH_VERSION"] == TORCH_PIN, "the image's torch defaults to the venv's pin"
        assert args_of(stage)["CUDA_VARIANT"] in cuda_compat.IMAGE_VARIANTS
    assert args_of(final)["CUDALAB_VERSION"] == VERSION
    case = next(a for kind, a in build if kind == "RUN" and "case" in a)
    assert re.search(r"case \"\$\{CUDA_VARIANT\}\" in ([\w|]+)\)", case)[1].split("|") == sorted(  # type: ignore[index]
        cuda_compat.IMAGE_VARIANTS
    )


def test_the_stack_is_installed_through_the_venvs_constraints() -> None:
    build = stages()[0]
    runs = " ".join(a for kind, a in build if kind == "RUN")
    assert ("COPY", "constraints.txt /tmp/constraints.txt") in build
    assert (
        'sed -E "s/^torch==.*/torch==${TORCH_VERSION}/" /tmp/constraints.txt > /opt/venv/constraints.txt'
        in runs
    )
    assert '--index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"' in runs
    assert args_of(build)["TORCH_INDEX"] == "https://download.pytorch.org/whl/${CUDA_VARIANT}"
    assert "torch.version.cuda == want" in runs, "the build refuses a torch of another CUDA"
    assert 'pip install -c /opt/venv/constraints.txt "/src/cudalab[${EXTRAS},lab]"' in runs
    makefile = (REPO / "Makefile").read_text()
    assert "PIP    := $(BIN)/python -m pip install -q -c constraints.txt" in makefile


def test_runs_as_uid_1000_under_tini_with_a_healthcheck() -> None:
    final = stages()[1]
    users = [a for kind, a in final if kind == "USER"]
    assert users and users[-1] == "${LAB_UID}:${LAB_UID}" and args_of(final)["LAB_UID"] == "1000"
    entry = json.loads(next(a for kind, a in final if kind == "ENTRYPOINT"))
    assert entry[:2] == ["/usr/bin/tini", "--"]
    health = next(a for kind, a in final if kind == "HEALTHCHECK")
    assert "CMD" in health and '"cudalab", "lab", "status"' in health
    cmd = json.loads(next(a for kind, a in final if kind == "CMD"))
    assert cmd[:3] == ["cudalab", "lab", "up"]
    labels = " ".join(a for kind, a in final if kind == "LABEL")
    for label in ("org.opencontainers.image.version", "io.cudalab.torch.version", "io.cudalab.cuda.variant"):
        assert label in labels
    env = " ".join(a for kind, a in final if kind == "ENV")
    assert "NVIDIA_VISIBLE_DEVICES=all" in env and "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in env


def test_no_secret_or_host_key_in_any_layer() -> None:
    ins = instructions()
    for kind, a in ins:
        if kind in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"(TOKEN|PASSWORD|SECRET|PRIVATE)\w*=", a, re.IGNORECASE), a
        if kind in ("COPY", "ADD"):
            assert not re.search(r"id_(rsa|ed25519|ecdsa)|\.pem\b|ssh_host|authorized_keys|token", a), a
        if kind == "RUN" and "openssh-server" in a:
            assert "rm -f /etc/ssh/ssh_host_*" in a, "host keys made by the package die in the same layer"
        if kind == "RUN" and "pip install" in a:  # a proxy's CA reaches pip as a secret mount only
            assert (
                a.startswith("--mount=type=secret,id=ca_bundle") and "PIP_CERT=/run/secrets/ca_bundle" in a
            ), a
    ignore = (REPO / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") if "*" in ignore else 0] == "*", "the build context is an allow-list"
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "constraints.txt", "src/", "docker/"}


def test_entrypoint_prints_the_verdict_then_runs_the_command() -> None:
    text = (REPO / "docker" / "entrypoint.sh").read_text()
    assert "cudalab doctor --banner || true" in text
    assert text.rstrip().endswith('exec "$@"')
    assert subprocess.run(["sh", "-n", str(REPO / "docker" / "entrypoint.sh")]).returncode == 0


def test_hadolint_finds_nothing() -> None:
    beside = Path(sys.executable).parent / "hadolint"  # the venv's, when the venv is not activated
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (dev extra, x86_64 Linux)")
    proc = subprocess.run(
        [hadolint, "--config", str(REPO / ".hadolint.yaml"), str(DOCKERFILE)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _compose() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_reserves_gpus_and_persists_state() -> None:
    lab = _compose()["services"]["lab"]
    tag = f"cudalab:{VERSION}-torch{'.'.join(TORCH_PIN.split('.')[:2])}-cu128"
    assert lab["image"] == "${CUDALAB_IMAGE:-" + tag + "}", "the default tag is the one `make image` builds"
    devices = lab["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "${GPU_COUNT:-all}", "capabilities": ["gpu"]}]
    assert set(lab["deploy"]["resources"]["limits"]) >= {"memory", "cpus"} and "pids_limit" in lab
    assert all(p.startswith("${CUDALAB_BIND:-127.0.0.1}:") for p in lab["ports"]), "loopback unless told"
    targets = {re.sub(r"\$\{[^}]*\}", "", v).split(":")[1] for v in lab["volumes"]}
    assert targets == {"/workspace", "/data", "/var/lib/cudalab"}
    env = " ".join(a for kind, a in instructions() if kind == "ENV")
    assert "CUDALAB_STATE_DIR=/var/lib/cudalab" in env, "the state volume is where the lab keeps its state"
    assert lab["shm_size"].startswith("${SHM_SIZE:-") and lab["ulimits"]["memlock"] == -1
    assert {"JUPYTER_TOKEN", "CUDALAB_AUTHORIZED_KEYS"} <= set(lab["environment"])
    assert "no-new-privileges:true" in lab["security_opt"] and lab["cap_drop"] == ["ALL"]


_VARIABLE = re.compile(r"\$(?:\$|\{(\w+)(?:(:?-)([^}]*))?\})")


def _interpolate(node: object, env: dict[str, str]) -> object:
    """Compose's variable substitution: ``${V}``, ``${V:-default}`` (unset or empty), ``${V-default}``
    (unset), ``$$`` for a literal dollar, applied to every string of the file."""

    def one(match: re.Match[str]) -> str:
        name, op, default = match.groups()
        if name is None:
            return "$"
        value = env.get(name)
        if (op == ":-" and not value) or (op == "-" and value is None):
            return default
        return value or ""

    if isinstance(node, str):
        return _VARIABLE.sub(one, node)
    if isinstance(node, dict):
        return {k: _interpolate(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, env) for v in node]
    return node


class _Override(list):
    """A sequence tagged ``!override``: it replaces the base file's instead of extending it."""


def _load_compose(path: Path) -> dict:
    yaml = pytest.importorskip("yaml")

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor(
        "!override", lambda loader, node: _Override(loader.construct_sequence(node, deep=True))
    )
    return yaml.load(path.read_text(), Loader=Loader)


def _merge(base: object, overlay: object) -> object:
    """An overlay file merged onto a base as ``docker compose -f base -f overlay`` merges them."""
    if isinstance(overlay, _Override):
        return list(overlay)
    if isinstance(base, dict) and isinstance(overlay, dict):
        return {k: _merge(base[k], overlay[k]) if k in base and k in overlay else {**base, **overlay}[k]
                for k in {**base, **overlay}}  # fmt: skip
    if isinstance(base, list) and isinstance(overlay, list):
        return base + overlay
    return overlay


@pytest.mark.parametrize(
    "overlay, env",
    [
        (None, {}),
        (None, {"GPU_COUNT": "2", "MEM_LIMIT": "64g", "CPU_LIMIT": "16", "CUDALAB_BIND": "0.0.0.0"}),
        ("compose.gpus.yaml", {"GPU_IDS": "0,1"}),
    ],
)
def test_compose_files_are_valid_under_the_compose_specification(overlay: str | None, env: dict) -> None:
    """Both compose files, merged and interpolated as the engine does, validate against the Compose
    Specification's own JSON schema (tests/lab/data/compose-spec.json, the schema docker compose
    embeds), so the limits and the GPU reservation are ones an engine accepts, not merely YAML."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((REPO / "tests" / "lab" / "data" / "compose-spec.json").read_text())
    doc = _load_compose(COMPOSE)
    if overlay is not None:
        doc = _merge(doc, _load_compose(COMPOSE.parent / overlay))
    doc = _interpolate(doc, env)
    jsonschema.Draft7Validator(schema).validate(doc)
    lab = doc["services"]["lab"]
    devices = lab["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1 and devices[0]["capabilities"] == ["gpu"]
    if overlay is None:
        assert devices[0]["count"] == env.get("GPU_COUNT", "all") and "device_ids" not in devices[0]
    else:
        assert devices[0]["device_ids"] == ["0,1"] and "count" not in devices[0], "!override replaces"
    limits = lab["deploy"]["resources"]["limits"]
    assert (limits["memory"], limits["cpus"]) == (env.get("MEM_LIMIT", "0"), env.get("CPU_LIMIT", "0"))
    # A schema that accepts anything would pass the above: it must refuse a mistyped reservation.
    broken = json.loads(json.dumps(doc))
    broken["services"]["lab"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] = "gpu"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(broken)


def test_the_docs_name_each_variant_and_its_minimum_driver() -> None:
    docs = (REPO / "docs" / "lab.md").read_text()
    for variant in cuda_compat.IMAGE_VARIANTS:
        major, minor = cuda_compat.cuda_of_variant(variant)
        driver = cuda_compat.MIN_DRIVER[(major, minor)]
        assert re.search(rf"{variant}\b.*{re.escape(driver)}", docs), (
            f"docs/lab.md: {variant} needs >= {driver}"
        )
        assert variant in (REPO / "README.md").read_text()


def _engine() -> tuple[list[str], str]:
    """The engine command (``CUDALAB_TEST_ENGINE``, e.g. "podman --runtime runc --cgroup-manager
    cgroupfs", else docker) and the built image to test (``CUDALAB_TEST_IMAGE``); skips without them."""
    import os
    import shlex

    image = os.environ.get("CUDALAB_TEST_IMAGE")
    if not image:
        pytest.skip("needs a built image: make image-test (sets CUDALAB_TEST_IMAGE)")
    engine = shlex.split(os.environ.get("CUDALAB_TEST_ENGINE", "docker"))
    if shutil.which(engine[0]) is None:
        pytest.skip(f"no {engine[0]} here")
    return engine, image


def _tiny_wheel(folder: Path) -> Path:
    """A pure-Python wheel, built by hand (no index, no build backend): what a user might pip install."""
    import base64
    import hashlib
    import zipfile

    files = {
        "cudalab_probe_pkg/__init__.py": b"VALUE = 42\n",
        "cudalab_probe_pkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: cudalab-probe-pkg\nVersion: 1.0\n",
        "cudalab_probe_pkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = (
        "".join(
            f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
            for name, data in files.items()
        )
        + "cudalab_probe_pkg-1.0.dist-info/RECORD,,\n"
    )
    path = folder / "cudalab_probe_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("cudalab_probe_pkg-1.0.dist-info/RECORD", record)
    return path


@pytest.mark.image
def test_the_built_image_passes_the_same_checks(
    tmp_path: Path, ssh_tools: dict[str, str], client_key: Path
) -> None:
    engine, tag = _engine()

    def sh(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*engine, *args], capture_output=True, text=True, timeout=timeout)

    workspace = tmp_path / "workspace"
    workspace.mkdir()
    workspace.chmod(0o777)  # the lab user (uid 1000) writes here
    jport, sport = free_port(), free_port()
    name = f"cudalab-test-{jport}"
    run = sh("run", "-d", "--name", name, "-p", f"127.0.0.1:{jport}:8888", "-p", f"127.0.0.1:{sport}:2222",
             "-v", f"{workspace}:/workspace", "-e",
             f"CUDALAB_AUTHORIZED_KEYS={client_key.with_suffix('.pub').read_text().strip()}", tag)  # fmt: skip
    assert run.returncode == 0, run.stderr
    try:
        # the HEALTHCHECK: Docker runs it on its own; Podman without systemd runs it when asked
        deadline = time.monotonic() + 180
        healthy = False
        while time.monotonic() < deadline and not healthy:
            time.sleep(3)
            if engine[0] == "podman":
                healthy = sh("healthcheck", "run", name).returncode == 0
            else:
                healthy = sh("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip() == "healthy"
        logs = sh("logs", name)
        assert healthy, logs.stdout + logs.stderr
        assert "cudalab doctor" in logs.stdout + logs.stderr, "the entrypoint prints the doctor's verdict"
        token = sh("exec", name, "cat", "/var/lib/cudalab/jupyter_token").stdout.strip()
        base = f"http://127.0.0.1:{jport}"
        for path in ("/api", "/api/contents", "/api/kernels", "/api/terminals"):
            assert checks.denied_without_token(base, path).status == 403, path
        assert checks.denied_without_token(base, "/lab").status in (302, 403)
        assert checks.http(base + "/lab", token=token).status == 200
        ok = checks.ssh_key_login("127.0.0.1", sport, "cudalab", client_key)
        assert ok.rc == 0 and ok.out == "cudalab", ok
        assert checks.refused_offering_publickey_only(checks.ssh_root_login("127.0.0.1", sport, client_key))
        assert checks.refused_offering_publickey_only(
            checks.ssh_password_login("127.0.0.1", sport, "cudalab")
        )
        assert sh("exec", name, "id", "-u").stdout.strip() == "1000"
        # the main job runs inside and writes to the mounted folder, which outlives a restart
        demo = sh("exec", name, "cudalab", "radio", "demo", "--out", "/workspace/demo", timeout=900)
        assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
        assert sh("restart", name).returncode == 0
        assert (workspace / "demo" / "search" / "report.html").is_file()
        # the lab user installs a package, and the environment records it as drift from the pins
        wheel = _tiny_wheel(tmp_path)
        assert sh("cp", str(wheel), f"{name}:/tmp/{wheel.name}").returncode == 0
        pip = sh("exec", name, "python", "-m", "pip", "install", "--no-index", f"/tmp/{wheel.name}")
        assert pip.returncode == 0, pip.stderr[-2000:]
        env = json.loads(sh("exec", name, "cudalab", "env", "--no-packages").stdout)
        assert "cudalab-probe-pkg==1.0" in env["pinned"]["added"], env["pinned"]
        # the compiler torch.compile (and Triton) need is there
        compiled = sh("exec", name, "python", "-c",
                      "import torch; f = torch.compile(lambda x: torch.sin(x) * 2 + 1); "
                      "x = torch.rand(64); assert torch.allclose(f(x), torch.sin(x) * 2 + 1); print('compiled')",
                      timeout=900)  # fmt: skip
        assert compiled.returncode == 0 and "compiled" in compiled.stdout, compiled.stderr[-3000:]
        doctor = sh("exec", name, "cudalab", "doctor", "--json")
        findings = {f["check"]: f for f in json.loads(doctor.stdout)["findings"]}
        assert findings["compiler"]["status"] == "pass"
        # nothing secret in the image: no host key, no build secret
        keys = sh("run", "--rm", "--entrypoint", "sh", tag, "-c",
                  "ls /etc/ssh/ssh_host_* /run/secrets/ca_bundle 2>/dev/null | wc -l; env | grep -c PIP_CERT")  # fmt: skip
        assert keys.stdout.split() == ["0", "0"], keys.stdout
    finally:
        sh("rm", "-f", name)


def test_the_venv_takes_a_torch_variant_from_pytorchs_index(tmp_path: Path) -> None:
    """``make demo TORCH_VARIANT=cu128`` installs the pinned torch from PyTorch's index (checked with
    ``make -n``: this machine reaches no such index), PyPI's by default, and refuses an unknown one
    before making anything."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make here")
    venv = tmp_path / "venv"

    def plan(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([make, "-n", "-C", str(REPO), f"VENV={venv}", "demo", *args], capture_output=True,
                              text=True, check=False)  # fmt: skip

    cu = plan("TORCH_VARIANT=cu128").stdout
    assert f"--index-url https://download.pytorch.org/whl/cu128 torch=={TORCH_PIN}" in cu
    assert "download.pytorch.org" not in plan().stdout
    bad = plan("TORCH_VARIANT=cu999")  # refused when the Makefile is read: nothing is made
    assert bad.returncode != 0 and "TORCH_VARIANT must be cpu, cu126, cu128 or cu130" in bad.stderr
    assert not venv.exists()
