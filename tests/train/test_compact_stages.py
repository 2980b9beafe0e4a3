"""The compact LMM through every stage with the smoke recipes on a slice of the fixture data (a few
steps each: its forward/backward costs ~1 s per small batch on 2 cores): stage 0 aligns the projector,
stage 1/2 train LoRA, mining and rank run, and the light checkpoints load as LamRA-Ret and -Rank."""

from __future__ import annotations

import json

import pytest
import torch
from train_helpers import make_slice, overrides

from lamra.light_checkpoint import read_light_config
from lamra.train.recipe import load_recipe
from lamra.train.stages import run_stage

SMALL = dict(batch_size=4, chunk_size=4, save_every=100, warmup_ratio=0.0, max_train_examples=8)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    from lamra.train.merge import merge
    from lamra.train.mining import mine
    from lamra.train.stages import load_retriever
    from lamra.train.stages.mbeir_data import MBEIRTrainData

    data = make_slice(tmp_path_factory.mktemp("train-data"), num_queries=8, num_pairs=8, extra_pool=8)
    runs = tmp_path_factory.mktemp("runs")
    out = {}
    r0 = load_recipe("smoke-stage0", overrides(data, runs, "stage0", **SMALL, max_steps=4, lr=3e-3))
    out["stage0"] = run_stage(r0, show_progress=False)
    stage0 = str(out["stage0"].final_dir)
    r1 = load_recipe("smoke-stage1", overrides(data, runs, "stage1", **SMALL, max_steps=4, lr=3e-3, init_from=stage0))
    out["stage1"] = run_stage(r1, show_progress=False)
    out["merged1"] = merge(r1)
    r2 = load_recipe("smoke-stage2", overrides(data, runs, "stage2", **SMALL, max_steps=2, init_from=str(out["merged1"])))
    out["stage2"], out["stage2_recipe"] = run_stage(r2, show_progress=False), r2
    mined = runs / "mined_top10.jsonl"
    out["mined"] = mine(load_retriever(out["stage2"].final_dir), MBEIRTrainData.from_recipe(r2), mined, top_k=10,
                        show_progress=False)
    rr = load_recipe("smoke-rank", overrides(data, runs, "rank", **{**SMALL, "batch_size": 3, "chunk_size": 3},
                                             max_steps=2, init_from=stage0, rerank_data=str(mined)))
    out["rank"] = run_stage(rr, show_progress=False)
    # stage 2 again on top of stage 2 (its own adapter name), with hard negatives from the mined file
    r2b = load_recipe("smoke-stage2", overrides(data, runs, "stage2", **SMALL, max_steps=1, name="smoke-stage2b",
                                                init_from=str(out["stage2"].final_dir), adapter_name="stage2-hardneg",
                                                hard_negatives=1, mined_negatives=str(mined)))
    out["stage2b"] = run_stage(r2b, show_progress=False)
    # a reranker trained on top of a packaged LamRA-Ret (its adapters and projector) instead of stage 0,
    # with the grouped loss (the next-token loss is the first rank run's)
    from lamra.train.package import package_retrieval

    out["packaged"] = package_retrieval(out["stage2"].final_dir, runs / "packaged")
    ron = load_recipe("smoke-rank", overrides(data, runs, "rank", **{**SMALL, "batch_size": 3, "chunk_size": 3},
                                              max_steps=2, name="smoke-rank-on-ret", init_from=str(out["packaged"]),
                                              rerank_data=str(mined), rank_from_retriever=True,
                                              train_projector=True, rank_loss="grouped", rank_group_size=3))
    out["rank_on_ret"] = run_stage(ron, show_progress=False)
    # the packaged LamRA-Ret's own adapter trained further (continue_adapter), at a negligible lr and a real one
    for key, lr in (("continued_lr0", 1e-12), ("continued", 3e-3)):
        rc = load_recipe("smoke-stage2", overrides(data, runs, "stage2", **SMALL, max_steps=1, name=f"smoke-{key}",
                                                   init_from=str(out["packaged"]), continue_adapter=True, lr=lr))
        out[key] = run_stage(rc, show_progress=False)
    # one adapter for both jobs: stage 2 on top of stage 2 with the rank stage's loss added
    rj = load_recipe("smoke-stage2", overrides(data, runs, "stage2", **SMALL, max_steps=2, name="smoke-stage2-joint",
                                               init_from=str(out["stage2"].final_dir), adapter_name="stage2-joint",
                                               joint_rank_weight=0.5, joint_rank_batch=3, joint_rank_max_length=256,
                                               rerank_data=str(mined), mining_top_k=10))
    out["joint"], out["joint_recipe"] = run_stage(rj, show_progress=False), rj
    return out


