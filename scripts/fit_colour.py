"""Fit LamRA-Ret's colour channel (``lamra.colour``) and choose its weights on the val split.

    .venv/bin/python scripts/fit_colour.py [--model src/lamra/weights/compact] [--dims 16,32,64]

1. The PCA: the colour histograms of every training image of PocketBEIR (the train queries' images
   and their positive candidates'), nothing from val or test.
2. The predictor: every training query whose positive candidate has an image (its instruction drawn
   as the evaluation draws one), encoded by the package (its LMM embedding and its own image's
   colours) -> the colours of that positive; a ridge regression (``--ridge``).
3. The weights: every val query of every task against its task's full local pool, scored with the
   channel at each number of components of ``--dims`` and weight of ``--grid`` (the model encodes
   each item once; the grid only changes the channel's block). A task's queries either all have an
   image or all lack one, so the text weight is chosen on the tasks whose queries are text and the
   image weight on the others, in one sweep: the best average R@5 over all tasks wins; a tie goes
   to the smaller weights, then fewer components.
4. The channel is written into the package (``colour.safetensors``, named in ``lamra.json``), and
   ``--page`` records the grid (val numbers only: test is for the results pages).

``--dry-run`` does 1 to 3 and writes nothing into the package.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

from lamra import LamRA
from lamra.colour import LEVELS, ColourChannel, colour_histogram
from lamra.data.mbeir import MBEIRDataset
from lamra.data.mbeir_items import query_item
from lamra.data.training_images import training_images
from lamra.evaluate.queries import encode_queries, pick_instruction, positive_modality
from lamra.evaluate.remembering import RememberingEncoder
from lamra.evaluate.runner import evaluate_mbeir
from lamra.evaluate.channel_fit import channel_fit_parser, command_with_options
from lamra.evaluate.tables import DISPLAY_NAMES, markdown_table, write_markdown
from lamra.evaluate.task_pools import TaskPools
from lamra.evaluate.tasks import list_tasks
from lamra.items import load_image
from lamra.light_checkpoint import set_channel

DEFAULT_DIMS = (16, 32, 64)
DEFAULT_GRID = (0.0, 0.005, 0.01, 0.02, 0.03, 0.04)


class Histograms:
    """Colour histograms of image files, each computed once."""

    def __init__(self, image_root: Path):
        self.image_root = image_root
        self._known: dict[str, np.ndarray] = {}

    def of(self, paths: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
        """(histograms, has_image) rows for paths relative to the image root (None: no image)."""
        for path in paths:
            if path and path not in self._known:
                self._known[path] = colour_histogram(load_image(path, self.image_root))
        rows = [self._known[p] if p else np.zeros(LEVELS**3, np.float32) for p in paths]
        return np.stack(rows), np.array([bool(p) for p in paths])


class ColourSweep:
    """The package's vectors without a colour channel, with the block of whichever ``channel`` is set
    appended. Each item is encoded once, so a grid of channels costs one encoding."""

    similarity = "dot"

    def __init__(self, model: LamRA, histograms: Histograms):
        self.base = RememberingEncoder(model)
        self.hidden = model.backbone.hf_model.config.get_text_config().hidden_size
        self.histograms = histograms
        self.channel: ColourChannel | None = None

    def encode(self, items, instruction=None, role: str = "query", image_root=None, **options) -> np.ndarray:
        vectors = self.base.encode(items, instruction=instruction, role=role, image_root=image_root, **options)
        histograms, has_image = self.histograms.of([item.get("img_path") for item in items])  # one image at most
        if role == "document":
            block = self.channel.document_vectors(histograms, has_image)
        else:
            block = self.channel.query_vectors(vectors[:, : self.hidden], histograms, has_image)
        return np.concatenate([vectors, block], axis=1)


def training_queries(model: LamRA, data: MBEIRDataset, histograms: Histograms):
    """Every training query whose positive has an image: LMM embeddings, own histograms, image flags
    and the positives' histograms. Instructions drawn as the evaluation draws them (seed 0)."""
    pools = TaskPools(model, data, model_name="fit-colour", batch_size=32, index_dir=None, index_type="flat",
                      show_progress=False)
    hidden = model.backbone.hf_model.config.get_text_config().hidden_size
    embeddings, own, wanted = [], [], []
    for task in list_tasks(data, "train"):
        pool = pools.candidates(pools.pool_path("global", task, "train"))
        queries = [q for q in data.queries("train", task.dataset, task.task_id)
                   if pool[sorted(q.pos_cand_list)[0]].img_path]
        if not queries:
            continue
        instructions = [pick_instruction(data, q, positive_modality(q, pool, task), seed=0) for q in queries]
        items = [query_item(q, instruction) for q, instruction in zip(queries, instructions)]
        print(f"training queries of {task.key}: {len(queries)}", flush=True)
        vectors = encode_queries(model, items, instructions, batch_size=32, image_root=data.root, show_progress=True)
        embeddings.append(vectors[:, :hidden])
        own.append([q.query_img_path or None for q in queries])
        wanted.append([pool[sorted(q.pos_cand_list)[0]].img_path for q in queries])
    own_histograms, own_has_image = histograms.of([p for paths in own for p in paths])
    wanted_histograms, _ = histograms.of([p for paths in wanted for p in paths])
    return np.concatenate(embeddings), own_histograms, own_has_image, wanted_histograms


