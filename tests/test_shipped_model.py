"""The shipped compact LamRA keeps its measured quality (a later change cannot silently break it).

The floor is 0.8x the value this exact procedure measured when the weights were shipped (see
``MEASURED``), on a fixed subset of the PocketBEIR test split built here from the same sources.
"""

from __future__ import annotations

import pytest

from lamra import LamRA
from lamra.pocketbeir.build import build_pocketbeir
from lamra.pocketbeir.subset import subset_mbeir
from lamra.evaluate.fusion import RerankMethod, model_reranker
from lamra.evaluate.runner import evaluate_mbeir
from lamra.model import SHIPPED_DIR

# Measured with this test's procedure on the shipped weights (bf16 autocast, CPU): 40 t->i queries
# against a concept-subsampled pool (the first shipped model: 0.125 and 0.025; the second, trained
# on CPU: 0.35 and 0.10; the third, stages 1 and 2 on a GPU: 0.60 and 0.225, 0.20 with the CPU
# attention kernel). The fourth (stage 2 continued on CPU, recipes/compact-more-stage2.yaml): 0.525
# and 0.15. The fifth (stage 2 trained 1.6x longer on a GPU, recipes/compact-gpu-long-stage2.yaml):
# 0.475 and 0.25. The sixth (5.8 epochs, recipes/compact-gpu-6epoch-stage2.yaml): 0.625 and 0.275.
# The seventh (its adapter continued on CPU toward skin tones, recipes/compact-cpu-tone-stage2.yaml):
# 0.60 and 0.35, with retrieval R@1 0.375 (0.30 before). The same weights with the colour channel
# (lamra.colour), shipped now: 0.625 and 0.275, with retrieval R@1 0.275: on these 40 queries the
# channel moves four hits out of first place and into the top 5 (on the full test split EmojiName's
# R@1 rises, 4.1 -> 5.1), and the reranker leaves R@1 where retrieval puts it.
MEASURED = {"retrieval_r5": 0.625, "rerank_r1": 0.275}
TASK = "emojiname_task0"  # t -> i: "grinning face with big eyes" -> the emoji image


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    root = tmp_path_factory.mktemp("pocketbeir")
    build_pocketbeir(root / "full", show_progress=False)
    return subset_mbeir(root / "full", root / "lite", "test", queries_per_task=40, distractor_concepts=60, seed=1)


@pytest.fixture(scope="module")
def model():
    assert (SHIPPED_DIR / "lamra.json").is_file(), "the shipped weights are missing"
    return LamRA.from_pretrained()


def test_shipped_model_loads_retriever_and_reranker(model):
    assert model.backbone.kind == "compact" and model.reranker is not None


def test_the_shipped_reranker_loads_on_first_use_only(monkeypatch):
    import lamra.model

    loads = []
    real_load = lamra.model.load_backbone
    monkeypatch.setattr(lamra.model, "load_backbone", lambda *a, **k: loads.append(k.get("role")) or real_load(*a, **k))
    fresh = LamRA.from_pretrained()
    fresh.encode(["a cheesy slice of Italian food"])
    assert loads == [None] and fresh.has_reranker  # encoding needs LamRA-Ret alone
    assert fresh.reranker is fresh.reranker is not None
    assert loads == [None, "rank"]  # loaded once, when first used


def test_retrieval_quality_floor(model, subset):
    report = evaluate_mbeir(model, subset, tasks=[TASK], show_progress=False)
    recall = report.results[0].metrics["R@5"]
    assert recall >= 0.8 * MEASURED["retrieval_r5"], recall


# Image -> image (EmojiVendor: the same emoji in the other vendor's style) with the shipped appearance
# channel and without it (the same weights: the LMM embedding alone), on a subset of 120 queries: at 40,
# one query decides (the package shipped now: 0.725 with the channel, 0.75 without; at 120, 0.733 and
# 0.658 with 384 whitened components and w = 1.5). Measured with this procedure on the channel blind to
# 2 skin-tone directions, w = 1.25: 0.708 and 0.658; with the colour channel added (shipped now): 0.842
# and 0.658 ("channel" below is both channels together).
VENDOR_TASK = "emojivendor_task4"
VENDOR_MEASURED = {"channel": 0.842, "lmm_only": 0.658}


@pytest.fixture(scope="module")
def vendor_subset(subset):
    full = subset.parent / "full"  # the full build the first subset was cut from
    return subset_mbeir(full, full.parent / "vendor", "test", queries_per_task=120, distractor_concepts=60, seed=1)


def test_the_score_channels_lift_image_to_image_retrieval(model, vendor_subset):
    lmm_only = LamRA(model.backbone, precision=model.precision)  # no channel: cosine of the LMM embedding
    assert (model.similarity, lmm_only.similarity) == ("dot", "cosine")
    recall = {name: evaluate_mbeir(encoder, vendor_subset, tasks=[VENDOR_TASK], show_progress=False).results[0].metrics["R@5"]
              for name, encoder in (("channel", model), ("lmm_only", lmm_only))}
    assert recall["channel"] >= 0.8 * VENDOR_MEASURED["channel"], recall
    assert recall["channel"] > recall["lmm_only"], recall


