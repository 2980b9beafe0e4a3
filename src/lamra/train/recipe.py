"""Training recipes: YAML files of plain values, loaded into a checked `Recipe`.

A recipe names everything a run depends on (stage, backbone, LoRA, optimisation, data), so a run
directory's copy of it (`save_recipe`) is enough to reproduce the run. Unknown keys and values of
the wrong type are rejected with the file and key in the message; paths may use `~`,
`$LAMRA_HOME` (default ~/.cache/lamra) and other environment variables.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lamra.assets import lamra_home
from lamra.atomic_io import atomic_write_text
from lamra.data.mbeir import dataset_id_of

STAGES = ("stage0", "stage1", "stage2", "rank")
REPO_RECIPES_DIR = Path(__file__).resolve().parents[3] / "recipes"  # src/lamra/train -> repo root


class RecipeError(ValueError):
    """A recipe file that cannot be used; the message names the file and the key."""


@dataclass
class Recipe:
    # What and from where.
    stage: str  # stage0 (compact only: align the projector), stage1, stage2, rank
    backbone: str = "compact"  # compact | qwen2-vl | qwen2.5-vl
    model: str | None = None  # weights: hub name or local dir; None = the backbone's default
    init_from: str | None = None  # merged or adapter weights to start from (stage 2: stage 1's)
    adapter_name: str | None = None  # compact: this run's folder under adapters/ (default: the stage)
    continue_adapter: bool = False  # compact stage 2: train init_from's last retrieval adapter further (its
    # own rank, alpha and dropout; the lora_* keys unused) instead of adding one, so a package continued this way
    # is packaged again without a lossy fold (package.fold_adapters cuts a sum of adapters to one rank)
    output_dir: str = "runs/{name}"  # run dir: checkpoints, logs, final adapter; {name} = recipe name
    name: str = ""  # defaults to the file name without .yaml

    # LoRA on every Linear of the language model (not lm_head, not the vision tower).
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05

    # Optimisation (official: AdamW, weight decay 0, cosine with 3% warmup, bf16).
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    epochs: float = 1.0
    max_steps: int | None = None  # when set, overrides epochs (the data repeats as needed)
    max_minutes: float | None = None  # wall-time budget: the run is shortened to fit (see Trainer)
    batch_size: int = 32  # global examples per optimizer step, split evenly over processes
    chunk_size: int | None = None  # GradCache sub-batch (Ret) / accumulation micro-batch (Rank)
    max_grad_norm: float | None = None
    bf16: bool = True  # torch.autocast bfloat16 (the fast path on CPUs with bf16 units)
    device: str = "auto"  # auto (CUDA when there is one, else CPU), cpu, cuda or cuda:N
    seed: int = 42

    # Model inputs.
    max_length: int = 1024  # tokens per sequence
    num_visual_tokens: int | None = None  # compact LMM: pooled vision tokens per image (e.g. 9)
    image_max_pixels: int | None = None  # Qwen2-VL: 300*28*28 in the official runs
    image_min_pixels: int | None = None  # Qwen2-VL: 4*28*28

    # Loss.
    temperature: float = 0.05
    hard_negatives: int = 0  # hard negatives per query as extra columns (0 = in-batch only)
    mined_negatives: str | list[str] | None = None  # stage 2: `lamra train mine` file(s): hard negatives
    mined_negative_depth: int = 20  # ... also drawn from each file's first N candidates per query
    mined_negative_modality: str = "any"  # "other": keep only mined candidates of another modality than
    # the query's positives (UniIR's modality-aware negatives: never a false negative, and exactly
    # what crowds a global pool)
    symmetric_loss: bool = False  # also candidate -> query (CLIP style); official: false

    # Compact recipes (the Qwen recipes keep the paper's settings: all of these off).
    train_projector: bool = False  # stages 1/2: the projector trains with the LoRA adapters
    global_image_token: bool = False  # one more visual token: the mean of the whole feature map
    batch_by_task: bool = False  # stage 2: every batch from one task (tasks interleaved over steps)
    mixed_batch_ratio: float = 0.0  # with batch_by_task: share of batches mixed across tasks again
    batch_family_key: str | None = None  # with batch_by_task: queries of a task sharing this field of
    # their query_src_content fill batches together (PocketBEIR: "concept"), so in-batch negatives hold
    # the same emoji's other skin tones, genders and drawings (MBEIRTrainData.families)
    no_instruction_ratio: float = 0.0  # stage 2: share of queries trained without an instruction
    trunk_distillation: float = 0.0  # stage 2, compact: weight of a loss that keeps, for image queries
    # against image candidates, the frozen vision trunk's sense of which images look alike (its
    # mean-pooled features' in-batch similarity; ``losses.similarity_distillation``)
    trunk_distillation_temperature: float = 0.05  # the teacher's softmax temperature

    # Reranker data (stage rank).
    mining_top_k: int = 100
    mining_pool_size: int | None = None  # mine in the positives + a seeded sample of this many (CPU budgets)
    mining_local: bool = False  # each query's top-K from its positives' datasets only (its local pool)
    rank_from_retriever: bool = False  # compact: train on top of init_from's LamRA-Ret (adapters + projector)
    listwise_min_candidates: int = 2
    listwise_max_candidates: int = 5
    rank_loss: str = "next_token"  # official; "grouped": a query's positive and mined negatives ordered
    # by their Yes-No logits in one softmax, plus each answer's and the listwise next-token loss
    rank_group_size: int = 4  # grouped: the positive and this many minus one mined negatives
    rank_datasets: list[str] | None = None  # rank: train on these datasets' mined queries only (names or ids)
    joint_rank_weight: float = 0.0  # stage 2, compact: > 0 trains one adapter for both jobs: each step
    # adds this times the rank stage's next-token loss on samples from ``rerank_data`` (lamra.train.joint)
    joint_rank_batch: int = 12  # ... rank samples per optimizer step
    joint_rank_max_length: int = 384  # ... tokens per rank sample (the retrieval's max_length is shorter)

    # Data (M-BEIR layout; stage 1: the text-pair csv; stage 0: captions of training images).
    train_data: str | None = None
    cand_pool: str | None = None
    instructions: str | None = None
    rerank_data: str | None = None  # mined top-K file (stage rank)
    max_train_examples: int | None = None  # use only the first N training examples
    dataset_fractions: dict[str, float] | None = None  # stage 2: keep this share of a dataset's training
    # queries (dataset name or id -> fraction in (0, 1], a seeded draw per query; unlisted datasets keep
    # all), to weight the tasks of a run, e.g. a continuation that rehearses the others at a quarter

    # Bookkeeping.
    save_every: int = 100  # optimizer steps between checkpoints
    keep_checkpoints: int = 2
    log_every: int = 1

    @property
    def run_dir(self) -> Path:
        return Path(expand_path(self.output_dir.format(name=self.name)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)




# Keys holding paths: `~` and environment variables are expanded when the recipe is loaded.
PATH_FIELDS = (
    "model", "init_from", "output_dir", "train_data", "cand_pool", "instructions", "rerank_data", "mined_negatives",
)


def expand_path(value: str) -> str:
    """`$LAMRA_HOME` (with its default), other environment variables and `~`."""
    value = value.replace("${LAMRA_HOME}", str(lamra_home())).replace("$LAMRA_HOME", str(lamra_home()))
    return os.path.expanduser(os.path.expandvars(value))


def resolve_recipe_path(name_or_path: str | os.PathLike) -> Path:
    """A file path, or the name of a recipe shipped in the repository's recipes/ folder."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = REPO_RECIPES_DIR / f"{path.name.removesuffix('.yaml')}.yaml"
    if shipped.is_file():
        return shipped
    known = ", ".join(p.stem for p in sorted(REPO_RECIPES_DIR.glob("*.yaml"))) or "none found"
    raise RecipeError(f"recipe {str(name_or_path)!r} not found (not a file; shipped recipes: {known})")


