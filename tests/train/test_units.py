"""Training pieces on their own: LoRA placement, samples of each stage, the answer-token loss, mining
resume, CLI errors."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
import torch
from train_helpers import make_slice, overrides

from lamra.prompts import LISTWISE_INSTRUCTION, POINTWISE_INSTRUCTION
from lamra.train.recipe import load_recipe

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_slice(tmp_path_factory.mktemp("unit-data"))


def test_lora_only_on_language_model_linears_qwen(tiny_qwen_dirs):
    from lamra.backbones.qwen_vl import QwenVLBackbone
    from lamra.train.lora import add_lora

    backbone = QwenVLBackbone.from_pretrained(tiny_qwen_dirs["qwen2_vl"])
    names = add_lora(backbone, 4, 8, 0.0)
    assert len(names) == 2 * 7  # 2 layers x q,k,v,o,gate,up,down
    assert not any("visual" in n or "lm_head" in n for n in names)
    trainable = [n for n, p in backbone.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_skipping_peft_input_casts_under_autocast_changes_no_gradient(tiny_qwen_dirs, monkeypatch):
    """make_embed_fn turns off peft's cast of LoRA inputs to fp32 under bf16 autocast: the matmul casts
    them back at once, so embeddings and gradients must come out exactly as with the casts."""
    import contextlib

    import lamra.train.retrieval as retrieval
    from lamra.backbones.qwen_vl import QwenVLBackbone
    from lamra.train.lora import add_lora
    from lamra.train.recipe import Recipe

    backbone = QwenVLBackbone.from_pretrained(tiny_qwen_dirs["qwen2_vl"])
    add_lora(backbone, 4, 8, 0.0)
    torch.manual_seed(0)
    for name, param in backbone.model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero, which would leave A without a gradient
            torch.nn.init.normal_(param, std=0.1)
    recipe = Recipe(stage="stage2", backbone="qwen2-vl", bf16=True, max_length=64)
    batch = [["a short query"], ["a much longer query about a red square on a white page"]]
    results = []
    for casts in (True, False):
        if casts:
            monkeypatch.setattr(retrieval, "disable_input_dtype_casting", lambda model, active: contextlib.nullcontext())
        else:
            monkeypatch.undo()
        backbone.model.zero_grad()
        embedded = retrieval.make_embed_fn(backbone, recipe)(batch)
        embedded.float().sum().backward()
        grads = [p.grad.clone() for n, p in backbone.model.named_parameters() if p.grad is not None]
        results.append((embedded.detach(), grads))
    (vectors_cast, grads_cast), (vectors, grads) = results
    assert len(grads) == 2 * 7 * 2  # every LoRA A and B got a gradient
    assert torch.equal(vectors_cast, vectors)
    assert all(torch.allclose(a, b, rtol=1e-3, atol=1e-6) for a, b in zip(grads_cast, grads))


def test_lora_pattern_on_compact_hits_exactly_the_lm_linears(compact_backbone):
    pattern = compact_backbone.lora_target_modules
    hit = [n for n, m in compact_backbone.hf_model.named_modules() if re.fullmatch(pattern, n)]
    assert len(hit) == 30 * 7
    assert all(isinstance(compact_backbone.hf_model.get_submodule(n), torch.nn.Linear) for n in hit)
    assert all(n.startswith("language_model.model.layers.") for n in hit)


def test_answer_token_loss_equals_next_token_loss():
    from lamra.train.losses import next_token_loss
    from lamra.train.rerank import answer_token_loss

    torch.manual_seed(0)
    head = torch.nn.Linear(8, 11, bias=False)
    backbone = type("B", (), {"logits_at": lambda self, h: head(h)})()
    hidden = torch.randn(2, 5, 8)
    labels = torch.tensor([[-100, -100, 3, 4, -100], [-100, 1, 2, 7, 9]])
    expected = next_token_loss(head(hidden), labels, reduction="sum")
    assert torch.allclose(answer_token_loss(backbone, hidden, labels), expected, atol=1e-5)


def test_stage2_examples_are_seeded_and_official(data):
    from lamra.train.retrieval import stage2_example
    from lamra.train.stages.mbeir_data import MBEIRTrainData

    recipe = load_recipe("smoke-stage2", overrides(data, data_path(data), "stage2"))
    train = MBEIRTrainData.from_recipe(recipe)
    first = [stage2_example(train, i, 0, hard_negatives=2) for i in range(len(train))]
    again = [stage2_example(train, i, 0, hard_negatives=2) for i in range(len(train))]
    assert [_texts(e) for e in first] == [_texts(e) for e in again]
    text_query = next(i for i, q in enumerate(train.queries) if q.query_modality == "text")
    query_text = first[text_query][0][-1]
    instructions = [p for k, v in train.instructions.items() for p in v if k[0] == train.queries[text_query].dataset_id]
    assert any(query_text.startswith(p + " ") for p in instructions), query_text
    assert query_text.endswith(".") and all(len(e[2]) == 2 for e in first)


def test_stage2_hard_negatives_come_from_the_mined_files(data, tmp_path):
    from lamra.train.retrieval import read_mined_negatives, stage2_example
    from lamra.train.stages.mbeir_data import MBEIRTrainData

    recipe = load_recipe("smoke-stage2", overrides(data, data_path(data), "stage2"))
    train = MBEIRTrainData.from_recipe(recipe)
    query = train.queries[0]
    others = [did for did in train.pool if did not in query.pos_cand_list and did not in query.neg_cand_list]
    files = []
    for name, top in (("local", [query.pos_cand_list[0], others[0], others[1]]), ("global", [others[2], others[3]])):
        files.append(tmp_path / f"{name}.jsonl")
        files[-1].write_text(json.dumps({"qid": query.qid, "gt_docs": query.pos_cand_list, "top_docs": top}) + "\n")
    recipe = load_recipe("smoke-stage2", overrides(data, data_path(data), "stage2", hard_negatives=1,
                                                    mined_negatives=[str(f) for f in files], mined_negative_depth=2))
    mined = read_mined_negatives(recipe, train)
    assert mined == {query.qid: [query.pos_cand_list[0], others[0], others[2], others[3]]}  # 2 from each file
    offered = set(query.neg_cand_list) | {others[0], others[2], others[3]}  # the positive never
    drawn = {tuple(_texts(stage2_example(train, 0, epoch, 1, 0.0, mined))[2][0]) for epoch in range(40)}
    expected = {tuple(_texts(([], [], [train.cand_segments(did)]))[2][0]) for did in offered}
    assert drawn == expected


def test_modality_aware_negatives_keep_only_another_modality(data, tmp_path):
    from lamra.train.retrieval import keep_other_modality, read_mined_negatives
    from lamra.train.stages.mbeir_data import MBEIRTrainData

    recipe = load_recipe("smoke-stage2", overrides(data, data_path(data), "stage2"))
    train = MBEIRTrainData.from_recipe(recipe)
    pool_ids = list(train.pool)
    mined = {q.qid: [*q.pos_cand_list, *pool_ids, "no-such-did"] for q in train.queries}
    kept = keep_other_modality(mined, train)
    assert set(kept) == {q.qid for q in train.queries}
    for query in train.queries:
        wanted = {train.pool[did].modality for did in query.pos_cand_list if did in train.pool}
        expected = [did for did in pool_ids if train.pool[did].modality not in wanted]
        assert kept[query.qid] == expected  # file order kept; positives and unknown dids dropped
    assert any(kept.values()) and any(len(v) < len(pool_ids) for v in kept.values())
    mined_file = tmp_path / "mined.jsonl"  # the recipe key applies it where mined negatives are read
    mined_file.write_text("".join(json.dumps({"qid": qid, "gt_docs": [], "top_docs": top}) + "\n"
                                  for qid, top in mined.items()))
    recipe = load_recipe("smoke-stage2", overrides(data, data_path(data), "stage2", hard_negatives=1,
                                                    mined_negatives=str(mined_file), mined_negative_depth=1000,
                                                    mined_negative_modality="other"))
    assert read_mined_negatives(recipe, train) == kept


def _mined_top12(train):
    """Each training query's positive, then up to 12 pool items that are not its positives."""
    return {q.qid: {"qid": q.qid, "gt_docs": q.pos_cand_list,
                    "top_docs": q.pos_cand_list[:1] + [d for d in list(train.pool)[:12] if d not in q.pos_cand_list]}
            for q in train.queries}