def test_stage0_aligns_projector(chain):
    result = chain["stage0"]
    assert result.losses[-1] < result.losses[0], result.losses
    config = read_light_config(result.final_dir)
    assert config["retrieval_adapters"] == [] and config["image_grid"] == 2
    assert (result.final_dir / "projector.safetensors").is_file()


def test_stage1_loss_falls(chain):
    losses = chain["stage1"].losses
    assert losses[-1] < losses[0], losses


def test_light_checkpoints_list_adapters_in_order(chain):
    config = read_light_config(chain["stage2"].final_dir)
    assert config["retrieval_adapters"] == ["adapters/stage1", "adapters/stage2"]
    assert read_light_config(chain["merged1"])["retrieval_adapters"] == ["adapters/stage1"]
    rank = read_light_config(chain["rank"].final_dir)
    assert rank["rank_adapter"] == "adapters/rank" and rank["retrieval_adapters"] == []
    assert all(torch.isfinite(torch.tensor(chain[k].losses)).all() for k in ("stage2", "rank", "stage2b"))
    again = read_light_config(chain["stage2b"].final_dir)["retrieval_adapters"]
    assert again == ["adapters/stage1", "adapters/stage2", "adapters/stage2-hardneg"]


def test_stage2_trains_the_projector_and_packaging_keeps_one_per_role(chain, tmp_path):
    from safetensors.torch import load_file

    from lamra.light_checkpoint import load_light_compact
    from lamra.train.package import package_compact

    stage2, rank = chain["stage2"].final_dir, chain["rank"].final_dir
    assert read_light_config(stage2)["global_image_token"] is True
    trained, aligned = load_file(stage2 / "projector.safetensors"), load_file(rank / "projector.safetensors")
    assert any(not torch.equal(trained[k], aligned[k]) for k in trained)
    packaged = package_compact(stage2, rank, tmp_path / "packaged")
    config = read_light_config(packaged)
    assert config["roles"]["retrieval"]["global_image_token"] is True
    assert config["roles"]["rank"]["global_image_token"] is False
    ret, rer = load_light_compact(packaged, "retrieval"), load_light_compact(packaged, "rank")
    assert ret.hf_model.config.num_image_tokens == 5 and rer.hf_model.config.num_image_tokens == 4
    packed = load_file(packaged / config["roles"]["retrieval"]["projector"])
    assert all(torch.equal(packed[k], trained[k].to(torch.bfloat16)) for k in trained)
    cpu = {"device": f"CPU, 1 process(es) x {torch.get_num_threads()} threads", "torch": torch.__version__}
    # where each role's stages ran: its run and every run it grew from (init_from), earliest first
    assert config["trained_on"] == {
        "retrieval": [{"run": name, **cpu} for name in ("smoke-stage0", "smoke-stage1", "smoke-stage2")],
        "rank": [{"run": name, **cpu} for name in ("smoke-stage0", "smoke-rank")],
    }


