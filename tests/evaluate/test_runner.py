"""lamra.evaluate.runner end to end on a hand-made M-BEIR-format directory, with a hashing encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eval_helpers import CONCEPTS, HashingEncoder, build_toy_mbeir

from lamra.data.mbeir import InstructionRow, write_instructions
from lamra.evaluate.metrics import evaluate_run, recall_ks_for
from lamra.evaluate.fusion import RerankMethod, sweep_rerank_weights
from lamra.evaluate.queries import pick_instruction
from lamra.evaluate.report import load_results, write_report
from lamra.evaluate.runner import choose_rerank_weights, evaluate_mbeir
from lamra.evaluate.tables import rerank_speed_table, results_page, retrieval_table, write_markdown
from lamra.evaluate.trec import trec_eval_means
from lamra.index import live_version

@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return build_toy_mbeir(tmp_path_factory.mktemp("toy_mbeir"))


def oracle_reranker(query, candidates, retrieval_scores):
    """Scores 1 for the query's positives (looked up from the toy qrels), 0 otherwise."""
    return [1.0 if c["did"] in ORACLE_POSITIVES[query["qid"]] else 0.0 for c in candidates]


ORACLE_POSITIVES: dict[str, set[str]] = {}


@pytest.fixture(scope="module")
def report(toy_root):
    for split in ("val", "test"):
        for qrels_file in (toy_root / "qrels" / split).glob("*.txt"):
            for line in qrels_file.read_text().splitlines():
                qid, _, did, *_ = line.split()
                ORACLE_POSITIVES.setdefault(qid, set()).add(did)
    return evaluate_mbeir(HashingEncoder(), toy_root, method="hashing", pools=("local", "global"), batch_size=4,
                          rerankers=[RerankMethod("hashing + oracle", oracle_reranker, top_k=10)],
                          show_progress=False)


def brute_force_metrics(encoder, toy_root, task_key, pool_file, ks):
    """Expected numbers, computed without the index, the grouping or the runner's items."""
    name, task = task_key.rsplit("_task", 1)
    queries = [json.loads(line) for line in (toy_root / f"query/test/mbeir_{name}_task{task}_test.jsonl").read_text().splitlines()]
    pool = [json.loads(line) for line in (toy_root / pool_file).read_text().splitlines()]
    q = encoder.encode([{"txt": x["query_txt"], "img_path": x["query_img_path"]} for x in queries])
    c = encoder.encode([{"txt": x["txt"], "img_path": x["img_path"]} for x in pool])
    scores = q @ c.T
    run = {}
    for row, query in enumerate(queries):
        # best score first; equal scores by did, descending (trec_eval's rule, which the runner follows)
        order = sorted(range(len(pool)), key=lambda j: pool[j]["did"], reverse=True)
        order.sort(key=lambda j: round(float(scores[row, j]), 5), reverse=True)
        run[query["qid"]] = [pool[j]["did"] for j in order]
    return run, {x["qid"]: set(x["pos_cand_list"]) for x in queries}


def test_every_task_and_pool_is_scored_with_its_datasets_cutoffs(report):
    keys = {(r.method, r.pool, r.task.key) for r in report.results}
    assert len(keys) == len(report.results) == 2 * 2 * 4
    fashion = report.result("hashing", "local", "fashioniq_task7")
    assert set(fashion.metrics) == {"R@10", "R@20", "R@50", "MAP@5", "queries"}
    assert set(report.result("hashing", "local", "toyname_task0").metrics) == {"R@1", "R@5", "R@10", "MAP@5", "queries"}
    # the t->i task is easy for bag-of-words: four exact names, and one query naming two concepts
    assert report.result("hashing", "local", "toyname_task0").metrics["R@5"] == 1.0


def test_numbers_match_a_brute_force_computation(report, toy_root):
    encoder = HashingEncoder()
    for key, pool_file in [("toyname_task0", "cand_pool/local/mbeir_toyname_task0_cand_pool.jsonl"),
                           ("toypassage_task1", "cand_pool/global/mbeir_union_test_cand_pool.jsonl")]:
        pool = "local" if "local" in pool_file else "global"
        run, qrels = brute_force_metrics(encoder, toy_root, key, pool_file, (1, 5, 10))
        expected = evaluate_run(run, qrels, recall_ks=recall_ks_for(key.split("_")[0]))
        got = report.result("hashing", pool, key).metrics
        for name in ("R@1", "R@5", "R@10", "MAP@5"):
            assert got[name] == pytest.approx(expected[name]), (key, name)