def test_rank_samples(data, compact_backbone, tmp_path):
    from lamra.train.rerank import RerankSamples
    from lamra.train.stages.mbeir_data import MBEIRTrainData

    recipe = load_recipe("smoke-rank", overrides(data, tmp_path, "rank"))
    train = MBEIRTrainData.from_recipe(recipe)
    samples = RerankSamples(train, _mined_top12(train), recipe, compact_backbone)
    assert len(samples) == 3 * len(train.queries)
    for index in range(0, 12, 3):
        yes, no, listwise = (samples.sample(index + k, 0) for k in range(3))
        assert yes[0]["content"][0]["text"] == POINTWISE_INSTRUCTION and yes[1]["content"][0]["text"] == "Yes"
        assert no[1]["content"][0]["text"] == "No"
        assert listwise[0]["content"][0]["text"] == LISTWISE_INSTRUCTION
        answer = listwise[1]["content"][0]["text"]
        k = int(re.fullmatch(r"Ans: \((\d)\)", answer).group(1))
        numbers = [p["text"] for p in listwise[0]["content"] if p["type"] == "text" and re.fullmatch(r"\(\d\) ", p["text"])]
        assert 2 <= len(numbers) <= 5 and 1 <= k <= len(numbers)


def test_rank_groups_put_the_positive_first(data, compact_backbone, tmp_path):
    from lamra.train.rerank import RerankSamples
    from lamra.train.stages.mbeir_data import MBEIRTrainData

    recipe = load_recipe("smoke-rank", overrides(data, tmp_path, "rank", rank_loss="grouped", rank_group_size=4))
    train = MBEIRTrainData.from_recipe(recipe)
    samples = RerankSamples(train, _mined_top12(train), recipe, compact_backbone)
    for index, query in enumerate(samples.queries[:6]):
        group = samples.group(index, 0)
        candidates = [tuple(_candidate_parts(prompt)) for prompt in group]
        assert len(group) == min(4, 1 + len(samples.negatives[query.qid]))
        assert all(prompt[0]["content"][0]["text"] == POINTWISE_INSTRUCTION and len(prompt) == 1 for prompt in group)
        expected = {tuple(_candidate_parts(p)) for p in (samples.sample(3 * index, e) for e in range(8))}
        assert candidates[0] in expected  # the positive, as its "Yes" samples show it
        assert len(set(candidates)) == len(candidates)  # negatives drawn without replacement
        assert samples.group(index, 0) == group  # seeded by (seed, epoch, qid)