def main() -> None:
    parser = channel_fit_parser(__doc__, DEFAULT_DIMS, DEFAULT_GRID, "results/colour.md")
    parser.add_argument("--ridge", type=float, default=10.0, help="the predictor's ridge penalty")
    args = parser.parse_args()
    grid = sorted(float(w) for w in args.grid.split(","))
    dims_grid = sorted(int(d) for d in args.dims.split(","))

    started = time.perf_counter()
    model = LamRA.from_pretrained(args.model)
    model.retriever.colour = None  # fitted on the package's other parts only
    data = MBEIRDataset(args.data)
    histograms = Histograms(data.root)
    try:
        paths = training_images(args.data)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    image_histograms, _ = histograms.of(paths)
    queries = training_queries(model, data, histograms)
    print(f"PCA of {len(paths)} training images; predictor from {len(queries[0])} training queries; "
          f"components {dims_grid}, weights {grid}", flush=True)

    text_tasks = {t.dataset for t in list_tasks(data, "val") if "image" not in t.query_modality}
    encoder = ColourSweep(model, histograms)
    recalls_at, tasks = {}, None
    for dims in dims_grid:
        fitted = ColourChannel.fit(image_histograms, *queries, dims=dims, ridge=args.ridge)
        for weight in grid:
            encoder.channel = fitted.with_weights(weight, weight)
            report = evaluate_mbeir(encoder, args.data, split="val", pools=("local",), show_progress=not recalls_at)
            recalls_at[dims, weight] = {r.task.dataset: 100 * r.metrics["R@5"] for r in report.results}
            tasks = tasks or list(recalls_at[dims, weight])
            print(f"{dims} components, weight {weight:g}: val R@5 {recalls_at[dims, weight]}", flush=True)
    rows = {}
    for dims, text_weight, image_weight in itertools.product(dims_grid, grid, grid):
        recalls = {t: recalls_at[dims, text_weight if t in text_tasks else image_weight][t] for t in tasks}
        rows[dims, text_weight, image_weight] = (recalls, float(np.mean(list(recalls.values()))))
    best = max(rows, key=lambda key: (round(rows[key][1], 6), -key[2], -key[1], -key[0]))
    shown = [key for key in rows if key[1] == key[2] or key == best]  # the sweep itself, and the pick
    table = markdown_table(["components", "text weight", "image weight", *(DISPLAY_NAMES.get(t, t) for t in tasks), "Avg"], [
        [*(f"**{v:g}**" if key == best else f"{v:g}" for v in key), *(f"{rows[key][0][t]:.1f}" for t in tasks),
         f"{rows[key][1]:.1f}"] for key in shown])
    text_names = ", ".join(DISPLAY_NAMES.get(t, t) for t in tasks if t in text_tasks)
    page = (f"# LamRA-Ret's colour channel: components and weights chosen on val\n\n"
            f"Val split, every query, each task's full local pool; R@5 x100. Weight 0 is the package without the "
            f"channel. PCA of {len(paths)} training images' colour histograms (whitened); the predictor is a ridge "
            f"regression (penalty {args.ridge:g}) from {len(queries[0])} training queries (LMM embedding, own "
            f"image's colours) to their positives' colours. The text weight applies to queries without an image "
            f"({text_names}), the image weight to the others; the rows with equal weights are the sweep, and the "
            f"bold row is the pick: {best[0]} components, text weight {best[1]:g}, image weight {best[2]:g} (best "
            f"average; ties go to the smaller weights, then fewer components). Test numbers are on "
            f"`results/pocketbeir.md`.\n\n{table}\n")
    print(page)
    if args.dry_run:
        return
    set_channel(args.model, "colour", ColourChannel.fit(image_histograms, *queries, dims=best[0], ridge=args.ridge,
                                                        text_weight=best[1], image_weight=best[2]))
    # the page names the grid it shows
    command = command_with_options("scripts/fit_colour.py", parser, args, ("model", "dims", "grid", "ridge"))
    write_markdown(args.page, command, page)
    print(f"wrote the channel into {args.model} and {args.page}; {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
