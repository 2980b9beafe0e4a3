"""Runs side by side: each run's results are copied the moment it ends, runs past the deadline are
stopped, and scripts/device_train.py builds one `lamra train` process per recipe."""

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

from lamra.train.side_by_side import Job, run_side_by_side

REPO = Path(__file__).resolve().parents[2]


def python_job(name: str, run_dir: Path, code: str) -> Job:
    return Job(name, [sys.executable, "-c", code], run_dir)


def writes_final(run_dir: Path, sleep_s: float = 0.0) -> str:
    return (f"import time, pathlib; time.sleep({sleep_s}); d = pathlib.Path({str(run_dir)!r}); "
            "(d / 'final').mkdir(parents=True); (d / 'final' / 'adapter.bin').write_text('weights'); "
            "(d / 'losses.jsonl').write_text('{\"step\": 1, \"loss\": 0.5}\\n'); print('trained')")


def test_each_run_is_copied_when_it_ends_and_the_deadline_stops_the_rest(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    slow_dir = runs / "slow"
    slow = ("import time, pathlib; d = pathlib.Path(%r); d.mkdir(parents=True); "
            "(d / 'losses.jsonl').write_text('{\"step\": 1, \"loss\": 2.0}\\n'); print('started', flush=True); "
            "time.sleep(120)") % str(slow_dir)
    jobs = [python_job("quick", runs / "quick", writes_final(runs / "quick")),
            python_job("slow", slow_dir, slow),
            python_job("broken", runs / "broken", "import sys; print('bad recipe', file=sys.stderr); sys.exit(3)")]
    start = time.monotonic()
    results = {r.name: r for r in run_side_by_side(jobs, out, deadline_s=4.0, poll_s=0.1)}
    assert time.monotonic() - start < 60  # the 120 s run was stopped, not waited for

    quick, stopped, broken = results["quick"], results["slow"], results["broken"]
    assert quick.status == "finished" and quick.returncode == 0
    assert (out / "quick" / "final" / "adapter.bin").read_text() == "weights"
    assert quick.copied == ["final", "losses.jsonl"] and "trained" in (out / "quick" / "train.log").read_text()
    assert quick.minutes < stopped.minutes  # copied as it ended, before the deadline

    assert stopped.status == "stopped at the deadline" and stopped.returncode != 0
    assert stopped.copied == ["losses.jsonl"] and not (out / "slow" / "final").exists()
    assert "started" in (out / "slow" / "train.log").read_text()

    assert broken.status == "failed" and broken.returncode == 3 and broken.copied == []
    assert "bad recipe" in (out / "broken" / "train.log").read_text()

    summary = {row["name"]: row for row in json.loads((out / "summary.json").read_text())}
    assert summary["quick"]["status"] == "finished" and summary["slow"]["status"] == "stopped at the deadline"
    assert not list(out.rglob(".*"))  # no staging copy left behind


def test_the_summary_is_written_before_any_run_ends(tmp_path):
    """A call cut at its limit while every run is still going still returns which runs there were."""
    out = tmp_path / "out"
    job = python_job("only", tmp_path / "runs" / "only", "import time; time.sleep(120)")
    run_side_by_side([job], out, deadline_s=0.5, poll_s=0.1)
    rows = json.loads((out / "summary.json").read_text())
    assert [row["name"] for row in rows] == ["only"] and rows[0]["status"] == "stopped at the deadline"


def test_job_names_must_be_unique(tmp_path):
    job = python_job("same", tmp_path / "a", "pass")
    with pytest.raises(ValueError, match="unique"):
        run_side_by_side([job, job], tmp_path / "out", deadline_s=1.0)


def test_device_train_runs_each_recipe_as_its_own_stage_with_the_budget(monkeypatch):
    jobs = load_script("device_train").jobs_for(["smoke-stage2", "smoke-rank"], 7.0, ["device=cuda", "output_dir=/tmp/elsewhere/{name}"])
    assert [job.name for job in jobs] == ["smoke-stage2", "smoke-rank"]
    stage2, rank = (job.command for job in jobs)
    assert stage2[stage2.index("train") + 1] == "stage2" and rank[rank.index("train") + 1] == "rank"
    assert "max_minutes=7.0" in stage2 and "device=cuda" in rank
    assert jobs[0].run_dir == Path("/tmp/elsewhere/smoke-stage2")  # where the overridden run writes


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_device_results_packs_each_run_into_one_bf16_tar_without_the_dropped_parts(tmp_path):
    import tarfile

    import torch
    from safetensors.torch import load_file, save_file

    run = tmp_path / "out" / "a-rank"
    (run / "final" / "adapters" / "rank").mkdir(parents=True)
    (run / "final" / "adapters" / "retrieval").mkdir(parents=True)
    weights = {"lora_A": torch.randn(16, 64), "steps": torch.arange(3)}
    save_file(weights, run / "final" / "adapters" / "rank" / "adapter_model.safetensors")
    save_file(weights, run / "final" / "adapters" / "retrieval" / "adapter_model.safetensors")
    (run / "losses.jsonl").write_text('{"step": 1, "loss": 0.5}\n')

    archive = load_script("device_results").pack_run(run, ["final/adapters/retrieval"])

    assert archive == tmp_path / "out" / "a-rank.tar" and not run.exists()
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        tar.extractall(tmp_path / "home", filter="data")
    assert "a-rank/losses.jsonl" in names and not any("retrieval" in name for name in names)
    back = load_file(tmp_path / "home" / "a-rank" / "final" / "adapters" / "rank" / "adapter_model.safetensors")
    assert back["lora_A"].dtype == torch.bfloat16 and back["steps"].dtype == torch.int64  # only floats cast
    assert torch.allclose(back["lora_A"].float(), weights["lora_A"], rtol=1e-2, atol=1e-2)