def test_rank_datasets_keep_only_those_datasets_queries():
    from lamra.train.mining import of_datasets

    mined = {qid: {"qid": qid, "top_docs": []} for qid in ("11:1", "11:2", "12:7", "14:3")}
    assert set(of_datasets(mined, ["WordNetPassage", "12"])) == {"11:1", "11:2", "12:7"}  # a name or an id
    assert of_datasets(mined, ["EmojiQA"]) == {}


def _candidate_parts(prompt):
    """What follows the candidate label in a pointwise prompt: texts, and images by identity."""
    from lamra.prompts import CANDIDATE_LABEL

    parts = [p["text"] if p["type"] == "text" else id(p["image"]) for p in prompt[0]["content"]]
    return parts[parts.index(CANDIDATE_LABEL):]


def test_grouped_rank_loss_adds_up_over_micro_batches(data, tmp_path):
    from lamra.backbones.compact import CompactBackbone
    from lamra.train.lora import add_lora
    from lamra.train.rerank import RerankSamples, grouped_step_fn
    from lamra.train.stages.mbeir_data import MBEIRTrainData

    backbone = CompactBackbone.from_parts(image_grid=2, seed=0)
    add_lora(backbone, 4, 8, 0.0)
    params = [p for p in backbone.model.parameters() if p.requires_grad]
    recipe = load_recipe("smoke-rank", overrides(data, tmp_path, "rank", rank_loss="grouped", bf16=False))
    train = MBEIRTrainData.from_recipe(recipe)
    samples = RerankSamples(train, _mined_top12(train), recipe, backbone)
    runs = []
    for chunk in (1, 3):
        backbone.model.zero_grad()
        step = grouped_step_fn(backbone, replace(recipe, chunk_size=chunk), samples)
        loss = step([0, 1, 2], 0)
        runs.append((loss, torch.cat([p.grad.flatten() for p in params])))
    (loss_one, grad_one), (loss_all, grad_all) = runs
    assert 0.5 < loss_one < 20 and loss_one == pytest.approx(loss_all, rel=1e-4)
    assert torch.allclose(grad_one, grad_all, rtol=1e-3, atol=1e-6) and grad_one.abs().sum() > 0


