"""Real packages, a real upstream index (pypiserver) and a real pip, all on loopback."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

HERE = Path(__file__).parent


def make_sdist(out: Path, name: str, version: str) -> Path:
    """A real sdist: PKG-INFO, pyproject.toml naming the in-tree backend, the backend."""
    base = f"{name}-{version}"
    members = {
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        "pyproject.toml": (
            '[build-system]\nrequires = []\nbuild-backend = "tinybackend"\nbackend-path = ["."]\n'
            f'[project]\nname = "{name}"\nversion = "{version}"\n'
        ),
        "tinybackend.py": (HERE / "tinybackend.py").read_text(),
    }
    path = out / f"{base}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for member, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{base}/{member}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def make_wheel(out: Path, name: str, version: str) -> Path:
    """The wheel of that sdist, built by its backend (what `pip wheel` would make)."""
    work = out / f".build-{name}-{version}"
    work.mkdir()
    (work / "PKG-INFO").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    subprocess.run(
        [sys.executable, "-c", f"import tinybackend; tinybackend.build_wheel({str(out)!r})"],
        cwd=work,
        env={**os.environ, "PYTHONPATH": str(HERE)},
        check=True,
    )
    shutil.rmtree(work)
    return out / f"{name}-{version}-py3-none-any.whl"


@pytest.fixture
def packages(tmp_path: Path) -> Path:
    """rigdemo 1.0 and 2.0 (sdist and wheel), rigbuilt 1.0 (sdist only: pip builds it)."""
    d = tmp_path / "upstream-packages"
    d.mkdir()
    for version in ("1.0", "2.0"):
        make_sdist(d, "rigdemo", version)
        make_wheel(d, "rigdemo", version)
    make_sdist(d, "rigbuilt", "1.0")
    return d


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class Upstream:
    """pypiserver's app over a directory, on a loopback port; counts the requests."""

    def __init__(self, root: Path) -> None:
        import pypiserver

        app = pypiserver.app(roots=[str(root)], hash_algo="sha256")
        self.requests: list[str] = []

        def counting(environ, start_response):  # type: ignore[no-untyped-def]
            self.requests.append(environ.get("PATH_INFO", ""))
            return app(environ, start_response)

        self.server = make_server("127.0.0.1", 0, counting, handler_class=_Quiet)
        self.url = f"http://127.0.0.1:{self.server.server_port}/simple/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream(packages: Path) -> Iterator[Upstream]:
    up = Upstream(packages)
    yield up
    up.stop()


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the pip Python bundles (ensurepip: offline)."""
    d = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(d)], check=True)
    return d


def clean_env(**extra: str) -> dict[str, str]:
    """This machine's environment without its pip settings (its find-links, its indexes)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(extra)
    return env


def pip(venv: Path, *args: str, env: dict[str, str] | None = None, check: bool = True):
    """The venv's real pip; no config files unless ``env`` says otherwise."""
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        env=env or clean_env(PIP_CONFIG_FILE=os.devnull),
        timeout=120,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"pip {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc
