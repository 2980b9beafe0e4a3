"""The command line: search a collection, bad input as one clear line, eval on the fixture benchmark."""

from __future__ import annotations

import json
import shutil

import pytest

from typer.testing import CliRunner

from lamra.cli import app
from lamra.demo import DEMO_DIR
from lamra.items import InputError
from lamra.index import VectorIndex

runner = CliRunner()


def write_collection(tmp_path, lines):
    path = tmp_path / "collection.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    for name in ("1f431.png", "1f436.png"):
        shutil.copy(DEMO_DIR / name, tmp_path / name)
    return path


@pytest.mark.parametrize("options", [[], ["--expand", "2", "--expand-weight", "2"]], ids=["plain", "query-expansion"])
def test_search_prints_ranked_hits(tmp_path, options):
    collection = write_collection(tmp_path, [
        json.dumps({"did": "cat", "img_path": "1f431.png"}),
        json.dumps({"did": "dog", "img_path": "1f436.png"}),
        json.dumps({"did": "text", "txt": "a short note about the weather"}),
    ])
    result = runner.invoke(app, ["search", "@" + str(DEMO_DIR / "1f431.png"), "--collection", str(collection),
                                 "--top-k", "3", *options])
    assert result.exit_code == 0, result.output
    ranked = [line.split()[1] for line in result.output.splitlines() if line.strip()[:2] in ("1.", "2.", "3.")]
    assert ranked[0] == "cat"  # the query image itself is in the collection
    assert sorted(ranked) == ["cat", "dog", "text"]


def test_malformed_collection_line_is_named(tmp_path):
    collection = write_collection(tmp_path, [json.dumps({"did": "a", "txt": "fine"}), "{not json"])
    result = runner.invoke(app, ["search", "query", "--collection", str(collection)])
    assert result.exit_code != 0
    assert f"{collection}:2: invalid JSON" in str(result.exception)


@pytest.mark.parametrize("line, message", [
    ('{"txt": 42}', ":1: 'txt' must be a string, got int"),
    ('{"txt": "caf\xe9"}', ":1: not UTF-8 (byte 0xe9"),
    ('{"img_path": "nope.png"}', ":1: image file not found: "),  # not found hours into an encode
    ('{"img_path": "../outside.png"}', ":1: image path '../outside.png' escapes the data root"),
])
def test_bad_collection_records_are_named_before_the_model_loads(tmp_path, line, message, monkeypatch):
    import lamra.cli

    monkeypatch.setattr(lamra.cli, "load_model", lambda *a, **k: pytest.fail("the model loaded first"))
    path = tmp_path / "collection.jsonl"
    path.write_bytes(line.encode("latin-1") + b"\n")
    result = runner.invoke(app, ["search", "query", "--collection", str(path)])
    assert f"{path}{message}" in str(result.exception)


@pytest.mark.parametrize("query, message", [
    ("", "query 1 (''): empty text"),
    ("@missing.png", "query 1 ('@missing.png'): image file not found: 'missing.png'"),
    ("@collection.jsonl", "query 1 ('@collection.jsonl'): cannot read image"),
])
def test_bad_queries_are_named_before_the_model_loads(tmp_path, query, message, monkeypatch):
    import lamra.cli

    monkeypatch.setattr(lamra.cli, "load_model", lambda *a, **k: pytest.fail("the model loaded first"))
    monkeypatch.chdir(tmp_path)
    collection = write_collection(tmp_path, [json.dumps({"did": "a", "txt": "fine"})])
    result = runner.invoke(app, ["search", query, "--collection", str(collection)])
    assert message in str(result.exception)


@pytest.mark.parametrize("top_k", ["0", "-1"])
def test_search_refuses_a_top_k_below_one(tmp_path, top_k):
    collection = write_collection(tmp_path, [json.dumps({"did": "a", "txt": "fine"})])
    result = runner.invoke(app, ["search", "query", "--collection", str(collection), "--top-k", top_k])
    assert f"--top-k must be an integer of at least 1, got {top_k}" in str(result.exception)


@pytest.mark.parametrize("command, extra", [(["index"], "lamra[ray]"), (["index"], "lamra[openvino]"),
                                            (["search"], "lamra[openvino]")])
def test_help_keeps_the_optional_extras_names(command, extra):
    """Rich markup read "[ray]" as a style tag and printed "pip install 'lamra'"."""
    result = runner.invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert f"pip install '{extra}'" in " ".join(result.output.split())


