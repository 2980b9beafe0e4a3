"""The M-BEIR reader/writer on small hand-made files (no sources needed)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from PIL import Image

from lamra.data import mbeir
from lamra.data.mbeir import (
    InstructionRow,
    MBEIRCandidate,
    MBEIRDataset,
    MBEIRFormatError,
    MBEIRQuery,
    read_instructions,
    read_jsonl,
    read_qrels,
    write_instructions,
    write_jsonl,
    write_qrels,
)
from lamra.data.nli_csv import read_nli_csv, write_nli_csv
from lamra.items import InputError

QUERIES = [
    MBEIRQuery("9:1", "A dog on a couch.", None, "text", None, ["9:2"], [], 0),
    MBEIRQuery("9:2", None, "mbeir_images/x.png", "image", '{"id": 3}', ["9:1", "9:3"], ["9:4"], 3),
    MBEIRQuery("8:7", "make it red", "mbeir_images/x.png", "image,text", None, ["8:1"], [], 7,
               extra={"note": "kept"}),
]
CANDIDATES = [
    MBEIRCandidate("9:1", None, "mbeir_images/x.png", "image", None),
    MBEIRCandidate("9:2", "A dog on a couch.", None, "text", '{"caption": 1}'),
    MBEIRCandidate("9:3", "a pair", "mbeir_images/x.png", "image,text", None),
]


def test_query_and_candidate_round_trip(tmp_path):
    write_jsonl(tmp_path / "q.jsonl", QUERIES)
    write_jsonl(tmp_path / "c.jsonl", CANDIDATES)
    assert list(read_jsonl(tmp_path / "q.jsonl", "query")) == QUERIES
    assert list(read_jsonl(tmp_path / "c.jsonl", "candidate")) == CANDIDATES
    first = json.loads((tmp_path / "q.jsonl").read_text().splitlines()[0])
    assert list(first) == ["qid", "query_txt", "query_img_path", "query_modality", "query_src_content",
                           "pos_cand_list", "neg_cand_list", "task_id"]
    pool_line = json.loads((tmp_path / "c.jsonl").read_text().splitlines()[0])
    assert list(pool_line) == ["txt", "img_path", "modality", "did", "src_content"]


def test_text_image_alias_is_normalised(tmp_path):
    line = {"qid": "1:1", "query_txt": "x", "query_img_path": "a.png", "query_modality": "text,image",
            "pos_cand_list": ["1:2"], "neg_cand_list": []}
    (tmp_path / "q.jsonl").write_text(json.dumps(line) + "\n")
    assert next(read_jsonl(tmp_path / "q.jsonl", "query")).query_modality == "image,text"
    assert mbeir.task_id_for("text,image", "image") == 7


def test_qrels_round_trip(tmp_path):
    qrels = {"9:1": {"9:2"}, "9:2": {"9:10", "9:3"}}
    write_qrels(tmp_path / "r.txt", qrels, {"9:1": 0, "9:2": 3})
    assert (tmp_path / "r.txt").read_text().splitlines() == ["9:1 0 9:2 1 0", "9:2 0 9:3 1 3", "9:2 0 9:10 1 3"]
    loaded = read_qrels(tmp_path / "r.txt")
    assert loaded == qrels and loaded.task_ids == {"9:1": 0, "9:2": 3}


def test_instructions_round_trip(tmp_path):
    rows = [InstructionRow("text", "image", "MSCOCO", "9", ["Find an image.", "Show a picture."]),
            InstructionRow("image,text", "text", "OVEN", "5", ["Answer it.", "Find text.", "Third."])]
    write_instructions(tmp_path / "i.tsv", rows)
    assert read_instructions(tmp_path / "i.tsv") == {
        ("9", "text", "image"): ["Find an image.", "Show a picture."],
        ("5", "image,text", "text"): ["Answer it.", "Find text.", "Third."],
    }


def test_nli_csv_round_trip(tmp_path):
    pairs = [("a, b", 'He said "hi", then left', "other"), ("x y z", "line\nbreak", "neg")]
    write_nli_csv(tmp_path / "p.csv", pairs)
    assert list(read_nli_csv(tmp_path / "p.csv")) == pairs


@pytest.mark.parametrize("line, reason", [
    ("{not json", "invalid JSON"),
    ('{"qid": "9:1", "query_modality": "audio"}', "unknown modality"),
    ('{"qid": "nine", "query_txt": "x", "query_modality": "text"}', "qid"),
    ('{"qid": "9:1", "query_txt": null, "query_modality": "text"}', "no text"),
    ('{"qid": "9:1", "query_txt": "x", "query_modality": "text", "pos_cand_list": "9:2"}', "pos_cand_list"),
    ('{"qid": "9:1", "query_txt": 42, "query_modality": "text"}', "bad query '9:1'"),
    ('[1, 2]', "bad query"),
    ('{"qid": "9:1", "query_txt": "caf\xe9", "query_modality": "text"}', "not UTF-8 (byte 0xe9 at column"),
])
def test_malformed_query_names_file_and_line(tmp_path, line, reason):
    path = tmp_path / "bad.jsonl"
    good = json.dumps(QUERIES[0].to_dict())
    path.write_bytes((good + "\n\n").encode() + line.encode("latin-1") + b"\n")  # latin-1: one raw \xe9 byte
    with pytest.raises(MBEIRFormatError) as caught:
        list(read_jsonl(path, "query"))
    assert f"{path}:3:" in str(caught.value) and reason in str(caught.value)


def test_malformed_qrels_and_instructions_name_file_and_line(tmp_path):
    (tmp_path / "r.txt").write_text("9:1 0 9:2 1 0\n9:1 0 9:3 1\n")
    with pytest.raises(MBEIRFormatError, match=r"r\.txt:2:"):
        read_qrels(tmp_path / "r.txt")
    (tmp_path / "i.tsv").write_text("header\ntext\timage\tX\t9\tFind.\ntext\tsound\tX\t9\tFind.\n")
    with pytest.raises(MBEIRFormatError, match=r"i\.tsv:3:"):
        read_instructions(tmp_path / "i.tsv")
    (tmp_path / "p.csv").write_text("sent0,sent1,hard_neg\na,b,c\nd,e\n")
    with pytest.raises(MBEIRFormatError, match=r"p\.csv:3:"):
        list(read_nli_csv(tmp_path / "p.csv"))


def test_failed_write_leaves_nothing_half_written(tmp_path):
    path = tmp_path / "out.jsonl"
    write_jsonl(path, QUERIES[:1])
    before = path.read_bytes()

    def broken():
        yield QUERIES[1]
        raise RuntimeError("source failed")

    with pytest.raises(RuntimeError):
        write_jsonl(path, broken())
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]
    with pytest.raises(RuntimeError):
        write_jsonl(tmp_path / "new.jsonl", broken())
    assert not (tmp_path / "new.jsonl").exists()


@pytest.fixture
def tiny_root(tmp_path):
    """A two-dataset M-BEIR root with MSCOCO's split-specific local pool."""
    root = tmp_path / "mbeir"
    (root / "mbeir_images").mkdir(parents=True)
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(root / "mbeir_images" / "x.png")
    write_jsonl(root / mbeir.query_relpath("mscoco", 0, "test"), QUERIES[:1])
    write_jsonl(root / mbeir.query_relpath("cirr", 7, "test"), QUERIES[2:])
    write_jsonl(root / mbeir.query_relpath("mscoco", 3, "val"), QUERIES[1:2])
    write_jsonl(root / mbeir.local_pool_relpath("mscoco", 0), CANDIDATES[:1])
    write_jsonl(root / mbeir.local_pool_relpath("mscoco", 0, "test"), CANDIDATES[:2])
    write_jsonl(root / mbeir.global_pool_relpath("test"), CANDIDATES)
    write_qrels(root / mbeir.qrels_relpath("mscoco", 0, "test"), {"9:1": ["9:2"]}, 0)
    write_instructions(root / mbeir.INSTRUCTIONS_RELPATH,
                       [InstructionRow("text", "image", "MSCOCO", "9", ["find the image", "Show a picture."])])
    return root