def test_instructions_are_seeded_per_query_and_passed_to_the_encoder(toy_root):
    from lamra.data.mbeir import MBEIRDataset

    data = MBEIRDataset(toy_root)
    queries = list(data.queries("test", "toyname", 0))
    picks = [pick_instruction(data, q, "image", seed=0) for q in queries]
    assert picks == [pick_instruction(data, q, "image", seed=0) for q in reversed(queries)][::-1]
    assert all(p in {"Find the picture.", "Show an image of this.", "Retrieve a photo."} for p in picks)
    other_seeds = {pick_instruction(data, queries[0], "image", seed=s) for s in range(20)}
    assert len(other_seeds) > 1
    assert pick_instruction(data, queries[0], "image", choice="first") == "Find the picture."

    encoder = HashingEncoder()
    evaluate_mbeir(encoder, toy_root, tasks=["toyname"], show_progress=False)
    # what the encoder joins, f"{instruction} {txt}", is the official query text
    assert encoder.texts["query", "10:0"] == f"{picks[0]} a photo of the apple."
    assert [encoder.instruction_of["query", q.qid] for q in queries] == picks
    assert all(encoder.instruction_of["candidate", f"10:{i}"] is None for i in range(len(CONCEPTS)))


def test_queries_can_go_without_instruction_or_with_another_instructions_file(toy_root, tmp_path):
    encoder = HashingEncoder()
    report = evaluate_mbeir(encoder, toy_root, tasks=["toyname"], instruction_choice="none", show_progress=False)
    assert encoder.instruction_of["query", "10:0"] is None
    assert encoder.texts["query", "10:0"] == "A photo of the apple."  # formatted alone, as official
    assert report.settings["instruction_choice"] == "none"

    heldout = tmp_path / "heldout.tsv"
    write_instructions(heldout, [InstructionRow("text", "image", "ToyName", "10", ["locate the pictogram"])])
    encoder = HashingEncoder()
    report = evaluate_mbeir(encoder, toy_root, tasks=["toyname"], instructions_path=heldout, show_progress=False)
    assert {encoder.instruction_of["query", f"10:{n}"] for n in range(5)} == {"Locate the pictogram."}
    assert report.settings["instructions"] == str(heldout)


def test_oracle_rerank_lifts_r1_to_the_retrieval_hit_rate_at_10(report):
    for key in ("toyname_task0", "toypassage_task1", "toyvariant_task7"):
        retrieval = report.result("hashing", "local", key)
        reranked = report.result("hashing + oracle", "local", key)
        assert reranked.metrics["R@1"] == pytest.approx(retrieval.metrics["R@10"])
        assert reranked.rerank_weight == 1.0 and reranked.rerank_top_k == 10
        assert reranked.seconds["rerank_per_query"] >= 0


def test_rerank_fusion_keeps_the_tail_below_the_reranked_block(report):
    result = report.result("hashing + oracle", "global", "fashioniq_task7")
    for ranked in result.run.values():
        scores = [score for _, score in ranked]
        assert len(ranked) == 50 and scores == sorted(scores, reverse=True)


def test_reranker_sees_the_instruction_in_the_query_text(toy_root):
    seen = []

    def spy(query, candidates, scores):
        seen.append((query, candidates, list(scores)))
        return np.zeros(len(candidates))

    evaluate_mbeir(HashingEncoder(), toy_root, tasks=["toypassage"], show_progress=False,
                   rerankers=[RerankMethod("spy", spy, top_k=3)])
    query, candidates, scores = seen[0]
    # as the official rerank data: format_mbeir_text(f"{instruction} {query_txt}")
    assert query["txt"] == f"{query['instruction']} which pet animal."
    assert len(candidates) == 3 and candidates[0]["txt"].endswith(".") and scores == sorted(scores, reverse=True)


def test_trec_runs_rescored_by_trec_eval_give_the_json_numbers(report, toy_root, tmp_path):
    json_path = write_report(report, tmp_path, command="pytest tests/evaluate/test_runner.py")
    payload = load_results(json_path)
    assert payload["command"].startswith("pytest") and payload["settings"]["instruction_choice"] == "random"
    checked = 0
    for entry in payload["results"]:
        cutoffs = [int(name[2:]) for name in entry["metrics"] if name.startswith("R@")]
        theirs = trec_eval_means(tmp_path / entry["run_file"], tmp_path / entry["qrels_file"],
                                 ["success." + ",".join(map(str, cutoffs))])
        for k in cutoffs:
            assert theirs[f"success_{k}"] == pytest.approx(entry["metrics"][f"R@{k}"], abs=1e-12), entry["task"]
        checked += 1
    assert checked == 16