def test_continue_adapter_trains_the_packaged_adapter_in_place(chain):
    from safetensors.torch import load_file

    from lamra.train.package import RETRIEVAL_RANK, fold_adapters

    packaged = chain["packaged"] / "adapters" / "retrieval"
    start = load_file(packaged / "adapter_model.safetensors")
    for key in ("continued_lr0", "continued"):
        final = chain[key].final_dir
        assert read_light_config(final)["retrieval_adapters"] == ["adapters/retrieval"]  # no adapter added
        assert json.loads((final / "adapters/retrieval/adapter_config.json").read_text())["r"] == RETRIEVAL_RANK
    unchanged = load_file(chain["continued_lr0"].final_dir / "adapters/retrieval/adapter_model.safetensors")
    assert unchanged.keys() == start.keys()  # loaded, not drawn anew: at lr 1e-12 every weight stays the package's
    assert all(torch.allclose(unchanged[k], start[k].float(), rtol=0, atol=1e-9) for k in start)
    trained = chain["continued"].final_dir / "adapters" / "retrieval"
    weights = load_file(trained / "adapter_model.safetensors")
    assert max(float((weights[k] - start[k].float()).abs().max()) for k in start) > 1e-4
    # packaging it again cuts nothing: the continued adapter already has the package's rank
    assert fold_adapters([trained], chain["continued"].final_dir.parent / "refolded", RETRIEVAL_RANK) < 1e-3
    # and the package says every run its retrieval role grew from, the package's own ones first
    from lamra.train.package import package_retrieval

    repackaged = read_light_config(package_retrieval(chain["continued"].final_dir, trained.parents[2] / "repackaged"))
    runs = [record["run"] for record in repackaged["trained_on"]["retrieval"]]
    assert runs == ["smoke-stage0", "smoke-stage1", "smoke-stage2", "smoke-continued"]
    # beside a package's reranker (a refined retriever shipped with the reranker as it was), that
    # reranker keeps the package's record of where it was trained
    from lamra.train.package import package_compact

    shipped = package_compact(chain["stage2"].final_dir, chain["rank"].final_dir, trained.parents[2] / "shipped")
    shipped_rank = read_light_config(shipped)["trained_on"]["rank"]
    assert [record["run"] for record in shipped_rank] == ["smoke-stage0", "smoke-rank"]
    both = read_light_config(package_compact(chain["continued"].final_dir, shipped, trained.parents[2] / "both"))
    assert both["trained_on"]["rank"] == shipped_rank
    assert [record["run"] for record in both["trained_on"]["retrieval"]] == runs


def test_trained_models_load_and_run(chain, images):
    from lamra import LamRA

    ret = LamRA.from_pretrained(chain["stage2"].final_dir, precision="bf16")
    vectors = ret.encode(["a red square", images[1]])
    assert vectors.shape == (2, 576) and abs(float((vectors[0] ** 2).sum()) - 1) < 1e-3
    rank = LamRA.from_pretrained(chain["rank"].final_dir, reranker=chain["rank"].final_dir, precision="bf16")
    hits = rank.rerank("a red square", ["a red square", "a blue circle"], mode="pointwise")
    assert len(hits) == 2


def test_mined_lines(chain):
    records = [json.loads(line) for line in chain["mined"].read_text().splitlines()]
    assert records and all(len(r["top_docs"]) == 10 for r in records)


def test_mining_reuses_a_matching_index_and_refuses_another_models(chain, tmp_path):
    from lamra.index import VectorIndex
    from lamra.retriever import Retriever
    from lamra.train.mining import _cand_item, mine, mining_pool
    from lamra.train.stages import load_retriever
    from lamra.train.stages.mbeir_data import MBEIRTrainData

    data = MBEIRTrainData.from_recipe(chain["stage2_recipe"])
    dids = mining_pool(data, data.queries, None)

    def index_of(checkpoint, directory):
        vectors = Retriever(load_retriever(checkpoint), precision="fp32").encode(
            [_cand_item(data, did) for did in dids], image_root=data.image_root, role="document")
        VectorIndex.from_vectors(vectors, dids, model_name=str(checkpoint)).save(directory)
        return directory

    retriever = load_retriever(chain["stage2"].final_dir)
    reused = mine(retriever, data, tmp_path / "reused.jsonl", top_k=10, show_progress=False, precision="fp32",
                  pool_index=index_of(chain["stage2"].final_dir, tmp_path / "own"))
    fresh = mine(retriever, data, tmp_path / "fresh.jsonl", top_k=10, show_progress=False, precision="fp32")
    top = [[json.loads(line)["top_docs"] for line in path.read_text().splitlines()] for path in (reused, fresh)]
    assert top[0] == top[1]
    with pytest.raises(ValueError, match="not built with this retriever"):
        mine(retriever, data, tmp_path / "other.jsonl", top_k=10, show_progress=False,
             pool_index=index_of(chain["stage0"].final_dir, tmp_path / "stage0"))