def test_dataset_lists_and_reads(tiny_root):
    data = MBEIRDataset(tiny_root)
    assert data.tasks("test") == [("mscoco", 0), ("cirr", 7)]
    assert data.datasets("test") == ["cirr", "mscoco"]
    assert [q.qid for q in data.queries("test")] == ["9:1", "8:7"]
    assert [q.qid for q in data.queries("test", task=7)] == ["8:7"]
    assert [q.qid for q in data.queries("val", "MSCOCO")] == ["9:2"]
    assert len(list(data.local_pool("mscoco", 0))) == 1
    assert len(list(data.local_pool("mscoco", 0, split="test"))) == 2  # MSCOCO's test pool wins
    assert set(data.cand_pool_dict(split="test")) == {"9:1", "9:2", "9:3"}
    assert set(data.cand_pool_dict("mscoco", 0, split="test")) == {"9:1", "9:2"}
    assert data.qrels("test", "mscoco", 0) == {"9:1": {"9:2"}}
    with pytest.raises(InputError, match="no query file"):
        list(data.queries("test", "nights"))


def test_instruction_lookup(tiny_root):
    data = MBEIRDataset(tiny_root)
    assert data.instruction_for("9:1", "text", "image") == "Find the image."  # UniIR's normalisation
    assert data.instruction_for("MSCOCO", "text", "image", random.Random(1)) in ("Find the image.", "Show a picture.")
    with pytest.raises(InputError, match="no instruction"):
        data.instruction_for("9", "image", "text")


def test_images_resolve_under_the_root_only(tiny_root):
    data = MBEIRDataset(tiny_root)
    assert data.resolve_image("mbeir_images/x.png") == (tiny_root / "mbeir_images" / "x.png").resolve()
    assert data.load_image("mbeir_images/x.png").getpixel((0, 0)) == (255, 255, 255)  # onto white
    for bad in ("../outside.png", "mbeir_images/../../x.png", "/etc/passwd"):
        with pytest.raises(InputError, match="escapes"):
            data.resolve_image(bad)


def test_duplicate_did_is_an_error():
    with pytest.raises(MBEIRFormatError, match="duplicate did 9:1"):
        mbeir.cand_pool_dict([CANDIDATES[0], CANDIDATES[0]])


def test_missing_file_is_named(tmp_path):
    with pytest.raises(MBEIRFormatError, match="no such file"):
        list(read_jsonl(tmp_path / "nope.jsonl", "query"))
    assert Path(tmp_path).exists()