def test_text_only_encoder_is_skipped_where_it_cannot_encode(toy_root):
    report = evaluate_mbeir(HashingEncoder(supported_modalities={"text"}), toy_root, method="text-only",
                            pools=("local", "global"), show_progress=False)
    scored = {(r.pool, r.task.key) for r in report.results if r.metrics}
    assert scored == {("local", "toypassage_task1")}  # the global pool holds images
    skipped = report.result("text-only", "local", "toyname_task0").skipped
    assert skipped == "hashing-encoder cannot encode the image items of the local pool"  # t->i
    assert report.result("text-only", "local", "toyvariant_task7").skipped.endswith("image items of the queries")
    assert report.result("text-only", "global", "toypassage_task1").skipped.endswith("image items of the global pool")
    table = retrieval_table([r.to_json() for r in report.results], "local")
    row = table.splitlines()[2].split("|")
    assert row[1].strip() == "text-only" and row[2].strip() == "-" and row[-2].strip() == "-"  # Avg: "-"


def test_weights_are_chosen_on_val_never_on_test(report, toy_root):
    with pytest.raises(ValueError, match="never on test"):
        sweep_rerank_weights(report, "hashing + oracle")

    def anti_oracle(query, candidates, scores):
        return [-1.0 if c["did"] in ORACLE_POSITIVES[query["qid"]] else 0.0 for c in candidates]

    chosen, sweep = choose_rerank_weights(HashingEncoder(), toy_root, RerankMethod("anti", anti_oracle, top_k=10),
                                          show_progress=False)
    assert set(chosen.weights) == {"toyname_task0", "toypassage_task1", "toyvariant_task7", "fashioniq_task7"}
    for key, by_weight in sweep.table.items():
        assert by_weight[0.0] == max(by_weight.values())
        assert chosen.weights[key] == 0.0  # a reranker that never beats retrieval gets no weight
    oracle, oracle_sweep = choose_rerank_weights(HashingEncoder(), toy_root, RerankMethod("oracle", oracle_reranker),
                                                 show_progress=False)
    lifted = [key for key, by_weight in oracle_sweep.table.items() if max(by_weight.values()) > by_weight[0.0]]
    for key, w in oracle.weights.items():  # weight only where it beat retrieval alone
        assert (w >= 0.1) if key in lifted else (w == 0.0)
    assert oracle.weight_for("unknown_task") == 1.0


def test_index_cache_is_reused(toy_root, tmp_path):
    first = HashingEncoder()
    evaluate_mbeir(first, toy_root, tasks=["toyname"], index_dir=tmp_path, show_progress=False)
    again = HashingEncoder()
    evaluate_mbeir(again, toy_root, tasks=["toyname"], index_dir=tmp_path, show_progress=False)
    assert first.candidate_calls > 0 and again.candidate_calls == 0
    assert (live_version(tmp_path / "hashing-encoder" / "mbeir_toyname_task0_cand_pool") / "manifest.json").is_file()


def test_results_page_looks_like_the_papers_tables(report, tmp_path):
    results = [r.to_json() for r in report.results]
    page = results_page(results, title="Toy M-BEIR", speed_methods=["hashing", "hashing + oracle"])
    path = write_markdown(tmp_path / "results" / "toy.md", "lamra eval toy --pool local", page)
    lines = path.read_text().splitlines()
    assert lines[0] == "Generated by: `lamra eval toy --pool local`"
    header = next(line for line in lines if line.startswith("| Method"))
    assert "qt->ci toyname" in header and "(qi,qt)->ci FashionIQ" in header and header.endswith("Avg |")
    assert header.index("qt->ci") < header.index("qt->ct") < header.index("(qi,qt)->ci")
    assert any("R@10 (fashioniq)" in line for line in lines)
    assert any(line.startswith("| Method") and "s/query" in line for line in lines)
    local = retrieval_table(results, "local").splitlines()
    row = [cell.strip() for cell in local[2].split("|")[1:-1]]
    expected = [report.result("hashing", "local", k).metrics[m] * 100 for k, m in
                [("toyname_task0", "R@5"), ("toypassage_task1", "R@5"), ("fashioniq_task7", "R@10"), ("toyvariant_task7", "R@5")]]
    assert row[1:5] == [f"{v:.1f}" for v in expected] and row[5] == f"{np.mean(expected):.1f}"


