"""The training stages behind ``lamra train``: one module per stage (``stage0``, ``stage1``,
``stage2``, ``rank``: its data and step function, its command in the docstring), which model a
recipe starts from (``models``), the M-BEIR training data (``mbeir_data``), and ``run_stage``.

Run layout (``recipe.run_dir``)::

    recipe.yaml              the recipe as run
    checkpoint-{step}/       resumable training state (lamra.train.train_state)
    losses.jsonl             {"step", "loss", "lr", "examples_per_s"} per optimizer step
    final/                   the result: compact -> light format (lamra.json, projector, adapters/);
                             Qwen-VL -> the peft adapter (+ tokenizer)
    merged/                  ``lamra train merge``: Qwen-VL -> full merged weights; compact -> the
                             light format (adapters kept, listed in lamra.json in order)
"""

from lamra.train.stages.models import load_retriever, load_training_backbone
from lamra.train.stages.run import run_stage

__all__ = ["load_retriever", "load_training_backbone", "run_stage"]
