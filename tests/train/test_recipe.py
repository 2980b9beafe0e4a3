"""Recipes (YAML -> checked Recipe) and the step schedule they drive (lr, steps, batch order)."""

import json
import math
from pathlib import Path

import pytest
import torch

from lamra.train.recipe import (
    REPO_RECIPES_DIR,
    Recipe,
    RecipeError,
    load_recipe,
    parse_override,
    recipe_from_dict,
    save_recipe,
)
from lamra.train.schedule import BatchOrder, GroupedBatchOrder, cosine_lr_factor, cosine_with_warmup, count_training_steps

SHIPPED = sorted(REPO_RECIPES_DIR.glob("*.yaml"))


def test_every_shipped_recipe_loads():
    names = {path.stem for path in SHIPPED}
    expected = {f"qwen2vl-{s}" for s in ("stage1", "stage2", "rank")}
    expected |= {f"compact-{s}" for s in ("stage0", "stage1", "stage2", "rank")}
    expected |= {f"smoke-{s}" for s in ("stage0", "stage1", "stage2", "rank")}
    assert expected <= names
    for path in SHIPPED:
        recipe = load_recipe(path)
        assert recipe.name == path.stem
        assert recipe.stage == path.stem.split("-")[-1]  # e.g. smoke-qwen2vl-rank -> rank


def test_qwen_recipes_carry_the_papers_values():
    stage1, stage2, rank = (load_recipe(f"qwen2vl-{s}") for s in ("stage1", "stage2", "rank"))
    assert (stage1.lora_r, stage1.lora_alpha, stage1.lr, stage1.epochs) == (64, 128, 2e-4, 2)
    assert (stage2.lora_r, stage2.lora_alpha, stage2.lr, stage2.epochs) == (128, 256, 1e-4, 1)
    assert (rank.lora_r, rank.lora_alpha, rank.lr, rank.epochs, rank.max_length) == (128, 256, 2e-5, 1, 2048)
    for recipe in (stage1, stage2, rank):
        assert (recipe.temperature, recipe.warmup_ratio, recipe.weight_decay, recipe.bf16) == (0.05, 0.03, 0.0, True)
        assert recipe.backbone == "qwen2-vl" and recipe.max_steps is None
    assert stage1.hard_negatives == 0 and stage2.init_from


def test_compact_and_smoke_recipes_fit_their_budgets():
    seconds_per_step = 7.0  # batch 48 on 2 cores (ASSETS.md): budgets scale with batch size
    budgets_min = {"stage0": 10, "stage1": 25, "stage2": 35, "rank": 30}
    for stage, minutes in budgets_min.items():
        compact = load_recipe(f"compact-{stage}")
        assert compact.backbone == "compact" and compact.lora_r <= 16
        estimate = compact.max_steps * seconds_per_step * compact.batch_size / 48
        assert estimate <= minutes * 60, (stage, estimate)
        smoke = load_recipe(f"smoke-{stage}")
        assert smoke.max_steps * smoke.batch_size <= 128 and smoke.save_every < smoke.max_steps


