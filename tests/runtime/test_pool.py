"""Jobs in parallel processes: results, failures, and workers that do not outlive a killed parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from runtime.pool import in_pool


def _write(folder: str, name: str) -> None:
    Path(folder, name).write_text(str(os.getpid()))


def _fail_on(message: str) -> None:
    if "broke" in message:
        raise ValueError(message)


def test_every_call_runs_in_a_worker_process(tmp_path: Path) -> None:
    in_pool(2, [(str(tmp_path), "a"), (str(tmp_path), "b"), (str(tmp_path), "c")], _write, "job")
    pids = {p.read_text() for p in tmp_path.iterdir()}
    assert len(list(tmp_path.iterdir())) == 3 and str(os.getpid()) not in pids


def test_a_failed_call_raises_in_the_parent() -> None:
    with pytest.raises(ValueError, match="job 2 broke"):
        in_pool(2, [("fine",), ("job 2 broke",)], _fail_on, "job")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's prctl")
def test_workers_end_when_the_parent_is_killed(tmp_path: Path) -> None:
    """A killed experiment must not leave its workers writing into run folders (their lock died with the parent)."""
    script = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from runtime.pool import in_pool
        from tests.runtime.test_pool import _sleep_forever
        in_pool(2, [({str(tmp_path)!r}, "a"), ({str(tmp_path)!r}, "b")], _sleep_forever, "job")
    """)
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("*.pid"))) < 2:
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.2)
        workers = [int(p.read_text()) for p in tmp_path.glob("*.pid")]
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in workers):
            assert time.monotonic() < deadline, f"workers {workers} outlived their killed parent"
            time.sleep(0.2)
    finally:
        parent.kill()


def _sleep_forever(folder: str, name: str) -> None:
    Path(folder, f"{name}.pid").write_text(str(os.getpid()))
    time.sleep(600)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (dead, not yet reaped by init) counts as ended
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()
