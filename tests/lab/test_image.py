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


def test_base_is_slim_python_312() -> None:
    top = dict(a.split("=", 1) for kind, a in instructions() if kind == "ARG" and "=" in a)
    assert top["PYTHON_VERSION"] == "3.12"
    assert top["BASE"].startswith("python:${PYTHON_VERSION}-slim")
    assert all(a.startswith("${BASE}") for kind, a in instructions() if kind == "FROM")


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
    assert '--index-url "https://download.pytorch.org/whl/${CUDA_VARIANT}" "torch==${TORCH_VERSION}"' in runs
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


def test_the_docs_name_each_variant_and_its_minimum_driver() -> None:
    docs = (REPO / "docs" / "lab.md").read_text()
    for variant in cuda_compat.IMAGE_VARIANTS:
        major, minor = cuda_compat.cuda_of_variant(variant)
        driver = cuda_compat.MIN_DRIVER[(major, minor)]
        assert re.search(rf"{variant}\b.*{re.escape(driver)}", docs), (
            f"docs/lab.md: {variant} needs >= {driver}"
        )
        assert variant in (REPO / "README.md").read_text()


def _docker_works() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return "no docker client"
    proc = subprocess.run([docker, "info"], capture_output=True, text=True)
    return None if proc.returncode == 0 else f"docker info fails: {proc.stderr.strip().splitlines()[-1:]}"


@pytest.mark.slow
def test_the_built_image_passes_the_same_checks(
    tmp_path: Path, ssh_tools: dict[str, str], client_key: Path
) -> None:
    why = _docker_works()
    if why:
        pytest.skip(f"needs a Docker engine ({why})")
    tag = f"cudalab:{VERSION}-torch{'.'.join(TORCH_PIN.split('.')[:2])}-cu128-test"
    build = subprocess.run(
        ["docker", "build", "-f", str(DOCKERFILE), "-t", tag, str(REPO)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    jport, sport = free_port(), free_port()
    name = f"cudalab-test-{jport}"
    run = subprocess.run(
        ["docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{jport}:8888", "-p", f"127.0.0.1:{sport}:2222",
         "-e", f"CUDALAB_AUTHORIZED_KEYS={client_key.with_suffix('.pub').read_text().strip()}", tag],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    try:
        deadline = time.monotonic() + 180
        health = ""
        while time.monotonic() < deadline and health != "healthy":
            time.sleep(3)
            health = subprocess.run(
                ["docker", "inspect", "-f", "{{.State.Health.Status}}", name], capture_output=True, text=True
            ).stdout.strip()
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
        assert health == "healthy", logs.stdout + logs.stderr
        assert "cudalab doctor" in logs.stdout, "the entrypoint prints the doctor's verdict"
        token = subprocess.run(
            ["docker", "exec", name, "cat", "/var/lib/cudalab/jupyter_token"], capture_output=True, text=True
        ).stdout.strip()
        base = f"http://127.0.0.1:{jport}"
        assert checks.denied_without_token(base, "/api").status == 403
        assert checks.denied_without_token(base, "/lab").status in (302, 403)
        assert checks.http(base + "/lab", token=token).status == 200
        ok = checks.ssh_key_login("127.0.0.1", sport, "cudalab", client_key)
        assert ok.rc == 0 and ok.out == "cudalab", ok
        assert checks.refused_offering_publickey_only(checks.ssh_root_login("127.0.0.1", sport, client_key))
        assert checks.refused_offering_publickey_only(
            checks.ssh_password_login("127.0.0.1", sport, "cudalab")
        )
        uid = subprocess.run(
            ["docker", "exec", name, "id", "-u"], capture_output=True, text=True
        ).stdout.strip()
        assert uid == "1000"
        keys = subprocess.run(
            ["docker", "run", "--rm", "--entrypoint", "sh", tag, "-c", "ls /etc/ssh/ssh_host_* 2>/dev/null | wc -l"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert keys.stdout.strip() == "0", "no host key in the image"
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        subprocess.run(["docker", "rmi", tag], capture_output=True)