def test_unknown_keys_and_bad_values_name_the_key_and_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("stage: stage1\nlearning_rate: 1e-4\n")
    with pytest.raises(RecipeError, match=r"mine\.yaml: unknown key 'learning_rate'"):
        load_recipe(path)
    for text, message in [
        ("stage: stage1\nbatch_size: 4.5\n", "batch_size must be an integer"),
        ("stage: stage1\nlr: fast\n", "lr must be a number"),
        ("stage: stage1\nbf16: maybe\n", "bf16 must be true/false"),
        ("stage: stage3\n", "stage must be one of"),
        ("lr: 1.0e-4\n", "missing key 'stage'"),
        ("stage: stage0\nbackbone: qwen2-vl\n", "only for the compact backbone"),
        ("stage: stage1\nlora_dropout: 1.5\n", "lora_dropout"),
        ("stage: stage2\nmixed_batch_ratio: 0.5\n", "needs batch_by_task"),
        ("stage: stage2\nbatch_family_key: concept\n", "needs batch_by_task"),
        ("stage: stage2\nbatch_by_task: true\nmixed_batch_ratio: 2\n", "mixed_batch_ratio must be in"),
        ("stage: stage1\ndevice: gpu\n", "device must be auto, cpu, cuda"),
        ("stage: stage2\nmined_negatives: m.jsonl\n", "mined_negatives is for stage2 with hard_negatives"),
        ("stage: stage2\nhard_negatives: 1\nmined_negatives: [1, 2]\n", "mined_negatives must be .*a list of strings"),
        ("stage: stage2\nadapter_name: ../stage2\n", "adapter_name must be a plain folder name"),
        ("stage: stage2\nmined_negative_modality: image\n", "mined_negative_modality must be 'any' or 'other'"),
        ("stage: stage2\nrank_from_retriever: true\n", "rank_from_retriever is for the compact backbone's rank"),
        ("stage: rank\nrank_loss: pairwise\n", "rank_loss must be 'next_token' or 'grouped'"),
        ("stage: rank\nrank_loss: grouped\nrank_group_size: 1\n", "rank_group_size >= 2"),
        ("stage: stage2\nrank_loss: grouped\n", "rank_loss: grouped is for the rank stage"),
        ("stage: stage2\nrank_datasets: [EmojiQA]\n", "rank_datasets is for the rank stage"),
        ("stage: rank\nrank_datasets: []\n", "rank_datasets must be a list of strings"),
        ("stage: rank\nrank_datasets: [EmojiQA, Nowhere]\n", "unknown dataset 'Nowhere'"),
        ("stage: rank\ndataset_fractions: {EmojiQA: 0.5}\n", "dataset_fractions is for stage2"),
        ("stage: stage2\ndataset_fractions: {Nowhere: 0.5}\n", "dataset_fractions: unknown dataset 'Nowhere'"),
        ("stage: stage2\ndataset_fractions: {EmojiQA: 0}\n", "EmojiQA's fraction must be in"),
        ("stage: stage2\ndataset_fractions: [EmojiQA]\n", "dataset_fractions must be a mapping"),
        ("stage: rank\njoint_rank_weight: 1\nrerank_data: m.jsonl\n", "joint_rank_weight is for the compact backbone's stage2"),
        ("stage: stage2\njoint_rank_weight: 1\n", "joint_rank_weight is for .* with `rerank_data`"),
        ("stage: stage2\njoint_rank_weight: -1\n", "joint_rank_weight must be >= 0"),
        ("- just\n- a list\n", "mapping"),
        ("stage: [unclosed\n", "not valid YAML"),
    ]:
        path.write_text(text)
        with pytest.raises(RecipeError, match=message) as error:
            load_recipe(path)
        assert str(path) in str(error.value)
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "nowhere.yaml")


def test_values_are_normalised(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMRA_HOME", str(tmp_path / "home"))
    recipe = recipe_from_dict({"stage": 2, "lr": "2e-4", "epochs": 1, "train_data": "$LAMRA_HOME/q.jsonl"})
    assert recipe.stage == "stage2"
    assert recipe.lr == 2e-4 and isinstance(recipe.lr, float)  # YAML 1.1 reads 2e-4 as a string
    assert isinstance(recipe.epochs, float)
    assert recipe.train_data == str(tmp_path / "home" / "q.jsonl")
    several = recipe_from_dict({"stage": 2, "hard_negatives": 1, "mined_negatives": ["$LAMRA_HOME/a.jsonl", "b.jsonl"]})
    assert several.mined_negatives == [str(tmp_path / "home" / "a.jsonl"), "b.jsonl"]
    assert recipe_from_dict({"stage": "rank", "model": "Qwen/Qwen2-VL-7B-Instruct"}).model == "Qwen/Qwen2-VL-7B-Instruct"


def test_overrides_and_saving_round_trip(tmp_path):
    key, value = parse_override("lr=3e-4")
    assert (key, value) == ("lr", "3e-4")
    recipe = load_recipe("smoke-stage1", overrides=dict([parse_override("max_steps=3"), (key, value)]))
    assert (recipe.max_steps, recipe.lr) == (3, 3e-4)
    assert recipe.run_dir == Path("runs/smoke-stage1")
    save_recipe(recipe, tmp_path / "run" / "recipe.yaml")
    assert load_recipe(tmp_path / "run" / "recipe.yaml") == recipe
    with pytest.raises(RecipeError, match="key=value"):
        parse_override("max_steps")
    assert isinstance(recipe, Recipe)


def test_cosine_schedule_with_warmup():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=2.0)
    scheduler = cosine_with_warmup(optimizer, total_steps=100, warmup_ratio=0.03)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step(), scheduler.step()
    assert lrs[:4] == pytest.approx([0.0, 2 / 3, 4 / 3, 2.0])  # ceil(3) warmup steps
    assert lrs[3 + 97 // 2] == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * (97 // 2) / 97)))
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:])) and lrs[-1] < 0.01
    assert cosine_lr_factor(100, 100, 3) == pytest.approx(0.0)
    assert cosine_lr_factor(100, 100, 3, min_lr_ratio=0.1) == pytest.approx(0.1)