def test_console_entry_turns_input_errors_into_one_line(tmp_path, monkeypatch, capsys):
    import sys

    import pytest

    from lamra.cli import run

    missing = tmp_path / "missing.jsonl"
    monkeypatch.setattr(sys, "argv", ["lamra", "search", "query", "--collection", str(missing)])
    with pytest.raises(SystemExit) as exit_info:
        run()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: collection file not found: {str(missing)!r}"


def test_a_model_or_reranker_path_that_is_not_there_is_named_in_one_line(tmp_path, monkeypatch, capsys):
    import sys

    from lamra.cli import run

    collection = write_collection(tmp_path, [json.dumps({"did": "a", "txt": "fine"})])
    missing = tmp_path / "no-such-model"
    for option in ("--model", "--reranker"):
        monkeypatch.setattr(sys, "argv", ["lamra", "diagnose", str(collection.parent), option, str(missing)])
        with pytest.raises(SystemExit) as exit_info:
            run()
        assert exit_info.value.code == 2
        last_line = capsys.readouterr().err.strip().splitlines()[-1]  # after the model's loading bar, if any
        assert last_line == (f"error: {option} {str(missing)!r}: no such directory, and no Hugging Face model of "
                             "that name could be loaded")


def test_diagnose_names_a_missing_data_root_or_split_pool(tmp_path, monkeypatch, capsys):
    import sys

    import lamra.cli
    from lamra.cli import run

    missing = tmp_path / "no-such-root"
    monkeypatch.setattr(lamra.cli, "load_model", lambda *a, **k: pytest.fail("the model loaded first"))
    monkeypatch.setattr(sys, "argv", ["lamra", "diagnose", str(missing)])
    with pytest.raises(SystemExit):
        run()
    assert capsys.readouterr().err.strip() == f"error: M-BEIR data root not found: {str(missing)!r}"
    from lamra.evaluate.diagnostics import sample_candidates

    with pytest.raises(InputError, match="no global candidate pool for split 'val'"):
        sample_candidates(tmp_path, "val", per_modality=2)


def test_index_reports_a_bad_pool_line_before_loading_the_model(tmp_path, monkeypatch):
    import lamra.cli

    monkeypatch.setattr(lamra.cli, "load_model", lambda *a, **k: pytest.fail("the model loaded first"))
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"did": "1:1", "txt": "fine", "modality": "text"}\n{"did": "1:2", "txt": 7, "modality": "text"}\n')
    result = runner.invoke(app, ["index", str(pool), "--out", str(tmp_path / "index")])
    assert f"{pool}:2: bad candidate '1:2'" in str(result.exception)


@pytest.fixture(scope="module")
def pocketbeir_fixture(tmp_path_factory):
    """The small PocketBEIR fixture (<= 100 emoji), built once for the diagnose tests."""
    from train_helpers import HAVE_SOURCES, SOURCES

    from lamra.pocketbeir.build import build_pocketbeir

    if not HAVE_SOURCES:
        pytest.fail(f"the PocketBEIR sources are missing under {SOURCES}: run scripts/setup.sh")
    root = build_pocketbeir(tmp_path_factory.mktemp("pocketbeir"), SOURCES, seed=0, fixture=True, show_progress=False)
    return root


def test_diagnose_generalization_puts_training_recall_beside_the_split(pocketbeir_fixture):
    root = pocketbeir_fixture
    result = runner.invoke(app, ["diagnose", str(root), "--generalization", "--queries-per-task", "6",
                                 "--per-modality", "2", "--tasks", "emojiname,emojivendor"])
    assert result.exit_code == 0, result.output
    assert "| task | metric | train | val | gap |" in result.output
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
            for line in result.output.splitlines() if line.startswith("| emoji")}
    assert sorted(rows) == ["emojiname_task0", "emojivendor_task4"], result.output
    for metric, seen, new, gap in rows.values():
        assert metric == "R@5" and seen.endswith("(6)")
        assert 0.0 <= float(seen.split()[0]) <= 100.0 and 0.0 <= float(new.split()[0]) <= 100.0
        assert float(gap) == pytest.approx(float(seen.split()[0]) - float(new.split()[0]), abs=0.11)
    result = runner.invoke(app, ["diagnose", str(root), "--generalization", "--queries-per-task", "0"])
    assert result.exit_code != 0 and "--generalization needs --queries-per-task >= 1" in result.output


def test_eval_records_its_numerics_and_says_what_bf16_means(pocketbeir_fixture, tmp_path):
    result = runner.invoke(app, ["eval", str(pocketbeir_fixture), "--tasks", "emojiqa", "--precision", "bf16",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "LamRA-Ret" / "results.json").read_text())
    assert payload["environment"]["numerics"] == "bf16 autocast"
    assert [r["task"] for r in payload["results"]] == ["emojiqa_task8"] and payload["results"][0]["metrics"]["R@5"] >= 0
    assert "note: computed in bf16 autocast" in result.output and "--precision fp32" in result.output