# EmojiVariant ("this emoji with medium-dark skin tone"), 120 queries, with the shipped colour channel and
# without it (the appearance channel in both). Measured with this procedure on the channel shipped now:
# 0.692 with it, 0.608 without.
VARIANT_TASK = "emojivariant_task7"
VARIANT_MEASURED = {"colour": 0.692, "without": 0.608}


def test_the_colour_channel_finds_the_asked_skin_tone(model, vendor_subset):
    without = LamRA(model.backbone, precision=model.precision, appearance=model.retriever.appearance)
    assert model.retriever.colour is not None and without.retriever.colour is None
    recall = {name: evaluate_mbeir(encoder, vendor_subset, tasks=[VARIANT_TASK], show_progress=False).results[0].metrics["R@5"]
              for name, encoder in (("colour", model), ("without", without))}
    assert recall["colour"] >= 0.8 * VARIANT_MEASURED["colour"], recall
    assert recall["colour"] > recall["without"], recall


# Fixed before the weights were trained: (query, instruction, label expected at top 1) over the demo's
# 16 Google emoji. Text queries paraphrase, never quote, the label; image queries are Twitter drawings.
TEXT = "Retrieve the image that matches the description."
SAME = "Find the same emoji drawn in another style."
FIXED_QUERIES = [
    ("a cheesy slice of Italian food", TEXT, "pizza"),
    ("a pet that meows", TEXT, "cat face"),
    ("a loyal pet that barks", TEXT, "dog face"),
    ("a car to drive on the road", TEXT, "automobile"),
    ("a plane flying in the sky", TEXT, "airplane"),
    ("colourful arc in the sky after the rain", TEXT, "rainbow"),
    ("a ball kicked in football", TEXT, "soccer ball"),
    ("a stringed musical instrument", TEXT, "guitar"),
    ("a cup of hot coffee", TEXT, "hot beverage"),
    ("a bike with two wheels", TEXT, "bicycle"),
    ("the moon at night", TEXT, "crescent moon"),
    ("an animal that swims in the sea", TEXT, "fish"),
    ("twitter-1f431.png", SAME, "cat face"),
    ("twitter-1f355.png", SAME, "pizza"),
    (("the same emoji", "twitter-1f431.png"), None, "cat face"),
    (("the same food", "twitter-1f355.png"), None, "pizza"),
]
# Measured on the shipped weights: 14 of 16, above the bar of 10 of 12 (a blind model gets
# about 1; the CPU-trained model 11; the next four 12, 12, 14 and 13). The floor guards what is shipped,
# one miss below the measurement. Misses: "a loyal pet that barks" -> cat face, "a ball kicked in
# football" -> pizza.
FIXED_FLOOR = 13 / 16


def test_fixed_demo_queries_hit_at_top_1(model):
    from lamra.demo import DEMO_DIR, load_collection

    collection = load_collection()
    corpus = model.encode([DEMO_DIR / record["img_path"] for record in collection], role="document")
    misses = []
    for query, instruction, expected in FIXED_QUERIES:
        if isinstance(query, tuple):
            item = (query[0], DEMO_DIR / query[1])
        else:
            item = DEMO_DIR / query if query.endswith(".png") else query
        top = collection[int((corpus @ model.encode([item], instruction=instruction)[0]).argmax())]["label"]
        if top != expected:
            misses.append((query, expected, top))
    hits = len(FIXED_QUERIES) - len(misses)
    assert hits >= FIXED_FLOOR * len(FIXED_QUERIES), f"{hits}/{len(FIXED_QUERIES)} at top 1; misses: {misses}"


def test_rerank_quality_floor(model, subset):
    rerank = RerankMethod("pointwise", model_reranker(model, subset), top_k=5)
    report = evaluate_mbeir(model, subset, tasks=[TASK], rerankers=[rerank], show_progress=False)
    reranked = next(r for r in report.results if r.method == "pointwise")
    assert reranked.metrics["R@1"] >= 0.8 * MEASURED["rerank_r1"], reranked.metrics


def test_shipped_weights_stay_small():
    total = sum(path.stat().st_size for path in SHIPPED_DIR.rglob("*") if path.is_file())
    assert total <= 30e6, f"{total / 1e6:.1f} MB"


def test_listwise_parity_mode_scores_the_greedy_answer(model, monkeypatch):
    from lamra.demo import DEMO_DIR, load_collection
    from lamra.items import to_segments

    candidates = [DEMO_DIR / record["img_path"] for record in load_collection()[:5]]
    query = "a cheesy slice of Italian food"
    answer = model.reranker.listwise_answer(to_segments(query), [to_segments(c) for c in candidates])
    probabilities = model.reranker.listwise(to_segments(query), [to_segments(c) for c in candidates])
    assert answer == f"Ans: ({int(probabilities.argmax()) + 1})"  # greedy text and the number scores agree
    hits = model.rerank(query, candidates, mode="listwise-parity")
    assert [h.rerank_score for h in sorted(hits, key=lambda h: h.id)] == [
        1.0 if i == probabilities.argmax() else 0.0 for i in range(5)]
    monkeypatch.setattr(model.reranker, "listwise_answer", lambda q, c: "The answer is (2)")  # not exact
    assert all(h.rerank_score == 0.0 for h in model.rerank(query, candidates, mode="listwise-parity"))