def test_step_counts():
    assert count_training_steps(1000, 48, epochs=2) == 40  # 20 full batches per epoch
    assert count_training_steps(1000, 48, epochs=2, max_steps=7) == 7
    with pytest.raises(ValueError, match="no training steps"):
        count_training_steps(10, 48)


def test_batch_order_is_a_function_of_seed_and_step():
    order = BatchOrder(num_examples=10, global_batch_size=4, seed=3, num_ranks=2)
    assert order.steps_per_epoch == 2
    epoch0 = order.global_indices(0) + order.global_indices(1)
    assert len(set(epoch0)) == 8  # no repeats within an epoch; 2 examples dropped
    assert order.global_indices(2) != order.global_indices(0)  # a new permutation per epoch
    assert BatchOrder(10, 4, seed=3, num_ranks=2).global_indices(5) == order.global_indices(5)
    assert order.rank_indices(1, 0) + order.rank_indices(1, 1) == order.global_indices(1)
    with pytest.raises(ValueError, match="split evenly"):
        BatchOrder(10, 5, seed=0, num_ranks=2)


def test_grouped_batch_order_draws_each_batch_from_one_group():
    groups = [list(range(0, 9)), list(range(9, 13)), list(range(13, 15))]  # the last cannot fill a batch
    order = GroupedBatchOrder(groups, global_batch_size=4, seed=5, num_ranks=2)
    assert order.steps_per_epoch == 3  # 2 batches from the first group, 1 from the second
    epoch0 = [order.global_indices(step) for step in range(3)]
    for batch in epoch0:
        assert len(batch) == 4 and any(set(batch) <= set(group) for group in groups)
    assert len({i for batch in epoch0 for i in batch}) == 12  # no repeats within an epoch
    assert [order.global_indices(step) for step in range(3, 6)] != epoch0  # reshuffled per epoch
    assert GroupedBatchOrder(groups, 4, seed=5, num_ranks=2).global_indices(4) == order.global_indices(4)
    assert order.rank_indices(2, 0) + order.rank_indices(2, 1) == order.global_indices(2)
    with pytest.raises(ValueError, match="full batch"):
        GroupedBatchOrder([[0, 1, 2], [3, 4]], global_batch_size=4, seed=0)


def test_grouped_batch_order_mixes_a_share_of_batches_across_groups():
    groups = [list(range(start, start + 40)) for start in range(0, 160, 40)]
    group_of = {i: g for g, group in enumerate(groups) for i in group}
    order = GroupedBatchOrder(groups, global_batch_size=8, seed=1, mixed_ratio=0.5)
    assert order.steps_per_epoch == 20
    epoch0 = [order.global_indices(step) for step in range(20)]
    assert sorted(i for batch in epoch0 for i in batch) == list(range(160))  # each example once
    mixed = [batch for batch in epoch0 if len({group_of[i] for i in batch}) > 1]
    assert 8 <= len(mixed) <= 10  # half of the batches re-cut across groups (a few may land in one)
    first_half = [len({group_of[i] for i in batch}) > 1 for batch in epoch0[:10]]
    assert 0 < sum(first_half) < 10  # mixed and one-task batches interleave over the steps
    assert all(len(batch) == 8 for batch in epoch0)
    pure = GroupedBatchOrder(groups, global_batch_size=8, seed=1)
    assert all(len({group_of[i] for i in pure.global_indices(s)}) == 1 for s in range(20))
    with pytest.raises(ValueError, match="mixed_ratio"):
        GroupedBatchOrder(groups, 8, seed=1, mixed_ratio=1.5)