def test_grouped_rank_loss_teaches_the_positive_first(data, tmp_path):
    """A tiny reranker fits its training groups: the positive's Yes-No logit ends up first in most."""
    from lamra.backbones.compact import CompactBackbone
    from lamra.reranker import single_token_id
    from lamra.train.lora import add_lora
    from lamra.train.rerank import RerankSamples, grouped_step_fn
    from lamra.train.stages.mbeir_data import MBEIRTrainData

    torch.manual_seed(0)
    backbone = CompactBackbone.from_parts(image_grid=2, seed=0)
    add_lora(backbone, 8, 16, 0.0)
    # small groups and listwise pairs: the cheapest samples that still ask for an order
    recipe = load_recipe("smoke-rank", overrides(data, tmp_path, "rank", rank_loss="grouped", rank_group_size=3,
                                                 max_train_examples=6, listwise_max_candidates=2))
    train = MBEIRTrainData.from_recipe(recipe)
    samples = RerankSamples(train, _mined_top12(train), recipe, backbone)
    queries = list(range(len(samples.queries)))
    yes, no = single_token_id(backbone, "Yes"), single_token_id(backbone, "No")

    @torch.no_grad()
    def positive_first() -> float:
        hits = 0
        for index in queries:
            inputs = backbone.build_inputs(samples.group(index, 0), add_generation_prompt=True)
            logits = backbone.logits_at(backbone.hidden_states(inputs)[:, -1], fp32=True)
            hits += int((logits[:, yes] - logits[:, no]).argmax() == 0)
        return hits / len(queries)

    before = positive_first()
    step = grouped_step_fn(backbone, recipe, samples)
    optimizer = torch.optim.AdamW([p for p in backbone.model.parameters() if p.requires_grad], lr=2e-3)
    for _ in range(10):
        optimizer.zero_grad()
        step(queries, 0)
        optimizer.step()
    after = positive_first()
    assert len(queries) == 6 and after >= 4 / 6 and after > before, (before, after)  # groups of 3: chance 1/3