def test_mining_with_the_appearance_channel_ranks_as_the_evaluation_does(chain, tmp_path):
    import numpy as np

    from lamra.appearance import AppearanceChannel
    from lamra.index import VectorIndex
    from lamra.retriever import Retriever
    from lamra.train.mining import _cand_item, mine, mining_pool
    from lamra.train.stages import load_retriever
    from lamra.train.stages.mbeir_data import MBEIRTrainData

    data = MBEIRTrainData.from_recipe(chain["stage2_recipe"])
    dids = mining_pool(data, data.queries, None)
    backbone = load_retriever(chain["stage2"].final_dir)
    features = backbone.global_image_features([data.image(data.pool[d].img_path) for d in dids
                                               if data.pool[d].img_path]).numpy()
    channel = AppearanceChannel.fit(features, dims=4, weight=4.0)  # heavy: it must reorder image lists
    evaluation = Retriever(backbone, precision="fp32", appearance=channel)
    index = tmp_path / "with-appearance"
    VectorIndex.from_vectors(evaluation.encode([_cand_item(data, d) for d in dids], image_root=data.image_root,
                                               role="document"), dids, similarity="dot").save(index)

    def mined(name, **options):
        path = mine(backbone, data, tmp_path / name, top_k=10, show_progress=False, precision="fp32", **options)
        return [json.loads(line) for line in path.read_text().splitlines()]

    reused, fresh, plain = (mined("reused.jsonl", channels={"appearance": channel}, pool_index=index),
                            mined("fresh.jsonl", channels={"appearance": channel}), mined("plain.jsonl"))
    assert [r["top_docs"] for r in reused] == [r["top_docs"] for r in fresh]
    np.testing.assert_allclose([r["scores"] for r in reused], [r["scores"] for r in fresh], atol=1e-4)
    # image-to-image scores rise by up to the channel's weight, the others stay the LMM's
    assert max(a["scores"][0] for a in fresh) > 1.5 > max(b["scores"][0] for b in plain)
    with pytest.raises(ValueError, match=r"holds \d+-d vectors.*score channels"):
        mine(backbone, data, tmp_path / "refused.jsonl", top_k=10, show_progress=False, pool_index=index)


def test_role_digest_keys_each_role_by_its_own_files(chain, tmp_path):
    import shutil

    from lamra.light_checkpoint import role_digest
    from lamra.train.package import package_compact

    packaged = package_compact(chain["stage2"].final_dir, chain["rank"].final_dir, tmp_path / "packaged")
    before = {role: role_digest(packaged, role) for role in ("retrieval", "rank")}
    assert before["retrieval"] != before["rank"]
    moved = tmp_path / "moved"
    shutil.copytree(packaged, moved)  # where it lies and where it was trained do not count
    config = read_light_config(moved)
    config["trained_on"] = {}
    (moved / "lamra.json").write_text(json.dumps(config))
    assert {role: role_digest(moved, role) for role in before} == before
    adapter = next((moved / config["rank_adapter"]).glob("*.safetensors"))
    adapter.write_bytes(adapter.read_bytes()[:-1] + b"\x00")  # another reranker
    assert role_digest(moved, "retrieval") == before["retrieval"]
    assert role_digest(moved, "rank") != before["rank"]