def load_recipe(name_or_path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read and check a recipe; `overrides` (e.g. from `--set key=value`) win over the file."""
    path = resolve_recipe_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of key: value, got {type(raw).__name__}")
    raw = {**raw, **(overrides or {})}
    raw.setdefault("name", path.stem)
    return recipe_from_dict(raw, source=str(path))


def recipe_from_dict(values: dict[str, Any], source: str = "<recipe>") -> Recipe:
    fields = {f.name: f for f in dataclasses.fields(Recipe)}
    for key in values:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise RecipeError(f"{source}: unknown key {key!r}{hint}")
    if "stage" not in values:
        raise RecipeError(f"{source}: missing key 'stage' (one of {', '.join(STAGES)})")
    if isinstance(values["stage"], int) and not isinstance(values["stage"], bool):
        values = {**values, "stage": f"stage{values['stage']}"}  # `stage: 1` means stage1
    hints = typing.get_type_hints(Recipe)
    checked = {key: _check_value(key, value, hints[key], source) for key, value in values.items()}
    for key in PATH_FIELDS:  # a hub name such as "Qwen/Qwen2-VL-7B-Instruct" passes unchanged
        if isinstance(checked.get(key), str):
            checked[key] = expand_path(checked[key])
        elif isinstance(checked.get(key), list):
            checked[key] = [expand_path(value) for value in checked[key]]
    recipe = Recipe(**checked)
    _check_recipe(recipe, source)
    return recipe


def save_recipe(recipe: Recipe, path: str | os.PathLike) -> None:
    """Write the recipe as YAML (temp file + rename), e.g. into the run directory."""
    atomic_write_text(path, yaml.safe_dump(recipe.to_dict(), sort_keys=False))


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` from the command line; the value is read as YAML (numbers, true, null)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"override {text!r} is not of the form key=value")
    return key.strip(), yaml.safe_load(value)


def _check_value(key: str, value: Any, annotation: Any, source: str) -> Any:
    allowed = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None:
        if type(None) in allowed:
            return None
        raise RecipeError(f"{source}: {key} must not be empty")
    for kind in allowed:
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and not isinstance(value, bool):
            if isinstance(value, int | float):
                return float(value)
            if isinstance(value, str):  # YAML 1.1 reads "2e-4" (no dot) as a string
                try:
                    return float(value)
                except ValueError:
                    pass
        if kind is str and isinstance(value, str):
            return value
        if kind == list[str] and isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return value
        if kind == dict[str, float] and isinstance(value, dict) and value and all(
                isinstance(k, str | int) and isinstance(v, int | float) and not isinstance(v, bool)
                for k, v in value.items()):
            return {str(k): float(v) for k, v in value.items()}
    return _bad(key, value, allowed, source)


def _bad(key: str, value: Any, allowed: tuple, source: str) -> Any:
    words = {bool: "true/false", int: "an integer", float: "a number", str: "a string", type(None): "null",
             list[str]: "a list of strings", dict[str, float]: "a mapping of datasets to numbers"}
    names = " or ".join(words[kind] for kind in allowed)
    raise RecipeError(f"{source}: {key} must be {names}, got {value!r}")


def _check_recipe(recipe: Recipe, source: str) -> None:
    def fail(message: str) -> None:
        raise RecipeError(f"{source}: {message}")

    if recipe.stage not in STAGES:
        fail(f"stage must be one of {', '.join(STAGES)}, got {recipe.stage!r}")
    if recipe.stage == "stage0" and recipe.backbone != "compact":
        fail("stage0 (projector alignment) exists only for the compact backbone")
    for key in ("lora_r", "lora_alpha", "batch_size", "max_length", "save_every", "keep_checkpoints", "log_every"):
        if getattr(recipe, key) <= 0:
            fail(f"{key} must be positive, got {getattr(recipe, key)}")
    for key in ("chunk_size", "max_steps", "num_visual_tokens", "max_train_examples"):
        if getattr(recipe, key) is not None and getattr(recipe, key) <= 0:
            fail(f"{key} must be positive or null, got {getattr(recipe, key)}")
    if recipe.max_minutes is not None and recipe.max_minutes <= 0:
        fail(f"max_minutes must be positive or null, got {recipe.max_minutes}")
    if recipe.lr <= 0 or recipe.temperature <= 0:
        fail("lr and temperature must be positive")
    if not 0.0 <= recipe.lora_dropout < 1.0:
        fail(f"lora_dropout must be in [0, 1), got {recipe.lora_dropout}")
    if not 0.0 <= recipe.warmup_ratio < 1.0:
        fail(f"warmup_ratio must be in [0, 1), got {recipe.warmup_ratio}")
    if recipe.max_steps is None and recipe.epochs <= 0:
        fail("set epochs > 0 or max_steps")
    if not 0.0 <= recipe.no_instruction_ratio <= 1.0:
        fail(f"no_instruction_ratio must be in [0, 1], got {recipe.no_instruction_ratio}")
    if recipe.trunk_distillation < 0 or recipe.trunk_distillation_temperature <= 0:
        fail("trunk_distillation must be >= 0 and trunk_distillation_temperature positive")
    if recipe.trunk_distillation and (recipe.backbone != "compact" or recipe.stage != "stage2"
                                      or not recipe.global_image_token):
        fail("trunk_distillation is for the compact backbone's stage2 with global_image_token: true "
             "(the frozen trunk's mean-pooled map, that token's features, is the teacher)")
    if not 0.0 <= recipe.mixed_batch_ratio <= 1.0:
        fail(f"mixed_batch_ratio must be in [0, 1], got {recipe.mixed_batch_ratio}")
    if recipe.continue_adapter and (recipe.backbone != "compact" or recipe.stage != "stage2"):
        fail("continue_adapter is for the compact backbone's stage2 (it continues a light checkpoint's adapter)")
    if recipe.batch_family_key and not recipe.batch_by_task:
        fail("batch_family_key needs batch_by_task: true (families are kept together inside one task's batches)")
    if recipe.mixed_batch_ratio and not recipe.batch_by_task:
        fail("mixed_batch_ratio needs batch_by_task: true (without it every batch is mixed already)")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", recipe.device):
        fail(f"device must be auto, cpu, cuda or cuda:N, got {recipe.device!r}")
    if (recipe.train_projector or recipe.global_image_token) and recipe.backbone != "compact":
        fail("train_projector and global_image_token exist only for the compact backbone")
    if recipe.hard_negatives < 0:
        fail(f"hard_negatives must be >= 0, got {recipe.hard_negatives}")
    if recipe.mined_negatives and (recipe.stage != "stage2" or not recipe.hard_negatives):
        fail("mined_negatives is for stage2 with hard_negatives > 0")
    if recipe.mined_negative_modality not in ("any", "other"):
        fail(f"mined_negative_modality must be 'any' or 'other', got {recipe.mined_negative_modality!r}")
    if recipe.mined_negative_depth <= 0:
        fail(f"mined_negative_depth must be positive, got {recipe.mined_negative_depth}")
    if recipe.adapter_name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", recipe.adapter_name):
        fail(f"adapter_name must be a plain folder name, got {recipe.adapter_name!r}")
    if recipe.joint_rank_weight < 0 or recipe.joint_rank_batch <= 0 or recipe.joint_rank_max_length <= 0:
        fail("joint_rank_weight must be >= 0, joint_rank_batch and joint_rank_max_length positive")
    if recipe.joint_rank_weight and (recipe.stage != "stage2" or recipe.backbone != "compact"
                                     or not recipe.rerank_data):
        fail("joint_rank_weight is for the compact backbone's stage2, with `rerank_data` (lamra train mine)")
    if recipe.rank_from_retriever and (recipe.stage != "rank" or recipe.backbone != "compact"):
        fail("rank_from_retriever is for the compact backbone's rank stage")
    if recipe.rank_loss not in ("next_token", "grouped"):
        fail(f"rank_loss must be 'next_token' or 'grouped', got {recipe.rank_loss!r}")
    if recipe.rank_loss == "grouped" and (recipe.stage != "rank" or recipe.rank_group_size < 2):
        fail("rank_loss: grouped is for the rank stage, with rank_group_size >= 2")
    if recipe.rank_datasets is not None:
        if recipe.stage != "rank":
            fail("rank_datasets is for the rank stage")
        for dataset in recipe.rank_datasets:
            try:
                dataset_id_of(dataset)
            except ValueError:
                fail(f"rank_datasets: unknown dataset {dataset!r}")
    if recipe.dataset_fractions is not None:
        if recipe.stage != "stage2":
            fail("dataset_fractions is for stage2")
        for dataset, fraction in recipe.dataset_fractions.items():
            try:
                dataset_id_of(dataset)
            except ValueError:
                fail(f"dataset_fractions: unknown dataset {dataset!r}")
            if not 0.0 < fraction <= 1.0:
                fail(f"dataset_fractions: {dataset}'s fraction must be in (0, 1], got {fraction}")
    if not 2 <= recipe.listwise_min_candidates <= recipe.listwise_max_candidates:
        fail("need 2 <= listwise_min_candidates <= listwise_max_candidates")