def test_diagnose_rerank_prints_the_pairwise_auc_per_task(pocketbeir_fixture):
    root = pocketbeir_fixture
    result = runner.invoke(app, ["diagnose", str(root), "--rerank", "--queries-per-task", "3",
                                 "--per-modality", "4", "--top-k", "5"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "Pairwise AUC within each query's top 5" in result.output
    rows = [line for line in lines if line.startswith("| emoji") or line.startswith("| wordnet")]
    assert len(rows) == 8, result.output  # one row per PocketBEIR task
    mean = [cell.strip() for cell in next(line for line in lines if line.startswith("| mean")).split("|")[1:-1]]
    assert mean[0] == "mean" and mean[1].endswith("of 24")
    for cell in mean[2:]:
        assert cell == "nan" or 0.0 <= float(cell) <= 1.0
    result = runner.invoke(app, ["diagnose", str(root), "--rerank", "--queries-per-task", "2", "--per-modality", "2",
                                 "--top-k", "5", "--tasks", "WordNetPassage, emojidesc_task2"])
    assert result.exit_code == 0, result.output
    rows = [line.split("|")[1].strip() for line in result.output.splitlines()
            if line.startswith("| emoji") or line.startswith("| wordnet")]
    assert sorted(rows) == ["emojidesc_task2", "wordnetpassage_task1"], result.output


@pytest.mark.parametrize("option, message", [
    (["--precision", "bf17"], "must be one of auto, bf16, fp32, bf16-weights, got 'bf17'"),
    (["--backend", "onnx"], "backend must be one of torch, openvino, got 'onnx'"),
    (["--expand", "-1"], "must be 0 (off) or a number of hits >= 1, got -1"),
    (["--expand", "2", "--expand-weight", "-0.5"], "--expand-weight"),
])
def test_a_bad_option_is_refused_before_the_model_loads(tmp_path, monkeypatch, option, message):
    import lamra.cli

    monkeypatch.setattr(lamra.cli, "load_model", lambda *a, **k: pytest.fail("the model loaded first"))
    collection = write_collection(tmp_path, [json.dumps({"did": "a", "txt": "fine"})])
    result = runner.invoke(app, ["search", "query", "--collection", str(collection), *option])
    words = " ".join(result.output.replace("│", " ").split())  # the error box wraps lines
    assert result.exit_code == 2 and message in words


def test_bf16_weights_precision_loads_the_weights_in_bf16():
    import torch

    from lamra.cli import load_model

    model = load_model(None, "bf16-weights")
    assert model.backbone.dtype == torch.bfloat16 and model.precision == "bf16"
    assert model.reranker.backbone.dtype == torch.bfloat16
    hits = model.search(["a cheesy slice of Italian food"], corpus=["pizza", "a bicycle", "rainy weather"], top_k=1)
    assert hits[0][0].id == 0


def test_the_openvino_backend_searches_and_refuses_bf16_weights(tmp_path):
    from lamra.cli import load_model

    with pytest.raises(InputError, match="not bf16-weights"):
        load_model(None, "bf16-weights", backend="openvino")
    collection = write_collection(tmp_path, [
        json.dumps({"did": "cat", "img_path": "1f431.png"}),
        json.dumps({"did": "dog", "img_path": "1f436.png"}),
    ])
    result = runner.invoke(app, ["search", "@" + str(DEMO_DIR / "twitter-1f431.png"), "--collection", str(collection),
                                 "--top-k", "1", "--backend", "openvino"])
    assert result.exit_code == 0, result.output
    assert [line.split()[1] for line in result.output.splitlines() if line.strip().startswith("1.")] == ["cat"]


def write_pool(root):
    """An M-BEIR root with a three-candidate pool (two images, one text)."""
    pool = root / "cand_pool" / "local" / "pool.jsonl"
    pool.parent.mkdir(parents=True)
    (root / "images").mkdir()
    for name in ("1f431.png", "1f436.png"):
        shutil.copy(DEMO_DIR / name, root / "images" / name)
    pool.write_text("".join(json.dumps(line) + "\n" for line in [
        {"did": "9:1", "img_path": "images/1f431.png", "txt": "", "modality": "image"},
        {"did": "9:2", "img_path": "images/1f436.png", "txt": "", "modality": "image"},
        {"did": "9:3", "img_path": None, "txt": "a short note about the weather", "modality": "text"},
    ]))
    return pool


def test_search_reads_an_index_without_encoding_its_pool(tmp_path, monkeypatch):
    import lamra.model

    pool = write_pool(tmp_path / "mbeir")
    index = tmp_path / "index"
    built = runner.invoke(app, ["index", str(pool), "--out", str(index), "--index-type", "hnsw"])
    assert built.exit_code == 0, built.output
    assert VectorIndex.load(index).manifest["index_type"].startswith("hnsw")  # the type the option named
    encoded = []
    real_encode = lamra.model.LamRA.encode
    monkeypatch.setattr(lamra.model.LamRA, "encode", lambda self, items, **k: encoded.append(len(items)) or
                        real_encode(self, items, **k))
    query = "@" + str(DEMO_DIR / "twitter-1f431.png")
    result = runner.invoke(app, ["search", query, "--index", str(index), "--top-k", "2"])
    assert result.exit_code == 0, result.output
    first = next(line for line in result.output.splitlines() if line.strip().startswith("1."))
    assert first.split()[1] == "9:1" and first.endswith("images/1f431.png")  # the hit's item, read from the pool
    assert encoded == [1]  # the query alone: the pool's vectors come from the index
    reranked = runner.invoke(app, ["search", query, "--index", str(index), "--top-k", "2", "--rerank", "pointwise"])
    assert reranked.exit_code == 0, reranked.output


def test_search_refuses_a_stale_or_foreign_index_before_the_model_loads(tmp_path, monkeypatch):
    import lamra.cli

    pool = write_pool(tmp_path / "mbeir")
    index = tmp_path / "index"
    assert runner.invoke(app, ["index", str(pool), "--out", str(index)]).exit_code == 0
    monkeypatch.setattr(lamra.cli, "load_model", lambda *a, **k: pytest.fail("the model loaded first"))

    def refusal(*options):
        result = runner.invoke(app, ["search", "a cat", *options])
        assert isinstance(result.exception, InputError), result.output
        return str(result.exception)

    assert "give one of --collection" in refusal()
    assert "give one of --collection" in refusal("--index", str(index), "--collection", str(pool))
    assert "built with model 'compact'" in refusal("--index", str(index), "--model", str(tmp_path))
    assert "no index at" in refusal("--index", str(tmp_path / "nowhere"))
    pool.write_text(pool.read_text() + json.dumps({"did": "9:4", "txt": "new", "modality": "text"}) + "\n")
    assert "has changed since the index was built" in refusal("--index", str(index))
    pool.unlink()
    assert "is not there" in refusal("--index", str(index), "--rerank", "pointwise")


def test_serve_refuses_a_bad_index_before_the_model_loads(tmp_path, monkeypatch):
    import lamra.cli

    monkeypatch.setattr(lamra.cli, "load_model", lambda *a, **k: pytest.fail("the model loaded first"))
    pool = write_pool(tmp_path / "mbeir")
    both = runner.invoke(app, ["serve", "--index", str(tmp_path), "--collection", str(pool)])
    assert "not both" in str(both.exception)
    missing = runner.invoke(app, ["serve", "--index", str(tmp_path / "nowhere")])
    assert isinstance(missing.exception, InputError) and "no index at" in str(missing.exception)


def test_eval_keeps_pool_indexes_and_reuses_them(pocketbeir_fixture, tmp_path, monkeypatch):
    import lamra.model

    options = ["eval", str(pocketbeir_fixture), "--split", "val", "--tasks", "wordnetpassage_task1",
               "--index-dir", str(tmp_path / "indexes")]
    first = runner.invoke(app, options + ["--out", str(tmp_path / "first")])
    assert first.exit_code == 0, first.output
    kept = [path.parent.parent.name for path in (tmp_path / "indexes").rglob("CURRENT")]  # <model>/<pool>/CURRENT
    assert kept and all("bf16" in name or "float32" in name for name in kept)  # keyed by numerics too
    encoded = []
    real_encode = lamra.model.LamRA.encode
    monkeypatch.setattr(lamra.model.LamRA, "encode", lambda self, items, **k: encoded.append(k.get("role")) or
                        real_encode(self, items, **k))
    again = runner.invoke(app, options + ["--out", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    assert "document" not in encoded  # the pool came from the kept index; only queries were encoded
    metrics = [[row["metrics"] for row in json.loads((tmp_path / run / "LamRA-Ret" / "results.json").read_text())["results"]]
               for run in ("first", "again")]
    assert metrics[0] == metrics[1]
