"""Official prompt strings, chat rendering, training labels, and reranker scores checked by hand."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from lamra import LamRA
from lamra.backbones.base import IGNORE_INDEX, render_chatml
from lamra.prompts import (
    LISTWISE_INSTRUCTION,
    POINTWISE_INSTRUCTION,
    embedding_messages,
    format_mbeir_text,
    listwise_messages,
    pointwise_messages,
)
from lamra.backbones.compact import pack_rows
from lamra.reranker import Reranker, fuse


def test_official_rerank_instructions_byte_for_byte():
    # sha256 of the strings as Python evaluates them in the official datasets_mbeir_rerank.py
    # (a backslash continuation leaves 24 and 25 spaces inside; "responed" is theirs).
    assert "candidate" + " " * 24 + "meets" in POINTWISE_INSTRUCTION
    assert "others." + " " * 25 + "Evaluate" in LISTWISE_INSTRUCTION
    assert hashlib.sha256(POINTWISE_INSTRUCTION.encode()).hexdigest()[:16] == POINTWISE_SHA
    assert hashlib.sha256(LISTWISE_INSTRUCTION.encode()).hexdigest()[:16] == LISTWISE_SHA


POINTWISE_SHA = hashlib.sha256(
    b"I will provide you with a query and a candidate. Please evaluate whether the candidate"
    b"                        meets the requirements of the query. If it does, respond with 'Yes'; "
    b"if it doesn't, responed with 'No'."
).hexdigest()[:16]
LISTWISE_SHA = hashlib.sha256(
    b"I will provide you with a query followed by multiple candidates in the format: (1) cand1 (2) "
    b"cand2, etc. Each candidate is independent of the others.                         Evaluate each "
    b"candidate against the query, and respond with the number corresponding to the candidate that "
    b"best meets the requirements of the query."
).hexdigest()[:16]


def test_qwen2vl_chat_rendering_matches_the_official_template(images):
    rendered = render_chatml(
        embedding_messages([images[0], "A cat."]), "<|vision_start|><|image_pad|><|vision_end|>",
        "You are a helpful assistant.",
    )
    assert rendered.text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>A cat.\n"
        "Summarize above image and sentence in one word: <|im_end|>\n"
        "<|im_start|>assistant\n<emb>.<|im_end|>\n"
    )
    assert len(rendered.images) == 1


def test_summarize_suffix_per_modality(images):
    text = embedding_messages(["x"])[0]["content"][-1]["text"]
    image = embedding_messages([images[0]])[0]["content"][-1]["text"]
    assert text.endswith("\nSummarize above sentence in one word: ")
    assert image == "\nSummarize above image in one word: "


def test_format_mbeir_text():
    assert format_mbeir_text(' "a cat\r" ') == "A cat."
    assert format_mbeir_text("is it?") == "Is it?"
    assert format_mbeir_text(None) == ""


def test_qwen_tokenizer_matches_qwen2(qwen_tokenizer):
    assert qwen_tokenizer("Hello, world!", add_special_tokens=False)["input_ids"] == [9707, 11, 1879, 0]
    ids = qwen_tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>"])
    assert ids == [151643, 151644, 151645, 151652, 151655]


def test_training_labels_cover_only_the_answer(compact_backbone):
    query, candidate = ["a red apple"], ["a fruit that grows on trees"]
    inputs = compact_backbone.build_training_inputs(
        [pointwise_messages(query, candidate, "Yes"), listwise_messages(query, [candidate, ["a car"]], 2)]
    )
    for row, answer in enumerate(["Yes<|im_end|>", "Ans: (2)<|im_end|>"]):
        supervised = inputs["labels"][row][inputs["labels"][row] != IGNORE_INDEX]
        assert compact_backbone.tokenizer.decode(supervised) == answer


@pytest.fixture(scope="module")
def reranker(compact_backbone):
    return Reranker(compact_backbone, precision="fp32")


def test_pointwise_score_is_softmax_of_yes_no_logits(compact_backbone, reranker, images):
    query, candidates = ["a red square"], [[images[1]], ["a blue circle"], [images[0], "noise"]]
    scores = reranker.pointwise(query, candidates)
    for candidate, score in zip(candidates, scores, strict=True):
        inputs = compact_backbone.build_inputs([pointwise_messages(query, candidate)], add_generation_prompt=True)
        with torch.no_grad():
            logits = compact_backbone.hf_model(**inputs).logits[0, -1]
        yes, no = logits[reranker.yes_id].item(), logits[reranker.no_id].item()
        assert score == pytest.approx(np.exp(yes) / (np.exp(yes) + np.exp(no)), abs=1e-5)


def test_shared_prefix_scores_equal_the_per_candidate_run(reranker, images):
    candidates = [[images[1]], ["a blue circle"], [images[0], "noise"], ["a much longer candidate text " * 6], ["x"]]
    images_only = [[images[0]], [images[1]], [images[0].rotate(90)]]  # same placeholder ids, other pixels
    for query in (["a red square"], [images[0]], [images[1], "the same shape"]):
        whole = reranker.pointwise(query, candidates, batch_size=2, shared_prefix=False)
        shared = reranker.pointwise(query, candidates, shared_prefix=True)  # one packed pass
        np.testing.assert_allclose(shared, whole, atol=1e-4)
        assert np.ptp(whole) > 1e-3  # the candidates really score differently
        conversations = [pointwise_messages(query, candidate) for candidate in candidates]
        longest = int(reranker.backbone.build_inputs(conversations, add_generation_prompt=True)["attention_mask"]
                      .sum(dim=1).max())
        with torch.no_grad():
            one_pass = reranker.backbone.last_hidden_with_shared_prefix(conversations)
            for budget in (1, longest + 4):  # a pass per candidate; passes of one to a few candidates
                several = reranker.backbone.last_hidden_with_shared_prefix(conversations, max_tokens=budget)
                torch.testing.assert_close(several, one_pass, atol=1e-4, rtol=0)
        single = reranker.pointwise(query, candidates[:1], shared_prefix=True)  # the prefix is all but one token
        np.testing.assert_allclose(single, whole[:1], atol=1e-4)
        whole = reranker.pointwise(query, images_only, shared_prefix=False)
        np.testing.assert_allclose(reranker.pointwise(query, images_only, shared_prefix=True), whole, atol=1e-4)
        assert np.ptp(whole) > 1e-4


def test_pack_rows_fills_each_pass_up_to_its_budget():
    assert pack_rows([3, 3, 3, 10, 1], 6) == [[0, 1], [2], [3], [4]]
    assert pack_rows([2, 2], 0) == [[0], [1]]
    assert pack_rows([], 6) == []


def test_listwise_scores_are_softmax_over_serial_numbers(compact_backbone, reranker):
    query, candidates = ["a red apple"], [["an apple"], ["a car"], ["a pear"]]
    scores = reranker.listwise(query, candidates, window=5)
    inputs = compact_backbone.build_inputs([listwise_messages(query, candidates)], assistant_prefix="Ans: (")
    assert compact_backbone.tokenizer.decode(inputs["input_ids"][0][-4:]) == "\nAns: ("
    with torch.no_grad():
        logits = compact_backbone.hf_model(**inputs).logits[0, -1]
    numbers = logits[[compact_backbone.tokenize(str(n))[0] for n in (1, 2, 3)]]
    np.testing.assert_allclose(scores, numbers.softmax(-1).numpy(), atol=1e-5)
    assert scores.sum() == pytest.approx(1.0, abs=1e-5)


def test_rerank_fuses_and_sorts(compact_backbone, reranker):
    model = LamRA(compact_backbone, compact_backbone, precision="fp32")
    candidates = ["an apple", "a car", "a pear"]
    retrieval = [0.9, 0.1, 0.5]
    hits = model.rerank("a red apple", candidates, retrieval_scores=retrieval, weight=0.5)
    rerank = reranker.pointwise(["a red apple"], [[c] for c in candidates])
    expected = fuse(np.array(retrieval), rerank, 0.5)
    assert [h.id for h in hits] == list(np.argsort(-expected))
    assert [h.score for h in hits] == pytest.approx(sorted(expected, reverse=True), abs=1e-5)


@pytest.mark.parametrize("count,window,stride", [(10, 5, 2), (10, 5, 3), (7, 3, 1), (23, 5, 2), (6, 5, 4), (4, 5, 2)])
def test_sliding_windows_bring_the_best_to_the_top_in_one_pass(count, window, stride):
    from lamra.reranker import sliding_window_order

    rng = np.random.default_rng(count * 100 + window * 10 + stride)
    for _ in range(20):
        value = rng.permutation(count)  # the oracle: higher is better
        calls = []

        def by_value(ids):
            calls.append(list(ids))
            assert len(ids) == min(window, count)
            return sorted(ids, key=lambda i: -value[i])

        order = sliding_window_order(count, window, stride, by_value)
        assert sorted(order) == list(range(count))
        settled = min(window - stride, count)  # one pass settles the top window - stride
        assert [value[i] for i in order[:settled]] == sorted(value, reverse=True)[:settled]
        assert len(calls) == max(0, -(-(count - window) // stride)) + 1


def test_sliding_windows_refuse_a_stride_that_cannot_move_anything_up():
    from lamra.reranker import sliding_window_order

    with pytest.raises(ValueError, match="stride"):
        sliding_window_order(10, 5, 5, lambda ids: ids)


def test_listwise_beyond_the_window_scores_by_place(reranker):
    candidates = [[f"candidate {i}"] for i in range(7)]
    scores = reranker.listwise(["a red apple"], candidates, window=3)
    np.testing.assert_allclose(sorted(scores, reverse=True), (7 - np.arange(7)) / 7)
    within = reranker.listwise(["a red apple"], candidates[:3], window=3)  # one window: probabilities
    assert within.sum() == pytest.approx(1.0, abs=1e-5)
