"""Evaluate the compact LamRA stages and the baselines on the full PocketBEIR test split; write the pages.

    .venv/bin/python scripts/evaluate_pocketbeir.py all          # every row below, then the pages
    .venv/bin/python scripts/evaluate_pocketbeir.py method NAME  # one row: base, stage1, ret-lmm, ret, ret-fp32,
                                                                 # minilm, vision
    .venv/bin/python scripts/evaluate_pocketbeir.py instructions # LamRA-Ret without / with new instructions
    .venv/bin/python scripts/evaluate_pocketbeir.py pages        # results/{pocketbeir,stages,instructions}.md

All 3,980 test queries, every task's full local pool and the global pool (18,237 candidates). Each
candidate is encoded once per model and serves every pool it is in; the frozen tower's image
features are kept on disk ($LAMRA_HOME/vision-features), so only the first model pays for them, and
each model's pool indexes under runs/eval-index (keyed by a digest of its weights), so the
instruction study re-encodes queries only. Finished rows are kept: a rerun only computes what is
missing or was computed with other weights. Reranking is not on these pages.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from lamra.assets import lamra_home
from lamra.light_checkpoint import role_digest
from lamra.evaluate.report import load_results, write_report
from lamra.evaluate.runner import evaluate_mbeir
from lamra.evaluate.tables import results_page, write_markdown

COMMAND = ".venv/bin/python scripts/evaluate_pocketbeir.py all"
OUT = Path("results/pocketbeir")
CHECKPOINTS = {
    "Base (stage 0 only)": "runs/compact-stage0/final",
    "Stage 1 only": "runs/compact-gpu-stage1/final",  # the shipped weights' stage 1
    "LamRA-Ret": "src/lamra/weights/compact",  # the shipped package
}
# The shipped LamRA-Ret without its score channels (lamra.appearance, lamra.colour): the LMM embedding alone.
LMM_ONLY = "LamRA-Ret, LMM embedding only"
# The shipped LamRA-Ret computed in float32: the reproducible reference. The other rows use bf16 autocast
# (the default, 3x faster here), whose last bits depend on the CPU's kernels and the batches, so they
# move by a few queries a task between machines; in fp32 neither matters beyond float32's last bits.
FP32 = "LamRA-Ret, fp32"
INDEX_DIR = Path("runs/eval-index")
PREVIOUS = "previous package"
# The instruction study: the task's own instructions (the main row), none, and paraphrases written for
# the test only (never trained on).
HELDOUT_INSTRUCTIONS = Path("docs/pocketbeir/heldout_instructions.tsv")
INSTRUCTION_ROWS = {"LamRA-Ret, no instruction": ("none", None),
                    "LamRA-Ret, held-out paraphrase": ("first", HELDOUT_INSTRUCTIONS)}
BASELINES = {"minilm": "all-MiniLM-L6-v2", "vision": "EfficientNet-Lite0 trunk"}
METHOD_KEYS = {"base": "Base (stage 0 only)", "stage1": "Stage 1 only", "ret-lmm": LMM_ONLY, "ret": "LamRA-Ret",
               "ret-fp32": FP32, **BASELINES}


def data_root() -> Path:
    return lamra_home() / "pocketbeir"


def model_name(name: str) -> str:
    """The name a method's results are stored under: a checkpoint's carries its weights' digest."""
    if name == LMM_ONLY:  # the digest of what it computes with: the package less its channels
        return f"LamRA-Ret@{role_digest(CHECKPOINTS['LamRA-Ret'], channels=False)}"
    if name == FP32:  # its own pool indexes: fp32 vectors
        return f"LamRA-Ret@{role_digest(CHECKPOINTS['LamRA-Ret'])}-fp32"
    return f"{name}@{role_digest(CHECKPOINTS[name])}" if name in CHECKPOINTS else name


def finished(out: Path, model: str) -> bool:
    """Whether ``out`` holds results of exactly this model (other weights' results are recomputed)."""
    path = out / "results.json"
    return path.is_file() and json.loads(path.read_text()).get("model") == model


def load_encoder(key: str):
    name = METHOD_KEYS[key]
    if key == "minilm":
        from lamra.evaluate.baselines import MiniLMEncoder

        return MiniLMEncoder()
    if key == "vision":
        from lamra.evaluate.baselines import VisionTowerEncoder

        return VisionTowerEncoder()
    from lamra import LamRA

    if name == LMM_ONLY:
        model = LamRA.from_pretrained(CHECKPOINTS["LamRA-Ret"], channels=False)
    elif name == FP32:
        model = LamRA.from_pretrained(CHECKPOINTS["LamRA-Ret"], precision="fp32")
    else:
        model = LamRA.from_pretrained(CHECKPOINTS[name])
    model.backbone.persist_features()
    model.name = model_name(name)  # keys its cached indexes
    return model


def run_method(key: str) -> None:
    name = METHOD_KEYS[key]
    out = _out(name)
    checkpoint = CHECKPOINTS.get("LamRA-Ret" if name in (LMM_ONLY, FP32) else name)
    if checkpoint and not Path(checkpoint).exists():  # e.g. a stage trained on another machine
        if (out / "results.json").is_file():
            print(f"{name}: {checkpoint} is not on this machine; its earlier results stay ({out})")
            return
        sys.exit(f"{name}: {checkpoint} is not on this machine and has no earlier results: train it first "
                 "(scripts/train_compact.sh)")
    if finished(out, model_name(name)):
        print(f"{name}: done already ({out})")
        return
    start = time.perf_counter()
    encoder = load_encoder(key)
    index_dir = INDEX_DIR if hasattr(encoder, "backbone") else None
    report = evaluate_mbeir(encoder, data_root(), method=name, pools=("local", "global"), index_dir=index_dir,
                            show_progress=True)
    if hasattr(encoder, "backbone"):
        encoder.backbone.feature_cache.flush()
    write_report(report, out, command=COMMAND)
    print(f"{name}: {time.perf_counter() - start:.0f} s -> {out}")