def test_cli_entry_points_write_index_json_runs_and_page(toy_root, tmp_path):
    from lamra.evaluate.runner import evaluate_and_write
    from lamra.index_pool import index_pool
    from lamra.index import VectorIndex

    pool = toy_root / "cand_pool/local/mbeir_toyname_task0_cand_pool.jsonl"
    index = index_pool(HashingEncoder(), pool, tmp_path / "index", model_name="hashing-encoder", show_progress=False)
    assert len(VectorIndex.load(tmp_path / "index", pool_path=pool)) == len(CONCEPTS) == len(index)

    written = evaluate_and_write(
        {"hashing": HashingEncoder(), "text-only": HashingEncoder(supported_modalities={"text"})}, toy_root,
        tmp_path / "out", command="lamra eval toy", results_md=tmp_path / "results" / "toy.md",
        rerankers={"hashing": [RerankMethod("hashing + oracle", oracle_reranker)]},
        speed_methods=["hashing", "hashing + oracle"], pools=("local", "global"), show_progress=False)
    assert [p.name for p in written] == ["results.json", "results.json", "toy.md"]
    page = written[-1].read_text()
    assert page.startswith("Generated by: `lamra eval toy`")
    assert "| text-only | - | " in page and "## Global pool" in page and "s/query" in page
    assert (tmp_path / "out" / "hashing" / "runs" / "hashing_oracle.local.toyname_task0.trec").is_file()


def test_model_reranker_returns_scores_in_candidate_order():
    from types import SimpleNamespace

    from lamra.evaluate.fusion import model_reranker

    class FakeLamRA:
        def rerank(self, query, candidates, *, mode, window, ids, image_root):
            self.seen = (query, mode, window, image_root)
            scores = [0.2, 0.9, 0.5][: len(candidates)]
            hits = [SimpleNamespace(id=i, score=s, rerank_score=s) for i, s in zip(ids, scores)]
            return sorted(hits, key=lambda h: -h.score)  # LamRA.rerank returns hits best first

    model = FakeLamRA()
    rerank = model_reranker(model, "/data", mode="listwise", window=3)
    scores = rerank({"txt": "q"}, [{"txt": "a"}, {"txt": "b"}, {"txt": "c"}], np.array([0.9, 0.8, 0.7]))
    assert scores.tolist() == [0.2, 0.9, 0.5] and model.seen[1:] == ("listwise", 3, "/data")


def test_queries_per_task_is_a_seeded_sample_in_file_order(toy_root):
    from lamra.data.mbeir import MBEIRDataset
    from lamra.evaluate.queries import sample_queries

    queries = list(MBEIRDataset(toy_root).queries("test", "toyname", 0))
    picked = sample_queries(queries, 2, "0:toyname_task0")
    assert len(picked) == 2 and picked == [q for q in queries if q in picked]
    assert picked == sample_queries(queries, 2, "0:toyname_task0")
    assert sample_queries(queries, len(queries) + 5, "any") == queries
    with pytest.raises(ValueError, match="at least 1"):
        sample_queries(queries, 0, "any")
    report = evaluate_mbeir(HashingEncoder(), toy_root, tasks=["toyname"], queries_per_task=2, show_progress=False)
    assert report.results[0].metrics["queries"] == 2 and report.settings["queries_per_task"] == 2


def test_sweep_can_choose_on_another_metric(toy_root):
    def prefer_second(query, candidates, scores):  # lifts the retrieval's second hit to the top
        return [1.0 if i == 1 else 0.0 for i in range(len(candidates))]

    report = evaluate_mbeir(HashingEncoder(), toy_root, split="val", tasks=["toyname"], show_progress=False,
                            rerankers=[RerankMethod("second", prefer_second, top_k=5)], queries_per_task=3)
    by_r1 = sweep_rerank_weights(report, "second", metric="R@1")
    retrieval = report.result("model", "local", "toyname_task0").metrics
    reranked = report.result("second", "local", "toyname_task0").metrics
    table = by_r1.table["toyname_task0"]
    assert table[0.0] == retrieval["R@1"] and table[1.0] == reranked["R@1"]  # R@1, not the headline R@5
    assert table[1.0] != retrieval["R@1"]  # the rerank moved R@1, so the check can tell metrics apart
    best = max(table.values())
    assert by_r1.best["toyname_task0"] == min(w for w, value in table.items() if value == best)
    assert (by_r1.best["toyname_task0"] > 0) == (best > table[0.0])


