"""The deployment bundles (`make bundle`): what Terraform deploys is what runs.

Every `dist/<function>.zip` is unpacked into a clean virtualenv of the deploy runtime's
Python (3.12 when this machine has it), gets exactly its own `requirements.txt`, and is
started under `functions-framework` with its target and signature type, from the unpacked
folder and with a minimal environment, as Cloud Functions would. It must then answer:
`/healthz` for HTTP functions, and a 2xx to a malformed Pub/Sub CloudEvent for event
functions (they acknowledge what they can never understand; see test_function_edges.py).
No emulators: nothing here needs a backend.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from infra import bundle as bundling
from infra.processes import Managed, free_port, http_ok, wait_until
from infra.stack import FUNCTIONS

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NAMES = sorted(name for name, *_ in FUNCTIONS)


def _uv() -> list[str]:
    return bundling.uv_command()


def _python_version(executable: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [executable, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except OSError:
        return None
    if out.returncode != 0:
        return None
    major, minor = out.stdout.split()
    return int(major), int(minor)


def deploy_python() -> str:
    """The interpreter the bundles' venvs get: the deploy runtime's 3.12 if this machine
    has it (BUNDLE_PYTHON overrides), else the one running the tests."""
    if os.environ.get("BUNDLE_PYTHON"):
        return os.environ["BUNDLE_PYTHON"]
    candidates = [shutil.which("python3.12") or ""]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")))
    found = subprocess.run(
        [*_uv(), "python", "find", "--no-python-downloads", "3.12"],
        capture_output=True,
        text=True,
    )
    if found.returncode == 0:
        candidates.append(found.stdout.strip())
    for candidate in filter(None, candidates):
        if _python_version(candidate) == (3, 12):
            return candidate
    return sys.executable


def lock_versions() -> dict[str, set[str]]:
    data = tomllib.loads((ROOT / "uv.lock").read_text())
    versions: dict[str, set[str]] = {}
    for package in data["package"]:
        versions.setdefault(bundling.normalize(package["name"]), set()).add(package["version"])
    return versions


def pins(requirements: str) -> dict[str, str]:
    found = {}
    for line in requirements.splitlines():
        if line.strip() and not line.startswith("#"):
            match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;]+)( ; .+)?", line)
            assert match, f"not an exact pin: {line!r}"
            found[bundling.normalize(match.group(1))] = match.group(2)
    return found


@dataclass
class Built:
    bundle: bundling.Bundle
    zip_path: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Built]:
    out = tmp_path_factory.mktemp("dist")
    return {b.function.name: Built(b, path) for b, path in bundling.build(out)}


def test_there_is_a_bundle_per_function_with_the_stacks_target(built) -> None:
    assert sorted(built) == NAMES
    for name, folder, target, signature in FUNCTIONS:
        function = built[name].bundle.function
        assert (function.folder.name, function.target, function.signature_type) == (
            folder,
            target,
            signature,
        )


def test_each_zip_holds_main_the_package_and_requirements_only(built) -> None:
    package = {
        p.relative_to(bundling.PACKAGE_DIR.parent).as_posix()
        for p in bundling.PACKAGE_DIR.rglob("*.py")
        if "__pycache__" not in p.parts
    }
    for name, item in built.items():
        names = zipfile.ZipFile(item.zip_path).namelist()
        assert names == sorted(names), name
        assert {"main.py", "imagegen/__init__.py", "requirements.txt"} <= set(names), name
        assert package <= set(names), f"{name} lacks {sorted(package - set(names))}"
        for entry in names:
            parts = entry.split("/")
            assert not {"tests", ".venv", "__pycache__"} & set(parts), f"{name}: {entry}"
            assert not entry.endswith((".pyc", ".pyo")), f"{name}: {entry}"
            assert entry in ("main.py", "requirements.txt") or parts[0] == "imagegen", entry


def test_requirements_are_exact_pins_from_the_lock(built) -> None:
    locked = lock_versions()
    for name, item in built.items():
        requirements = zipfile.ZipFile(item.zip_path).read("requirements.txt").decode()
        for dist, version in pins(requirements).items():
            assert version in locked.get(dist, ()), f"{name}: {dist}=={version} not in uv.lock"
        # What the function's code imports is pinned in its requirements.
        assert set(item.bundle.direct) <= set(pins(requirements)), name


def test_each_function_gets_only_what_it_needs(built) -> None:
    direct = {name: set(item.bundle.direct) for name, item in built.items()}
    pinned = {
        name: set(pins(zipfile.ZipFile(item.zip_path).read("requirements.txt").decode()))
        for name, item in built.items()
    }
    # Every function answers through functions-framework and reads Firestore.
    for name in NAMES:
        assert {"functions-framework", "google-cloud-firestore", "pydantic"} <= direct[name]
    # The dead-letter handler only fails a generation in Firestore.
    assert (
        not {
            "fal-client",
            "pillow",
            "google-cloud-storage",
            "google-cloud-pubsub",
            "google-cloud-tasks",
        }
        & pinned["deadletter"]
    )
    # The api publishes, signs image URLs, deletes images and cancels at fal; it never
    # schedules watchdog tasks nor decodes images.
    assert {"google-cloud-pubsub", "google-cloud-storage", "fal-client"} <= direct["api"]
    assert not {"google-cloud-tasks", "pillow"} & pinned["api"]
    # The dispatcher submits to fal and schedules the watchdog; it never touches images.
    assert {"fal-client", "google-cloud-tasks", "google-cloud-storage"} <= direct["dispatcher"]
    assert "pillow" not in pinned["dispatcher"]
    # The webhook copies and thumbnails images but never calls fal.
    assert {"pillow", "google-cloud-storage", "google-cloud-tasks"} <= direct["webhook"]
    assert "fal-client" not in pinned["webhook"]
    # The watchdog asks fal and ingests late results.
    assert {"fal-client", "pillow", "google-cloud-tasks"} <= direct["watchdog"]
    # The cleanup sweep re-publishes stuck generations and deletes objects.
    assert {"google-cloud-pubsub", "google-cloud-storage"} <= direct["cleanup"]
    assert not {"fal-client", "pillow"} & pinned["cleanup"]


def test_bundles_are_byte_identical_when_nothing_changed(built, tmp_path: Path) -> None:
    again = {b.function.name: path for b, path in bundling.build(tmp_path)}
    for name, item in built.items():
        assert again[name].read_bytes() == item.zip_path.read_bytes(), name
    infos = zipfile.ZipFile(built["api"].zip_path).infolist()
    assert {i.date_time for i in infos} == {bundling.ZIP_DATE}


# ---------------------------------------------------------------------------------------
# Unpacked, installed and started


@dataclass
class Installed:
    name: str
    source: Path  # the unpacked zip
    python: Path  # the bundle's own venv
    bundle: bundling.Bundle


def _install(item: Built, root: Path, python: str) -> Installed:
    name = item.bundle.function.name
    source, venv = root / name / "src", root / name / "venv"
    zipfile.ZipFile(item.zip_path).extractall(source)
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)

    def uv(*args: str) -> None:
        subprocess.run([*_uv(), *args], check=True, capture_output=True, text=True, env=env)

    uv("venv", "--quiet", "--python", python, str(venv))
    bin_python = venv / "bin" / "python"
    uv(
        "pip",
        "install",
        "--quiet",
        "--python",
        str(bin_python),
        "-r",
        str(source / "requirements.txt"),
    )
    return Installed(name, source, bin_python, item.bundle)


@pytest.fixture(scope="module")
def installed(built, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Installed]:
    root = tmp_path_factory.mktemp("bundles")
    python = deploy_python()
    print(f"bundle venvs use {python}")
    with ThreadPoolExecutor(max_workers=len(built)) as pool:
        futures = {name: pool.submit(_install, item, root, python) for name, item in built.items()}
        return {name: future.result() for name, future in futures.items()}


def _minimal_env(venv_python: Path) -> dict[str, str]:
    # What Cloud Functions gives a function, locally: no credentials, no emulators (a closed
    # port for Firestore, so any attempt to reach a backend fails fast and loudly).
    return {
        "PATH": f"{venv_python.parent}:/usr/bin:/bin",
        "HOME": str(venv_python.parent.parent),
        "LANG": "C.UTF-8",
        "FIRESTORE_EMULATOR_HOST": "127.0.0.1:9",
        "WEBHOOK_HMAC_KEY": "k" * 32,
    }


@pytest.mark.parametrize("name", NAMES)
def test_bundle_installs_exactly_its_pins_on_the_deploy_python(name, installed) -> None:
    item = installed[name]
    frozen = subprocess.run(
        [*_uv(), "pip", "freeze", "--python", str(item.python)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    wanted = pins((item.source / "requirements.txt").read_text())
    got = pins("\n".join(line for line in frozen.splitlines() if "==" in line))
    # Nothing unpinned was pulled in, and every pin without a marker was installed.
    assert set(got) <= set(wanted), f"installed but not pinned: {set(got) - set(wanted)}"
    assert all(wanted[d] == v for d, v in got.items())
    unconditional = {
        bundling.normalize(line.split("==")[0])
        for line in (item.source / "requirements.txt").read_text().splitlines()
        if "==" in line and ";" not in line
    }
    assert unconditional <= set(got), f"not installed: {unconditional - set(got)}"


@pytest.mark.parametrize("name", NAMES)
def test_every_import_the_function_can_run_works_in_its_bundle(name, installed) -> None:
    """The analysis that chose the requirements also lists every third-party import the
    function's code can execute, lazy ones included: each one must work in the bundle."""
    item = installed[name]
    script = "\n".join(item.bundle.imports)
    result = subprocess.run(
        [str(item.python), "-c", script],
        cwd=item.source,
        env=_minimal_env(item.python),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _pubsub_event_with_garbage() -> tuple[dict[str, str], bytes]:
    event = CloudEvent(
        {
            "type": "google.cloud.pubsub.topic.v1.messagePublished",
            "source": "//pubsub.googleapis.com/projects/p/topics/generation-requests",
        },
        {
            "message": {
                "data": "not base64!",
                "messageId": "1",
                "publishTime": "2026-01-01T00:00:00Z",
            },
            "subscription": "projects/p/subscriptions/s",
        },
    )
    return to_binary(event)


@pytest.mark.parametrize("name", NAMES)
def test_bundle_starts_under_functions_framework_and_answers(
    name, installed, tmp_path: Path
) -> None:
    item = installed[name]
    function = item.bundle.function
    port = free_port()
    managed = Managed(
        name,
        [
            str(item.python.parent / "functions-framework"),
            "--target",
            function.target,
            "--signature-type",
            function.signature_type,
            "--source",
            "main.py",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        _minimal_env(item.python),
        tmp_path / f"{name}.log",
        item.source,
    )
    managed.start()
    try:
        base = f"http://127.0.0.1:{port}"
        if function.signature_type == "http":
            wait_until(lambda: http_ok(f"{base}/healthz"), 60, name, managed)
            with urllib.request.urlopen(f"{base}/healthz", timeout=10) as response:
                assert response.status == 200
                assert response.headers.get_content_type() == "application/json"
                assert b'"ok"' in response.read()
        else:
            headers, body = _pubsub_event_with_garbage()
            request = urllib.request.Request(base + "/", data=body, headers=headers)
            wait_until(lambda: _accepts(request), 60, name, managed)
            assert "dropping malformed" in managed.tail(200), managed.tail()
    finally:
        managed.stop()


def _accepts(request: urllib.request.Request) -> bool:
    """True once the function acknowledged the event (2xx); False while it is starting."""
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return 200 <= response.status < 300
    except urllib.error.HTTPError as exc:
        raise AssertionError(
            f"the event function answered {exc.code}: {exc.read()[:500]!r}"
        ) from None
    except OSError:
        return False


# ---------------------------------------------------------------------------------------
# Compiled as Cloud Functions builds it

# What the buildpacks lifecycle's image export sets every file's mtime to (its
# archive.NormalizedModTime, 1980-01-01 00:00:01 UTC).
EXPORTED_MTIME = 315532801
# `python -v`: "# code object from '<x.pyc>'" (bytecode loaded; quoted) or "# code object
# from <x.py>" (compiled from source; not quoted).
CODE_OBJECT = re.compile(r"^# code object from '?([^'\n]+?)'?$", re.MULTILINE)


def _built_and_exported(item: Installed, into: Path, build_env: dict[str, str]) -> Path:
    """The unpacked bundle after the Python functions-framework buildpack's own step
    (`python3 -m compileall -f -q .` in the source folder, with the build's environment)
    and the image export (every mtime normalised)."""
    folder = into / item.name
    shutil.copytree(item.source, folder)
    env = {**_minimal_env(item.python), **build_env}
    subprocess.run(
        [str(item.python), "-m", "compileall", "-f", "-q", "."], cwd=folder, env=env, check=True
    )
    for path in [folder, *folder.rglob("*")]:
        os.utime(path, (EXPORTED_MTIME, EXPORTED_MTIME))
    return folder


def _own_code_objects(item: Installed, folder: Path) -> list[str]:
    """Where each of the bundle's own modules came from when main.py was imported: its
    `.pyc` or, when the bytecode was refused, its `.py` compiled on the spot."""
    result = subprocess.run(
        [str(item.python), "-v", "-c", "import main"],
        cwd=folder,
        env={**_minimal_env(item.python), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [p for p in CODE_OBJECT.findall(result.stderr) if p.startswith(str(folder))]


@pytest.mark.parametrize("name", NAMES)
def test_the_builds_bytecode_survives_the_image_export(name, installed, tmp_path: Path) -> None:
    """With the build environment Terraform sets, no instance compiles the package again:
    every module main.py imports is loaded from the bytecode the build wrote. Without it,
    the timestamped bytecode no longer matches the exported sources and every one of them
    is compiled from source on each cold start (the reason for the setting)."""
    item = installed[name]
    built = _own_code_objects(item, _built_and_exported(item, tmp_path, bundling.BUILD_ENVIRONMENT))
    assert len(built) > 5, built
    assert [p for p in built if not p.endswith(".pyc")] == []
    unset = _own_code_objects(item, _built_and_exported(item, tmp_path / "unset", {}))
    assert len(unset) == len(built)
    assert [p for p in unset if p.endswith(".pyc")] == []