def test_local_mining_ranks_each_query_within_its_positives_datasets(chain, tmp_path):
    from lamra.train.mining import mine
    from lamra.train.stages import load_retriever
    from lamra.train.stages.mbeir_data import MBEIRTrainData

    data = MBEIRTrainData.from_recipe(chain["stage2_recipe"])
    retriever = load_retriever(chain["stage2"].final_dir)
    everything = len(data.pool)

    def mined(name, **options):
        path = mine(retriever, data, tmp_path / name, top_k=everything, show_progress=False, precision="fp32", **options)
        return {r["qid"]: r for r in map(json.loads, path.read_text().splitlines())}

    whole, local = mined("global.jsonl"), mined("local.jsonl", local=True)
    datasets_seen = set()
    for qid, record in local.items():
        datasets = {did.split(":")[0] for did in record["gt_docs"]}
        datasets_seen |= datasets
        kept = [(did, score) for did, score in zip(whole[qid]["top_docs"], whole[qid]["scores"])
                if did.split(":")[0] in datasets]
        assert kept and set(record["top_docs"]) == {did for did, _ in kept}  # other datasets left out
        # the global order (equal vectors, the same text in two datasets, may swap places)
        assert record["scores"] == pytest.approx([score for _, score in kept], abs=1e-5)
    assert len(datasets_seen) > 1 and any(len(r["top_docs"]) < everything for r in local.values())


def test_rank_on_retriever_stacks_its_adapter_on_the_retrievers(chain):
    from lamra.light_checkpoint import load_light_compact, role_digest
    from lamra.train.package import lora_deltas

    packaged, final = chain["packaged"], chain["rank_on_ret"].final_dir
    assert len(chain["rank_on_ret"].losses) == 2 and torch.isfinite(torch.tensor(chain["rank_on_ret"].losses)).all()
    config = read_light_config(final)
    assert config["roles"]["rank"]["adapters"] == ["adapters/retrieval", "adapters/rank"]
    assert role_digest(final, "retrieval") == role_digest(packaged, "retrieval")  # copied unchanged
    ret, rank = load_light_compact(final, "retrieval"), load_light_compact(final, "rank")
    own = lora_deltas(final / "adapters" / "rank")
    module = next(name for name in own if name.endswith("layers.0.self_attn.q_proj"))
    path = module.removeprefix("base_model.model.") + ".weight"
    weights = {name: dict(backbone.model.named_parameters())[path] for name, backbone in (("ret", ret), ("rank", rank))}
    assert torch.allclose(weights["rank"] - weights["ret"], own[module], atol=1e-5)  # retrieval, then rank
    assert config["roles"]["rank"]["projector"] == "projector_rank.safetensors"  # projector.safetensors: LamRA-Ret's
    trained, started = read_tensors(final / "projector_rank.safetensors"), read_tensors(final / "projector.safetensors")
    assert any(not torch.equal(trained[k].float(), started[k].float())
               for k in trained)  # the reranker's projector trained on from the retriever's


def test_packaging_a_rank_on_retriever_keeps_the_retrieval_role(chain, tmp_path):
    from lamra.light_checkpoint import role_digest
    from lamra.train.package import package_compact

    packaged, final = chain["packaged"], chain["rank_on_ret"].final_dir
    assert read_light_config(packaged)["rank_adapter"] is None  # LamRA-Ret alone
    shipped = package_compact(packaged, final, tmp_path / "shipped")
    assert role_digest(shipped, "retrieval") == role_digest(packaged, "retrieval")
    config = read_light_config(shipped)
    assert config["roles"]["rank"]["adapters"] == ["adapters/retrieval", "adapters/rank"]
    rank_tensors = read_tensors(shipped / "adapters" / "rank" / "adapter_model.safetensors").values()
    assert {v.dtype for v in rank_tensors} == {torch.bfloat16}
    with pytest.raises(ValueError, match="another LamRA-Ret"):
        package_compact(chain["stage2"].final_dir, final, tmp_path / "wrong")
    assert not (tmp_path / "wrong").exists()