def run_instructions() -> None:
    encoder = None
    for name, (choice, tsv) in INSTRUCTION_ROWS.items():
        out = _out(name)
        if finished(out, model_name("LamRA-Ret")):
            print(f"{name}: done already ({out})")
            continue
        encoder = encoder or load_encoder("ret")
        report = evaluate_mbeir(encoder, data_root(), method=name, pools=("local",), index_dir=INDEX_DIR,
                                instruction_choice=choice, instructions_path=tsv, show_progress=True)
        write_report(report, out, command=COMMAND)


def write_pages() -> None:
    rows = {name: _rows(name) for name in METHOD_KEYS.values() if _rows(name)}
    stale = [name for name in rows if name in (LMM_ONLY, "LamRA-Ret", FP32) and not finished(_out(name), model_name(name))]
    for name in stale:  # computed with earlier weights than the shipped ones: shown, and said so
        for row in rows[name]:
            row["method"] = f"{name} ({PREVIOUS})"
    note = ("Full PocketBEIR test split: all 3,980 test queries; every task's full local pool (its candidates "
            "from all splits) and the global pool (the union, 18,237 candidates). Compact LMM in bf16 autocast "
            "on 2 CPU cores. Baselines with no training: all-MiniLM-L6-v2 (text-only tasks) and the compact "
            "model's own frozen EfficientNet-Lite0 trunk, mean-pooled, cosine (image-only tasks). LamRA-Ret is the "
            "shipped package: its LMM embedding plus its appearance channel (`lamra.appearance`: the trunk's "
            "global features, PCA'd on training images, weighted by a w chosen on val, `results/appearance.md`), "
            "which adds to image-to-image scores only, and its colour channel (`lamra.colour`: how well a "
            "candidate image's colours match the colours the query asks for, predicted from the query; fitted on "
            "training queries, weighted on val, `results/colour.md`), which adds to scores of candidates with an "
            "image only; the row above it is the LMM embedding alone. "
            "Under bf16 autocast a CPU's kernels and the batches change the last bits of every vector, so these "
            "rows move by a few queries a task between machines.")
    fp32_note = (" The fp32 row (the same weights in float32, 3x slower here) is the reference: in fp32 a vector's "
                 "batch and the CPU change only float32's last bits.")
    elsewhere = (" `results/pocketbeir.md` adds LamRA-Ret in fp32, the reference (in fp32 a vector's batch "
                 "changes only float32's last bits).")
    if stale:
        note += (f" Rows marked ({PREVIOUS}) were computed with weights shipped before the current ones (their "
                 "results.json names the digest); the command above recomputes them.")
    label = {name: f"{name} ({PREVIOUS})" if name in stale else name for name in rows}
    order = ["Base (stage 0 only)", "all-MiniLM-L6-v2", "EfficientNet-Lite0 trunk", LMM_ONLY, "LamRA-Ret", FP32]
    page = results_page([r for name in order for r in rows.get(name, [])],
                        title="PocketBEIR (full test split): retrieval", pools=("local", "global"),
                        methods=[label[n] for n in order if n in rows], notes=note + fp32_note)
    write_markdown("results/pocketbeir.md", COMMAND, page)
    stages = [n for n in [*list(CHECKPOINTS)[:-1], LMM_ONLY, "LamRA-Ret"] if n in rows]
    page = results_page([r for name in stages for r in rows[name]],
                        title="Compact LamRA by training stage (PocketBEIR full test split)",
                        pools=("local", "global"), methods=[label[n] for n in stages], notes=note + elsewhere)
    write_markdown("results/stages.md", COMMAND, page)
    study = [r for name in ["LamRA-Ret", *INSTRUCTION_ROWS] for r in _rows(name) if r["pool"] == "local"]
    page = results_page(study, title="LamRA-Ret with its task instructions, none, and held-out paraphrases",
                        pools=("local",), methods=[n for n in ["LamRA-Ret", *INSTRUCTION_ROWS] if _rows(n)],
                        notes=note + elsewhere + f" Held-out paraphrases: `{HELDOUT_INSTRUCTIONS}` (one per task, written for "
                        "this test, never trained on); the main row draws from the task's own instructions.")
    write_markdown("results/instructions.md", COMMAND, page)
    print("wrote results/pocketbeir.md, results/stages.md and results/instructions.md")


def _out(name: str) -> Path:
    return OUT / name.replace(" ", "_").replace(",", "")


def _rows(name: str) -> list[dict]:
    path = _out(name) / "results.json"
    return [r for r in load_results(path)["results"] if r["method"] == name] if path.is_file() else []


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    if argv[0] == "method" and len(argv) == 2 and argv[1] in METHOD_KEYS:
        run_method(argv[1])
    elif argv[0] == "instructions":
        run_instructions()
    elif argv[0] == "pages":
        write_pages()
    elif argv[0] == "all":
        for key in METHOD_KEYS:
            run_method(key)
        run_instructions()
        write_pages()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