def test_grouped_batch_order_keeps_each_family_in_one_run_of_a_batch():
    groups = [list(range(0, 48)), list(range(48, 96))]
    families = [list(range(start, start + 4)) for start in range(0, 96, 4) if start % 8 == 0]  # half in families
    order = GroupedBatchOrder(groups, global_batch_size=8, seed=3, families=families)
    epoch0 = [order.global_indices(step) for step in range(order.steps_per_epoch)]
    assert sorted(i for batch in epoch0 for i in batch) == list(range(96))  # each example once
    assert all(any(set(batch) <= set(group) for group in groups) for batch in epoch0)
    for batch in epoch0:
        for family in families:  # a family's members in a batch sit next to each other
            positions = [n for n, i in enumerate(batch) if i in family]
            assert not positions or positions[-1] - positions[0] == len(positions) - 1
    together = sum(any(set(family) <= set(batch) for batch in epoch0) for family in families)
    assert together >= len(families) - order.steps_per_epoch  # at most one family cut per batch edge
    assert [order.global_indices(s) for s in range(order.steps_per_epoch, 2 * order.steps_per_epoch)] != epoch0
    plain = GroupedBatchOrder(groups, global_batch_size=8, seed=3)
    assert GroupedBatchOrder(groups, 8, seed=3, families=[]).global_indices(5) == plain.global_indices(5)


def test_families_hold_one_query_per_positive_and_respect_the_size_cap(tmp_path):
    from lamra.data.mbeir import MBEIRQuery
    from lamra.train.stages.mbeir_data import MBEIRTrainData

    def query(qid, concept, positive):
        src = None if concept is None else json.dumps({"concept": concept})
        return MBEIRQuery(qid=qid, query_txt=qid, query_img_path=None, query_modality="text",
                          query_src_content=src, pos_cand_list=[positive], task_id=0)

    queries = [
        query("10:1", "A", "10:1"), query("10:2", "A", "10:1"),  # label and Unicode name: one positive
        *(query(f"10:{n}", "A", f"10:{n}") for n in range(3, 8)),  # five skin tones
        query("10:8", "B", "10:8"), query("10:9", None, "10:9"),
    ]
    pool = {q.pos_cand_list[0]: None for q in queries}
    data = MBEIRTrainData(queries, pool, None, tmp_path, seed=0)
    families = data.families("concept")
    assert sorted(map(sorted, families)) == [[0, 2, 3, 4, 5, 6], [1], [7]]  # query 8 has no concept
    assert sorted(map(len, data.families("concept", max_size=4))) == [1, 1, 2, 4]
    assert data.families("vendor") == []


def test_dataset_fractions_keep_a_seeded_share_of_the_listed_datasets(tmp_path):
    from lamra.train.stages.mbeir_data import MBEIRTrainData

    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"did": f"{d}:{n}", "txt": f"c{n}", "img_path": None, "modality": "text"}) + "\n"
                            for d in (10, 11) for n in range(400)))
    train = tmp_path / "query" / "train.jsonl"
    train.parent.mkdir()
    train.write_text("".join(json.dumps({"qid": f"{d}:{n}", "query_txt": f"q{n}", "query_img_path": None,
                                         "query_modality": "text", "pos_cand_list": [f"{d}:{n}"], "task_id": d - 10})
                             + "\n" for d in (10, 11) for n in range(400)))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"stage: stage2\ntrain_data: {train}\ncand_pool: {pool}\ndataset_fractions: {{WordNetPassage: 0.25}}\n")
    data = MBEIRTrainData.from_recipe(load_recipe(recipe), need_instructions=False)
    kept = [q.qid for q in data.queries if q.dataset_id == "11"]
    assert sum(q.dataset_id == "10" for q in data.queries) == 400  # unlisted: every query
    assert 60 <= len(kept) <= 140  # about a quarter of 400
    assert kept == [q.qid for q in MBEIRTrainData.from_recipe(load_recipe(recipe), need_instructions=False).queries
                    if q.dataset_id == "11"]  # the same draw every time


def test_training_device_resolves_auto_and_the_local_rank(monkeypatch):
    from lamra.train.distributed import training_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_device("auto") == torch.device("cpu")
    assert training_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert training_device("cuda") == torch.device("cuda", 3)  # torchrun: this process's GPU
    assert training_device("cuda:1") == torch.device("cuda", 1)
