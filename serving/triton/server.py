"""Start and stop a real ``tritonserver`` on this machine (tests, benchmarks, demos).

The ``nvidia-pytriton`` wheel ships Triton Inference Server 2.51 with the Python backend only;
it runs on CPU (it logs NVML/DCGM warnings, which are harmless). To run it directly:

* the backend directory holds ``python/libtriton_python.so``,
  ``python/triton_python_backend_utils.py`` and an executable ``python/triton_python_backend_stub``
  copied from ``pytriton/tritonserver/python_backend_stubs/<python version>/``;
* ``LD_LIBRARY_PATH`` includes the wheel's ``nvidia_pytriton.libs/``;
* the stub embeds the machine's libpython and imports from the environment whose ``bin/`` is
  first on ``PATH``, so this virtual environment's ``bin/`` goes first (``model.py`` then imports
  numpy and onnxruntime from it);
* every endpoint binds 127.0.0.1 (Triton binds 0.0.0.0 otherwise), on free ports;
* ``--model-control-mode explicit --load-model '*'`` loads the repository at start and lets
  clients load and unload versions later.

Production runs NVIDIA's NGC container instead (``docs/deploy.md``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = [
    "TritonInstallation",
    "TritonNotInstalledError",
    "TritonServer",
    "TritonStartError",
    "find_installation",
    "free_port",
]

logger = logging.getLogger(__name__)


class TritonNotInstalledError(RuntimeError):
    """The ``nvidia-pytriton`` wheel (which carries ``tritonserver``) is not installed."""


class TritonStartError(RuntimeError):
    """``tritonserver`` exited or did not become ready; the message ends with its log."""


@dataclass(frozen=True)
class TritonInstallation:
    """Files of the ``tritonserver`` inside the ``nvidia-pytriton`` wheel."""

    binary: Path
    libs_dir: Path
    python_backend_dir: Path
    stub: Path
    caches_dir: Path


def find_installation(python_version: str | None = None) -> TritonInstallation:
    """Locate ``tritonserver`` and its Python backend in the installed ``nvidia-pytriton`` wheel.

    Args:
        python_version: ``"3.11"`` style; default: this interpreter's (the stub must match it).

    Raises:
        TritonNotInstalledError: if the wheel or one of its files is missing.
    """
    found = importlib.util.find_spec("pytriton")
    if found is None or found.origin is None:
        raise TritonNotInstalledError(
            "tritonserver comes with the nvidia-pytriton wheel: pip install 'oncotriage[dev]'"
        )
    package = Path(found.origin).parent
    version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
    root = package / "tritonserver"
    install = TritonInstallation(
        binary=root / "bin" / "tritonserver",
        libs_dir=package.parent / "nvidia_pytriton.libs",
        python_backend_dir=root / "backends" / "python",
        stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
        caches_dir=root / "caches",
    )
    for path in (install.binary, install.libs_dir, install.python_backend_dir, install.stub):
        if not path.exists():
            raise TritonNotInstalledError(f"{path} is missing from the nvidia-pytriton wheel")
    return install


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class TritonServer:
    """A ``tritonserver`` process bound to 127.0.0.1, started and stopped on demand.

    Ports are chosen once and kept across :meth:`stop`/:meth:`start`, so clients can keep their
    URL through a restart.

    Example::

        with TritonServer(repo) as server:
            runner = TritonRunner(server.grpc_url, "tiny-2d", "1", ...)

    Args:
        model_repository: Triton model repository (``--model-repository``).
        workdir: where the backend folder and the log go; default: a new temporary folder.
        load_models: models loaded at start (``--load-model``); ``("*",)`` = all.
        http_port, grpc_port, metrics_port: fixed ports; default: free ones.
        startup_timeout_s: how long :meth:`start` waits for readiness.
        exit_timeout_s: Triton's ``--exit-timeout-secs`` (time given to in-flight requests
            on stop).
        log_verbose: Triton's ``--log-verbose`` level.
        shm_size_bytes: Python-backend shared memory per model instance (it grows as needed).
        extra_args: further ``tritonserver`` arguments.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        model_repository: Path,
        *,
        workdir: Path | None = None,
        load_models: Sequence[str] = ("*",),
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        startup_timeout_s: float = 120.0,
        exit_timeout_s: int = 30,
        log_verbose: int = 0,
        shm_size_bytes: int = 16 * 1024 * 1024,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        if not self.model_repository.is_dir():
            raise FileNotFoundError(f"model repository {self.model_repository} does not exist")
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="tritonserver-"))
        self.load_models = tuple(load_models)
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.startup_timeout_s = startup_timeout_s
        self.exit_timeout_s = exit_timeout_s
        self.log_verbose = log_verbose
        self.shm_size_bytes = shm_size_bytes
        self.extra_args = tuple(extra_args)
        self._process: subprocess.Popen[bytes] | None = None
        self._install: TritonInstallation | None = None
        self._shm_prefix = f"oncotriage_{os.getpid()}_{uuid.uuid4().hex[:8]}_"
        self.log_path = self.workdir / "tritonserver.log"

    # --- addresses
    @property
    def grpc_url(self) -> str:
        """``host:port`` for ``tritonclient.grpc``."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        """``host:port`` for ``tritonclient.http``."""
        return f"{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        """Prometheus metrics endpoint."""
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # --- lifecycle
    def command(self) -> list[str]:
        """The ``tritonserver`` command line (after :meth:`prepare`)."""
        install = self.prepare()
        args = [
            str(install.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={self.workdir / 'backends'}",
            f"--cache-directory={install.caches_dir}",
            f"--http-address={self.host}",
            f"--grpc-address={self.host}",
            f"--metrics-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--model-control-mode=explicit",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--log-verbose={self.log_verbose}",
            "--backend-config=python,shm-region-prefix-name=" + self._shm_prefix,
            f"--backend-config=python,shm-default-byte-size={self.shm_size_bytes}",
            f"--backend-config=python,shm-growth-byte-size={self.shm_size_bytes}",
        ]
        args += [f"--load-model={name}" for name in self.load_models]
        return args + list(self.extra_args)

    def environment(self) -> dict[str, str]:
        """Environment for ``tritonserver``: wheel libraries and this venv first on the paths."""
        install = self.prepare()
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(install.libs_dir), env.get("LD_LIBRARY_PATH", "")) if p
        )
        env["PATH"] = os.pathsep.join(
            p for p in (str(Path(sys.prefix) / "bin"), env.get("PATH", "")) if p
        )
        return env

    def prepare(self) -> TritonInstallation:
        """Assemble the backend folder (Python backend + the stub for this Python) once."""
        if self._install is not None:
            return self._install
        install = find_installation()
        backend = self.workdir / "backends" / "python"
        backend.mkdir(parents=True, exist_ok=True)
        for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
            shutil.copy2(install.python_backend_dir / name, backend / name)
        stub = backend / "triton_python_backend_stub"
        shutil.copy2(install.stub, stub)
        stub.chmod(0o755)
        self._install = install
        return install

    def start(self) -> TritonServer:
        """Start ``tritonserver`` and wait until it and its startup models are ready.

        Raises:
            TritonStartError: if it exits early or is not ready within ``startup_timeout_s``.
        """
        if self.is_running():
            return self
        command, env = self.command(), self.environment()
        logger.info("starting tritonserver (gRPC %s), log %s", self.grpc_url, self.log_path)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
                start_new_session=True,
            )
        self.wait_ready(self.startup_timeout_s)
        return self

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the server reports ready (all startup models loaded)."""
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        deadline = time.monotonic() + timeout_s
        client = grpcclient.InferenceServerClient(self.grpc_url)
        try:
            while True:
                if not self.is_running():
                    raise TritonStartError(
                        f"tritonserver exited with {self._returncode()}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(InferenceServerException):
                    if client.is_server_ready():
                        logger.info("tritonserver ready at %s", self.grpc_url)
                        return
                if time.monotonic() > deadline:
                    self.stop()
                    raise TritonStartError(
                        f"tritonserver not ready after {timeout_s:.0f} s:\n{self.log_tail()}"
                    )
                time.sleep(0.2)
        finally:
            client.close()

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop the server: SIGTERM (in-flight requests get ``exit_timeout_s``), then SIGKILL."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        grace = timeout_s if timeout_s is not None else self.exit_timeout_s + 10
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            logger.warning("tritonserver pid %d ignored SIGTERM; killing it", process.pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        logger.info("tritonserver stopped (exit %s)", process.returncode)

    def kill(self) -> None:
        """Kill the server and its Python-backend stubs at once (a crash, for tests)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def restart(self) -> TritonServer:
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the server and remove the working folder if this object created it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server log."""
        if not self.log_path.is_file():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _returncode(self) -> int | None:
        return self._process.returncode if self._process is not None else None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
