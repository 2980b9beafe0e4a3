"""Several training runs at once on one machine, each run's results copied out the moment it ends.

Made for a borrowed GPU with a hard wall-clock limit per call, where only what a call has written
to its output folder comes back. One lease lost three of four finished stage-2 runs because its
driver copied the results one after another once all four had ended, and the call hit its limit
while copying the second. Here each run is copied as soon as its process exits, a summary is
rewritten after every event, and runs still going at the deadline are stopped (their log and loss
curve are still copied), so a call cut short returns everything that finished.

    jobs = [Job("a", ["lamra", "train", "stage2", "--recipe", "a.yaml"], Path("runs/a")), ...]
    run_side_by_side(jobs, out=Path(os.environ["OUT"]), deadline_s=540)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from lamra.atomic_io import atomic_directory, atomic_write, atomic_write_text

# What a finished run sends home: the weights a package is built from, and what the report reads.
# Checkpoints stay behind (each as large as the run's weights plus its optimizer state).
RESULT_PATHS = ("final", "losses.jsonl", "recipe.yaml", "hardware.json")
STOP_GRACE_S = 10.0  # after SIGTERM, how long a run may take to exit before it is killed


@dataclass
class Job:
    name: str
    command: list[str]
    run_dir: Path  # where the command writes final/, losses.jsonl, ...
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class JobResult:
    name: str
    status: str = "running"  # running | finished | failed | stopped at the deadline
    returncode: int | None = None
    minutes: float | None = None
    copied: list[str] = field(default_factory=list)


def copy_results(run_dir: Path, target: Path) -> list[str]:
    """Copy a run's results into ``target``, each whole or not at all (``lamra.atomic_io``); returns
    what was copied."""
    copied = []
    for name in RESULT_PATHS:
        source = run_dir / name
        if source.is_dir():
            with atomic_directory(target / name) as staging:
                shutil.copytree(source, staging, dirs_exist_ok=True)
        elif source.is_file():
            atomic_write(target / name, lambda temp: shutil.copyfile(source, temp))
        else:
            continue
        copied.append(name)
    return copied


def write_summary(out: Path, results: list[JobResult]) -> None:
    atomic_write_text(out / "summary.json", json.dumps([vars(result) for result in results], indent=2) + "\n")


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the run's process group, then SIGKILL it if it has not exited within the grace period."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        process.wait()


def run_side_by_side(jobs: list[Job], out: Path, deadline_s: float, poll_s: float = 1.0) -> list[JobResult]:
    """Start every job, copy each one's results to ``out/<name>/`` as soon as it exits, and stop the
    ones still running ``deadline_s`` seconds after the start. Each job's output goes straight to
    ``out/<name>/train.log``; ``out/summary.json`` is rewritten after every event."""
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"job names must be unique, got {names}")
    start = time.monotonic()
    running: dict[str, tuple[Job, subprocess.Popen]] = {}
    results = {job.name: JobResult(job.name) for job in jobs}
    out.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        target = out / job.name
        target.mkdir(parents=True, exist_ok=True)
        log = open(target / "train.log", "w")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **job.env}
        # a process group of its own, so stopping a run also stops the workers it started
        running[job.name] = (job, subprocess.Popen(job.command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                                   start_new_session=True))
        log.close()  # the child holds its own copy of the descriptor
    write_summary(out, list(results.values()))

    def settle(job: Job, process: subprocess.Popen, status: str) -> None:
        result = results[job.name]
        result.status, result.returncode = status, process.returncode
        result.minutes = round((time.monotonic() - start) / 60, 2)
        result.copied = copy_results(job.run_dir, out / job.name)
        write_summary(out, list(results.values()))

    while running:
        for name, (job, process) in list(running.items()):
            if process.poll() is not None:
                del running[name]
                settle(job, process, "finished" if process.returncode == 0 else "failed")
        if running and time.monotonic() - start >= deadline_s:
            for name, (job, process) in list(running.items()):
                _stop(process)
                del running[name]
                settle(job, process, "stopped at the deadline")
        if running:
            time.sleep(poll_s)
    return list(results.values())
