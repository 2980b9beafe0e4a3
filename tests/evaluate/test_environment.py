"""results.json says what computed it: numerics, library versions, machine, the source's commit."""

from __future__ import annotations

import re
from types import SimpleNamespace

import torch

from eval_helpers import HashingEncoder, build_toy_mbeir

from lamra.evaluate.environment import evaluation_environment, numerics, source_commit
from lamra.evaluate.report import load_results, write_report
from lamra.evaluate.runner import evaluate_mbeir


def stand_in_model(precision: str, dtype: torch.dtype = torch.float32):
    backbone = SimpleNamespace(model=torch.nn.Linear(2, 2).to(dtype), device=torch.device("cpu"))
    return SimpleNamespace(backbone=backbone, precision=precision)


def test_numerics_name_the_precision_a_model_computes_in():
    assert numerics(stand_in_model("fp32")) == "float32"
    assert numerics(stand_in_model("bf16")) == "bf16 autocast"
    assert numerics(stand_in_model("bf16", torch.bfloat16)) == "bf16 autocast, bfloat16 weights"
    assert numerics(HashingEncoder()) is None  # not a LamRA model: nothing to say
    on_openvino = stand_in_model("auto")
    on_openvino.backbone.hf_model = SimpleNamespace(engine=SimpleNamespace(precision="bf16"))
    assert numerics(on_openvino) == "OpenVINO bf16"


def test_the_environment_names_libraries_machine_and_commit():
    environment = evaluation_environment(stand_in_model("fp32"))
    assert environment["numerics"] == "float32"
    assert environment["versions"]["torch"] == torch.__version__
    assert {"numpy", "lamra"} <= set(environment["versions"])
    assert environment["machine"]["threads"] == torch.get_num_threads() and environment["machine"]["cpu"]
    commit = source_commit()
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", commit), commit


def test_results_json_carries_the_environment(tmp_path):
    root = build_toy_mbeir(tmp_path / "toy")
    report = evaluate_mbeir(HashingEncoder(), root, tasks=["toypassage"], show_progress=False)
    payload = load_results(write_report(report, tmp_path / "out", command="pytest"))
    assert payload["environment"]["versions"]["numpy"] and payload["environment"]["numerics"] is None