def test_chance_loss_is_that_of_a_reranker_that_knows_only_the_format(data, compact_backbone, tmp_path):
    import math

    from lamra.train.rerank import chance_loss

    recipe = load_recipe("smoke-rank", overrides(data, tmp_path, "rank", listwise_min_candidates=2,
                                                 listwise_max_candidates=5))
    # SmolLM2's tokenizer: "Yes"/"No" + <|im_end|> (2 tokens), "Ans: (k)" + <|im_end|> (6)
    expected = (2 * math.log(2) + sum(math.log(n) for n in range(2, 6)) / 4) / (2 + 2 + 6)
    assert chance_loss(compact_backbone, recipe) == pytest.approx(expected, abs=1e-9)
    assert 0.25 < expected < 0.27  # where the CPU rerankers' loss settled (0.26-0.29)
    pairs_only = load_recipe("smoke-rank", overrides(data, tmp_path, "rank", listwise_min_candidates=2,
                                                     listwise_max_candidates=2))
    assert chance_loss(compact_backbone, pairs_only) == pytest.approx(3 * math.log(2) / 10, abs=1e-9)
    grouped = load_recipe("smoke-rank", overrides(data, tmp_path, "rank", listwise_min_candidates=2,
                                                  listwise_max_candidates=2, rank_loss="grouped", rank_group_size=4))
    binary_entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert chance_loss(compact_backbone, grouped) == pytest.approx(math.log(4) + binary_entropy + math.log(2) / 6, abs=1e-9)


def test_stage0_captions_come_from_training_queries(data):
    from lamra.train.align import training_captions
    from lamra.train.stages.mbeir_data import MBEIRTrainData

    recipe = load_recipe("smoke-stage0", overrides(data, data_path(data), "stage0"))
    train = MBEIRTrainData.from_recipe(recipe, need_instructions=False)
    captions = training_captions(train)
    images = {q.query_img_path for q in train.queries} | {train.pool[d].img_path for q in train.queries for d in q.pos_cand_list if d in train.pool}
    assert captions and all(img in images for img, _ in captions)


def test_mining_resumes_and_finalises_atomically(data, tiny_qwen_dirs, tmp_path):
    from lamra.backbones.qwen_vl import QwenVLBackbone
    from lamra.train.mining import mine
    from lamra.train.stages.mbeir_data import MBEIRTrainData

    recipe = load_recipe("smoke-qwen2vl-rank", overrides(data, tmp_path, "rank"))
    train = MBEIRTrainData.from_recipe(recipe)
    backbone = QwenVLBackbone.from_pretrained(tiny_qwen_dirs["qwen2_vl"])
    whole = mine(backbone, train, tmp_path / "a.jsonl", top_k=5, show_progress=False)
    out = tmp_path / "b.jsonl"
    lines = whole.read_text().splitlines(keepends=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_text("".join(lines[:5]) + lines[5][:20])  # killed mid-line
    mine(backbone, train, out, top_k=5, show_progress=False)
    assert not partial.exists()
    got = [json.loads(line) for line in out.read_text().splitlines()]
    want = [json.loads(line) for line in lines]
    assert [r["qid"] for r in got] == [r["qid"] for r in want]
    assert [r["top_docs"] for r in got] == [r["top_docs"] for r in want]


def test_cli_rejects_a_recipe_of_another_stage():
    from typer.testing import CliRunner

    from lamra.train.cli import train_app

    result = CliRunner().invoke(train_app, ["stage2", "--recipe", "smoke-stage1"])
    assert result.exit_code != 0 and "stage1 recipe" in result.output


def data_path(data):
    from pathlib import Path

    return Path(data["root"]) / "runs"


def _texts(example):
    def flat(segments):
        return [s if isinstance(s, str) else s.tobytes()[:64] for s in segments]

    return flat(example[0]), flat(example[1]), [flat(n) for n in example[2]]


def test_every_recipe_stage_has_a_module_with_its_command():
    import importlib

    from lamra.train.recipe import STAGES
    from lamra.train.stages.run import STAGE_MODULES

    assert set(STAGE_MODULES) == set(STAGES)
    for stage, name in STAGE_MODULES.items():
        module = importlib.import_module(name)
        assert callable(module.prepare) and isinstance(module.TRAINS_LORA, bool)
        assert f"lamra train {stage}" in module.__doc__
    assert importlib.import_module(STAGE_MODULES["stage0"]).TRAINS_LORA is False