def test_a_zero_weight_reranker_is_not_run_and_ranks_as_retrieval(toy_root):
    def must_not_run(query, candidates, scores):
        raise AssertionError("a reranker with w = 0 was asked for scores")

    report = evaluate_mbeir(HashingEncoder(), toy_root, tasks=["toyname"], show_progress=False,
                            rerankers=[RerankMethod("off", must_not_run, top_k=5, weights={"toyname_task0": 0.0})])
    retrieval, off = report.result("model", "local", "toyname_task0"), report.result("off", "local", "toyname_task0")
    assert off.metrics == retrieval.metrics
    assert off.seconds["rerank_skipped"] and off.rerank_weight == 0.0
    page = rerank_speed_table([r.to_json() for r in report.results], "local")
    assert page.splitlines()[-1].split("|")[-2].strip() == "-"  # no time: it never ran


def test_a_candidate_is_encoded_once_across_pools(toy_root, tmp_path):
    """The global pool holds the local pools' candidates: with or without an index cache, each did is
    encoded once per evaluation, and the scores match a run that encodes every pool on its own."""
    from lamra.data.mbeir import cand_pool_dict, global_pool_relpath, read_jsonl

    class DidCounting(HashingEncoder):
        def __init__(self):
            super().__init__()
            self.dids = []

        def encode(self, items, *args, **kwargs):
            self.dids += [item["did"] for item in items if isinstance(item, dict) and "did" in item]
            return super().encode(items, *args, **kwargs)

    global_dids = set(cand_pool_dict(read_jsonl(toy_root / global_pool_relpath("test"), "candidate")))
    results = []
    for index_dir in (None, tmp_path / "cache"):
        encoder = DidCounting()
        report = evaluate_mbeir(encoder, toy_root, pools=("local", "global"), index_dir=index_dir, show_progress=False)
        assert len(encoder.dids) == len(set(encoder.dids)) and set(encoder.dids) <= global_dids
        results.append({(r.pool, r.task.key): r.metrics for r in report.results})
    evaluate_mbeir(HashingEncoder(), toy_root, pools=("local",), index_dir=tmp_path / "locals", show_progress=False)
    encoder = DidCounting()  # the local pools are cached: the global pool is built from their vectors
    evaluate_mbeir(encoder, toy_root, pools=("global", "local"), index_dir=tmp_path / "locals", show_progress=False)
    assert encoder.dids == []
    separately = {}
    for pool in ("local", "global"):  # one evaluation per pool: nothing to share
        report = evaluate_mbeir(HashingEncoder(), toy_root, pools=(pool,), show_progress=False)
        separately.update({(r.pool, r.task.key): r.metrics for r in report.results})
    assert results[0] == results[1] == separately


def test_query_expansion_searches_again_from_each_query_moved_toward_its_first_hits(report, toy_root):
    from lamra.query_expansion import QueryExpansion

    key, pool_file = "toyname_task0", "cand_pool/local/mbeir_toyname_task0_cand_pool.jsonl"
    expansion = QueryExpansion(top=2, weight=1.5)
    expanded = evaluate_mbeir(HashingEncoder(), toy_root, tasks=["toyname"], query_expansion=expansion,
                              show_progress=False)
    assert expanded.settings["query_expansion"] == {"top": 2, "weight": 1.5}
    # brute force: each query plus 1.5 x the mean of its two nearest candidates, ranked again
    name = key.rsplit("_task", 1)[0]
    queries = [json.loads(line) for line in (toy_root / f"query/test/mbeir_{name}_task0_test.jsonl").read_text().splitlines()]
    pool = [json.loads(line) for line in (toy_root / pool_file).read_text().splitlines()]
    encoder = HashingEncoder()
    q = encoder.encode([{"txt": x["query_txt"], "img_path": x["query_img_path"]} for x in queries])
    c = encoder.encode([{"txt": x["txt"], "img_path": x["img_path"]} for x in pool])
    c = c / np.linalg.norm(c, axis=1, keepdims=True)
    first = np.argsort(-(q @ c.T), axis=1, kind="stable")[:, :2]
    moved = q + 1.5 * c[first].mean(axis=1)
    scores = moved @ c.T
    run = expanded.result("model", "local", key).run
    checked = 0
    for row, query in enumerate(queries):
        best, second = np.sort(scores[row])[::-1][:2]
        if best - second > 1e-4:  # a clear winner: the runner's first hit must be it
            assert run[query["qid"]][0][0] == pool[int(np.argmax(scores[row]))]["did"]
            checked += 1
    assert checked >= len(queries) // 2
    plain = evaluate_mbeir(HashingEncoder(), toy_root, tasks=["toyname"], query_expansion=QueryExpansion(top=2, weight=0.0),
                           show_progress=False)
    assert plain.result("model", "local", key).metrics == report.result("hashing", "local", key).metrics
