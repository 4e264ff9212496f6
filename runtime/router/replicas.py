"""LocalReplicas: `--dp-size N` — N server processes (`python -m sgl_lang.launch_server`) on free
loopback ports, each pinned to its own GPU(s) when there are enough, started together and stopped
together. The router then treats them like any remote worker: by URL."""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Optional, Sequence

import httpx

logger = logging.getLogger("sgl_lang.router")


class ReplicaStartError(RuntimeError):
    """A replica exited or did not become healthy in time; the message carries its log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def visible_gpus() -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES, else what `nvidia-smi -L` lists."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def _die_with_parent() -> None:
    """In the child, before exec: on Linux ask for SIGTERM when the router dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class LocalReplicas:
    def __init__(self, dp_size: int, server_argv: Sequence[str], host: str = "127.0.0.1",
                 gpus_per_replica: Optional[int] = None, log_dir: Optional[str] = None):
        if dp_size < 1:
            raise ValueError(f"dp_size must be >= 1, got {dp_size}")
        self.dp_size = dp_size
        self.server_argv = list(server_argv)
        self.host = host
        gpus = visible_gpus()
        if gpus_per_replica is None:  # auto: split the visible GPUs evenly, none on a CPU machine
            gpus_per_replica = len(gpus) // dp_size if len(gpus) >= dp_size else 0
        if gpus_per_replica * dp_size > len(gpus):
            raise ReplicaStartError(f"{dp_size} replicas x {gpus_per_replica} GPUs need "
                                    f"{dp_size * gpus_per_replica} GPUs, only {len(gpus)} visible")
        self.gpu_groups = [gpus[i * gpus_per_replica:(i + 1) * gpus_per_replica] for i in range(dp_size)]
        self.log_dir = log_dir or tempfile.mkdtemp(prefix="sgl_lang_replicas_")
        self.procs: list[subprocess.Popen] = []
        self.urls: list[str] = []
        self.log_paths: list[str] = []

    def start(self, timeout: float = 600.0) -> list[str]:
        """Spawn every replica, wait until all answer /health, return their URLs."""
        for i in range(self.dp_size):
            port = free_port(self.host)
            env = dict(os.environ, NCCL_NVLS_ENABLE="0")
            if self.gpu_groups[i]:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpu_groups[i])
            log_path = os.path.join(self.log_dir, f"replica_{i}_port_{port}.log")
            cmd = [sys.executable, "-m", "sgl_lang.launch_server", "--host", self.host, "--port", str(port),
                   *self.server_argv]
            with open(log_path, "w") as log:
                self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                                   preexec_fn=_die_with_parent))
            self.urls.append(f"http://{self.host}:{port}")
            self.log_paths.append(log_path)
            logger.warning("replica %d: %s (gpus %s), log %s", i, self.urls[-1], self.gpu_groups[i] or "none", log_path)
        try:
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return list(self.urls)

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.time() + timeout
        pending = set(range(self.dp_size))
        while pending:
            for i in sorted(pending):
                if self.procs[i].poll() is not None:
                    raise ReplicaStartError(f"replica {i} ({self.urls[i]}) exited with code "
                                            f"{self.procs[i].returncode}:\n{self._log_tail(i)}")
                try:
                    is_up = httpx.get(self.urls[i] + "/health", timeout=2).status_code == 200
                except httpx.TransportError:  # not listening yet
                    is_up = False
                if is_up:
                    pending.discard(i)
            if pending and time.time() > deadline:
                raise ReplicaStartError(f"replicas {sorted(pending)} not healthy after {timeout:.0f}s; "
                                        f"log of replica {min(pending)}:\n{self._log_tail(min(pending))}")
            if pending:
                time.sleep(0.5)

    def stop(self, grace: float = 15.0) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.time() + grace
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def _log_tail(self, i: int, num_chars: int = 3000) -> str:
        with open(self.log_paths[i], errors="replace") as f:
            return f.read()[-num_chars:]