def test_packaging_a_rank_on_retriever_carries_the_retrievers_score_channels(chain, tmp_path):
    import shutil

    import numpy as np

    from lamra.appearance import AppearanceChannel
    from lamra.colour import ColourChannel
    from lamra.light_checkpoint import load_channel, role_digest, set_channel
    from lamra.train.package import package_compact

    retriever = tmp_path / "retriever"  # the LamRA-Ret the reranker trained on, given channels afterwards
    shutil.copytree(chain["packaged"], retriever)
    rng = np.random.default_rng(0)
    appearance = AppearanceChannel.fit(rng.normal(size=(20, 1280)), dims=4, weight=0.5)
    colour = ColourChannel.fit(rng.random((20, 512)), rng.normal(size=(10, 8)), rng.random((10, 512)),
                               rng.random(10) > 0.5, rng.random((10, 512)), dims=3, image_weight=0.1)
    set_channel(retriever, "appearance", appearance)
    set_channel(retriever, "colour", colour)
    shipped = package_compact(retriever, chain["rank_on_ret"].final_dir, tmp_path / "shipped")
    assert role_digest(shipped, "retrieval") == role_digest(retriever, "retrieval") != role_digest(chain["packaged"])
    np.testing.assert_array_equal(load_channel(shipped, "appearance").components, appearance.components)
    np.testing.assert_array_equal(load_channel(shipped, "colour").predictor, colour.predictor)


def test_rank_from_retriever_needs_a_retriever(chain, tmp_path):
    from lamra.train.stages.models import StageSetupError, load_training_backbone

    recipe = load_recipe("smoke-rank", {"stage": "rank", "init_from": str(chain["stage0"].final_dir),
                                        "num_visual_tokens": 4, "rank_from_retriever": True})
    with pytest.raises(StageSetupError, match="no LamRA-Ret"):
        load_training_backbone(recipe, role="rank")
    recipe = load_recipe("smoke-rank", {"stage": "rank", "init_from": str(chain["packaged"]), "num_visual_tokens": 4})
    with pytest.raises(StageSetupError, match="rank_from_retriever"):
        load_training_backbone(recipe, role="rank")


def read_tensors(path):
    from safetensors.torch import load_file

    return load_file(path)


def test_joint_stage2_logs_both_jobs_and_packages_one_model_for_both(chain):
    from lamra import LamRA
    from lamra.light_checkpoint import role_digest
    from lamra.train.trainer import read_loss_log

    recipe, final = chain["joint_recipe"], chain["joint"].final_dir
    log = read_loss_log(recipe.run_dir)
    assert [row["step"] for row in log] == [1, 2]
    for row in log:
        assert row["rank"] > 0.0 and row["retrieval"] >= 0.0
        assert row["loss"] == pytest.approx(row["retrieval"] + recipe.joint_rank_weight * row["rank"], rel=1e-6)
    config = read_light_config(final)
    assert config["retrieval_adapters"] == ["adapters/stage1", "adapters/stage2", "adapters/stage2-joint"]
    assert config["rank_adapter"] == "adapters/stage2-joint"
    assert role_digest(final, "rank") == role_digest(final, "retrieval")
    model = LamRA.from_pretrained(final)
    assert model.reranker.backbone is model.retriever.backbone  # one model in memory, not two
    hits = model.rerank("a red apple", ["red apple", "soccer ball"], mode="pointwise")
    assert len(hits) == 2


def test_joint_rank_draws_depend_on_the_step_not_on_when_it_runs():
    from lamra.train.joint import draw_rank_indices
    from lamra.train.recipe import Recipe

    recipe = Recipe(stage="stage2", seed=3, joint_rank_batch=4)
    first = draw_rank_indices(recipe, 100, [5, 9, 11], epoch=0)
    assert first == draw_rank_indices(recipe, 100, [5, 9, 11], epoch=0)  # a resumed run draws the same
    assert len(set(first)) == 4 and all(0 <= i < 100 for i in first)
    others = [draw_rank_indices(recipe, 100, [5, 9, 12], epoch=0), draw_rank_indices(recipe, 100, [5, 9, 11], epoch=1)]
    assert all(other != first for other in others)
    assert sorted(draw_rank_indices(recipe, 3, [1], epoch=0)) == [0, 1, 2]  # fewer samples than the batch
