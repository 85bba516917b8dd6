"""A private Ray head on this machine for tests and demos: started in its own session, stopped
by killing exactly that session's processes (never ``ray stop``, which stops every Ray
process of the user on the host)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
    return pids


@contextlib.contextmanager
def local_ray_head(num_cpus: int = 2, timeout: float = 120.0) -> Iterator[str]:
    """``ray start --head --block`` bound to 127.0.0.1 with ``num_cpus`` CPUs on a free port;
    yields its address ``127.0.0.1:PORT`` and always stops it (and only it) at the end."""
    port = free_port()
    temp = tempfile.mkdtemp(prefix="wlray", dir="/tmp")  # short: Ray's socket paths are limited
    ray = Path(sys.executable).with_name("ray")
    args = [str(ray), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
            f"--port={port}", f"--num-cpus={num_cpus}", "--num-gpus=0",
            "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}",
            "--object-store-memory=100000000"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    log = open(Path(temp) / "head.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ray start exited ({proc.returncode}): "
                                   f"{(Path(temp) / 'head.log').read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port),
                                                                        timeout=1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"ray head did not listen on port {port} in {timeout} s")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        _stop_session(proc)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _stop_session(proc: subprocess.Popen) -> None:
    """SIGTERM the session we started (ray start --block tears its processes down), then
    SIGKILL whatever of that session is left."""
    sid = proc.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(sid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=2)
    for _ in range(20):
        left = _session_pids(sid)
        if not left:
            break
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.25)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
