"""Build an auxiliary training set from OpenMoji (a third drawing style and new concepts) beside PocketBEIR.

A probe for issue #9: the compact model fits its ~1,200 training concepts and transfers little to
unseen ones, so this adds (a) OpenMoji's drawings of the *training* concepts, as more views of what the
model already trains on, and (b) OpenMoji's extra pictograms whose concepts PocketBEIR does not hold,
with every one that shares a name or a WordNet sense with a val or test concept left out.
Nothing of a val or test concept enters.

Writes a new M-BEIR root (default ``runs/aux-openmoji``): PocketBEIR's union training file and training
pool with the auxiliary queries and candidates appended, and the images they show.

    npm pack openmoji@17.0.0 && mkdir -p SOURCES/openmoji && tar xzf openmoji-17.0.0.tgz -C SOURCES/openmoji
    .venv/bin/pip install cairosvg   # renders OpenMoji's SVGs; not a lamra dependency
    .venv/bin/python scripts/build_openmoji_aux.py --openmoji SOURCES/openmoji/package

Measured with recipes/compact-cpu-openmoji-stage2.yaml: it did not help (docs/training/notes.md).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
from collections import defaultdict
from pathlib import Path

import cairosvg
from PIL import Image

from lamra.data.mbeir import json_lines, write_jsonl
from lamra.pocketbeir.build import words_of as words
from lamra.pocketbeir.emoji import norm_code
from lamra.pocketbeir.wordnet import WordNet

HOME = Path.home() / ".cache" / "lamra"
WIKI_QUESTIONS_FALLBACK = ["What is this?"]
# brand logos and interface glyphs: their names' first WordNet sense is another thing ("signal", "chrome")
NO_PASSAGE_SUBGROUPS = {"brand", "ui-element", "interaction"}


def read_records(path: Path) -> list[dict]:
    return [record for _, record in json_lines(path)]


def render(svg: Path, out: Path, size: int = 64) -> None:
    png = cairosvg.svg2png(url=str(svg), output_width=size, output_height=size)
    image = Image.open(io.BytesIO(png)).convert("RGBA")
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    white.alpha_composite(image)
    out.parent.mkdir(parents=True, exist_ok=True)
    white.convert("RGB").save(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pocketbeir", type=Path, default=HOME / "pocketbeir")
    parser.add_argument("--openmoji", type=Path, required=True, help="the unpacked npm package folder")
    parser.add_argument("--wordnet", type=Path, default=HOME / "sources" / "wordnet")
    parser.add_argument("--out", type=Path, default=Path("runs/aux-openmoji"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    pb, out = args.pocketbeir, args.out

    queries = read_records(pb / "query/union_train/mbeir_union_up_train.jsonl")
    pool = read_records(pb / "cand_pool/global/mbeir_union_train_cand_pool.jsonl")

    # --- what PocketBEIR holds, by split ------------------------------------------------------------
    split_of_concept: dict[str, str] = {}
    held_out_synsets: set[str] = set()
    for split in ("train", "val", "test"):
        for path in sorted((pb / "query" / split).glob("*.jsonl")):
            for q in read_records(path):
                src = json.loads(q["query_src_content"])
                split_of_concept[src["concept"]] = split
                if split != "train" and "synset" in src:
                    held_out_synsets.add(src["synset"])
    concept_of_code: dict[str, str] = {}
    held_out_names: set[str] = set()
    for cand in pool:
        src = json.loads(cand["src_content"])
        if "emoji" in src and "concept" in src:
            concept_of_code[norm_code(src["emoji"])] = src["concept"]
        if split_of_concept.get(src.get("concept")) in ("val", "test") and cand["txt"]:
            # names, and the lemmas in front of a passage's ":"
            held_out_names.add(words(cand["txt"]))
            head = cand["txt"].split(":", 1)[0]
            held_out_names.update(words(lemma) for lemma in head.split(","))
            if "synset" in src:
                held_out_synsets.add(src["synset"])
    held_out_names.discard("")

    # --- the existing training candidates each new query points at ---------------------------------
    label_did, twitter_did, wiki_did, wiki_question = {}, {}, {}, []
    for cand in pool:
        src = json.loads(cand["src_content"])
        if split_of_concept.get(src.get("concept")) != "train" or "emoji" not in src:
            continue
        code = norm_code(src["emoji"])
        if cand["did"].startswith("13:"):
            label_did[code] = (cand["did"], cand["txt"])
        elif cand["did"].startswith("14:") and src.get("vendor") == "twitter":
            twitter_did[code] = cand["did"]
    for q in queries:
        src = json.loads(q["query_src_content"])
        if q["qid"].startswith("15:") and "emoji" in src:
            wiki_did.setdefault(norm_code(src["emoji"]), q["pos_cand_list"])
            wiki_question.append(q["query_txt"])
    wiki_question = sorted(set(wiki_question)) or WIKI_QUESTIONS_FALLBACK

    next_index: dict[str, int] = defaultdict(int)
    for record in pool:
        dataset, index = record["did"].split(":")
        next_index[dataset] = max(next_index[dataset], int(index) + 1)
    for record in queries:
        dataset, index = record["qid"].split(":")
        next_index["q" + dataset] = max(next_index["q" + dataset], int(index) + 1)

    def new_id(dataset: str, query: bool = False) -> str:
        key = ("q" if query else "") + dataset
        index = next_index[key]
        next_index[key] += 1
        return f"{dataset}:{index}"

    new_queries, new_cands = [], []

    def add_cand(dataset: str, txt: str | None, img: str | None, src: dict) -> str:
        did = new_id(dataset)
        modality = "image,text" if txt and img else ("image" if img else "text")
        new_cands.append({"txt": txt, "img_path": img, "modality": modality, "did": did,
                          "src_content": json.dumps(src, sort_keys=True)})
        return did

    def add_query(dataset: str, task_id: int, txt: str | None, img: str | None, positives: list[str], src: dict):
        modality = "image,text" if txt and img else ("image" if img else "text")
        new_queries.append({"qid": new_id(dataset, query=True), "query_txt": txt, "query_img_path": img,
                            "query_modality": modality, "query_src_content": json.dumps(src, sort_keys=True),
                            "pos_cand_list": positives, "neg_cand_list": [], "task_id": task_id})

    openmoji = json.loads((args.openmoji / "data/openmoji.json").read_text(encoding="utf-8"))
    svg_dir = args.openmoji / "color/svg"
    wordnet = WordNet(args.wordnet, pos="n")
    counts = defaultdict(int)

    for entry in openmoji:
        code = norm_code(entry["hexcode"])
        svg = svg_dir / f"{entry['hexcode']}.svg"
        if entry["skintone"] or not svg.is_file():
            continue
        img = f"images/openmoji/{entry['hexcode'].lower()}.png"
        concept = concept_of_code.get(code)
        if concept is not None:
            # (a) a training concept in a third style; val/test concepts never enter
            if split_of_concept.get(concept) != "train" or code not in label_did:
                continue
            render(svg, out / img)
            src = {"concept": concept, "emoji": code, "vendor": "openmoji"}
            did, label = label_did[code]
            add_query("10", 0, label, None, [add_cand("10", None, img, src)], {**src, "name": "label"})
            add_query("13", 3, None, img, [did], src)
            if code in twitter_did:
                add_query("14", 4, None, img, [twitter_did[code]], src)
            if code in wiki_did:
                add_query("15", 6, rng.choice(wiki_question), img, wiki_did[code], src)
            counts["training concept, new style"] += 1
            continue
        if not entry["group"].startswith("extras") or entry["subgroups"] in ("regional-indicator", "subdivision-flag"):
            continue
        name = words(entry["annotation"].replace("-", " "))
        if not name or name in held_out_names:
            counts["extra left out: a val/test name"] += 1
            continue
        # (b) a new concept: its name, and a WordNet passage where the name's first noun sense is
        # no val/test concept's
        render(svg, out / img)
        src = {"concept": "openmoji:" + entry["hexcode"], "emoji": code, "vendor": "openmoji"}
        label = entry["annotation"].replace("-", " ")
        name_did = add_cand("13", label, None, src)
        add_query("10", 0, label, None, [add_cand("10", None, img, src)], {**src, "name": "label"})
        add_query("13", 3, None, img, [name_did], src)
        senses = [] if entry["subgroups"] in NO_PASSAGE_SUBGROUPS else wordnet.senses(name)
        if senses and senses[0].id not in held_out_synsets and not (
                {words(lemma) for lemma in senses[0].lemmas} & held_out_names):
            passage = add_cand("15", senses[0].passage(True), None, {**src, "synset": senses[0].id})
            add_query("15", 6, rng.choice(wiki_question), img, [passage], {**src, "synset": senses[0].id})
            counts["extra with a passage"] += 1
        counts["extra concept"] += 1

    # --- the new root -------------------------------------------------------------------------------
    for vendor in ("google", "twitter"):
        if not (out / "images" / vendor).is_dir():
            shutil.copytree(pb / "images" / vendor, out / "images" / vendor)
    (out / "query/union_train").mkdir(parents=True, exist_ok=True)
    (out / "cand_pool/global").mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "query/union_train/mbeir_union_up_train.jsonl", queries + new_queries)
    write_jsonl(out / "cand_pool/global/mbeir_union_train_cand_pool.jsonl", pool + new_cands)
    by_task = defaultdict(int)
    for q in new_queries:
        by_task[q["task_id"]] += 1
    print(json.dumps({"counts": counts, "new queries by task": by_task, "new candidates": len(new_cands),
                      "held-out names": len(held_out_names), "held-out synsets": len(held_out_synsets)},
                     indent=1))


if __name__ == "__main__":
    main()
