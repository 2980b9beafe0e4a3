"""Fit LamRA-Ret's appearance channel (``lamra.appearance``) and choose its weight on the val split.

    .venv/bin/python scripts/fit_appearance.py [--model src/lamra/weights/compact] [--dims 576]

1. The PCA: the global trunk features of every training image of PocketBEIR (the train queries' images
   and their positive candidates'), nothing from val or test.
2. The whitening power and the weight: every val query of every task against its task's full local
   pool, scored with the channel at each power of ``--whiten`` and weight of ``--grid`` (the model
   encodes each item once; the grid only changes the channel's block). The pair with the best
   average R@5 wins; a tie goes to the smaller weight.
   ``--dims`` (the PCA components kept) is swept the same way, and so is ``--ignore-tone``: how many
   skin-tone directions (``AppearanceChannel.within_group_directions`` over each training drawing and
   its tone variants) are projected out before the PCA.
3. The channel is written into the package (``appearance.safetensors``, named in ``lamra.json``), and
   ``--page`` records the grid (val numbers only: test is for the results pages).

``--dry-run`` does 1 and 2 and writes nothing into the package.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
from tqdm.auto import tqdm

from lamra import LamRA
from lamra.appearance import AppearanceChannel
from lamra.evaluate.remembering import RememberingEncoder
from lamra.evaluate.runner import evaluate_mbeir
from lamra.data.training_images import training_images
from lamra.evaluate.channel_fit import channel_fit_parser, command_with_options
from lamra.evaluate.tables import DISPLAY_NAMES, markdown_table, write_markdown
from lamra.items import load_image
from lamra.light_checkpoint import set_channel
from lamra.pocketbeir.emoji import TONES
from lamra.retriever import autocast_for

DEFAULT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)
DEFAULT_WHITENING = (0.0, 0.5, 1.0)
# At most 384: the shipped weights must stay within 30 MB (384 float16 components of 1,280: 1 MB).
DEFAULT_DIMS = (128, 256, 384)
DEFAULT_IGNORED_TONES = (0, 4, 8, 16)


def skin_tone_group(path: str) -> str:
    """A drawing and its skin-tone variants share a group: the vendor's folder and the file name
    without tone modifiers (``images/google/1f44b-1f3fd.png`` -> ``google/1f44b``)."""
    image = Path(path)
    codes = [code for code in image.stem.split("-") if code.upper() not in TONES]
    return f"{image.parent.name}/{'-'.join(codes)}"


def global_features(model: LamRA, paths: list[str], image_root: Path, batch_size: int = 64,
                    progress: bool = True) -> np.ndarray:
    """The trunk's global (mean-pooled) feature of each image, through the model's feature cache (the
    same precision, so the same numbers, as ``Retriever`` gives the channel)."""
    backbone = model.backbone
    rows = []
    with autocast_for(backbone.device, model.precision, backbone.model):
        for start in tqdm(range(0, len(paths), batch_size), desc="images", unit="batch", disable=not progress):
            images = [load_image(p, image_root) for p in paths[start : start + batch_size]]
            rows.append(backbone.global_image_features(images).numpy())
    return np.concatenate(rows)


class ChannelSweep:
    """LamRA-Ret's LMM vectors with the block of whichever ``channel`` is set appended. Each item's
    LMM vector and trunk feature are computed once, so a grid of channels costs one encoding."""

    similarity = "dot"

    def __init__(self, model: LamRA):
        self.model = model  # loaded without a channel
        self.lmm = RememberingEncoder(model)
        self.channel: AppearanceChannel | None = None
        self._features: dict[str, np.ndarray] = {}

    def encode(self, items, instruction=None, role: str = "query", image_root=None, **options) -> np.ndarray:
        lmm_vectors = self.lmm.encode(items, instruction=instruction, role=role, image_root=image_root, **options)
        paths = [item.get("img_path") for item in items]  # evaluation items: one image at most
        missing = sorted({p for p in paths if p and p not in self._features})
        if missing:
            self._features.update(zip(missing, global_features(self.model, missing, Path(image_root), progress=False)))
        features = np.stack([self._features[p] if p else np.zeros_like(self.channel.mean) for p in paths])
        block = self.channel.vectors(features, np.array([bool(p) for p in paths]))
        return np.concatenate([lmm_vectors, block], axis=1)


def main() -> None:
    parser = channel_fit_parser(__doc__, DEFAULT_DIMS, DEFAULT_GRID, "results/appearance.md")
    parser.add_argument("--whiten", default=",".join(map(str, DEFAULT_WHITENING)), help="whitening powers tried on val")
    parser.add_argument("--ignore-tone", default=",".join(map(str, DEFAULT_IGNORED_TONES)),
                        help="skin-tone directions projected out, tried on val")
    args = parser.parse_args()
    grid = sorted(float(w) for w in args.grid.split(","))
    whitenings = sorted(float(p) for p in args.whiten.split(","))
    dims_grid = sorted(int(d) for d in args.dims.split(","))
    ignored_grid = sorted(int(t) for t in args.ignore_tone.split(","))

    started = time.perf_counter()
    model = LamRA.from_pretrained(args.model, channels=False)
    model.backbone.persist_features()
    try:
        paths = training_images(args.data)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    features = global_features(model, paths, args.data)
    tone_directions = AppearanceChannel.within_group_directions(features, [skin_tone_group(p) for p in paths],
                                                                max(ignored_grid))
    print(f"PCA of {len(paths)} training images: components {dims_grid}, whitening powers {whitenings}, "
          f"skin-tone directions ignored {ignored_grid}")

    encoder = ChannelSweep(model)
    rows, tasks = {}, None
    for dims, whiten, ignored in itertools.product(dims_grid, whitenings, ignored_grid):
        fitted = AppearanceChannel.fit(features, dims, whiten=whiten, ignore=tone_directions[:ignored])
        for weight in grid:
            if weight == 0.0 and rows:  # w = 0 is the LMM alone, whatever the PCA: measured once
                continue
            encoder.channel = fitted.with_weight(weight)
            report = evaluate_mbeir(encoder, args.data, split="val", pools=("local",), show_progress=not rows)
            recalls = {r.task.dataset: 100 * r.metrics["R@5"] for r in report.results}
            tasks = tasks or list(recalls)
            key = (dims, whiten, ignored, weight)
            rows[key] = (recalls, float(np.mean(list(recalls.values()))))
            print(f"{dims} components, whitening {whiten:g}, {ignored} tone directions ignored, w = {weight:g}: "
                  f"val average R@5 {rows[key][1]:.1f}", flush=True)
    model.backbone.feature_cache.flush()
    # best average; ties go to the smaller weight, then fewer ignored directions, the weaker
    # whitening, fewer components
    best = max(rows, key=lambda key: (round(rows[key][1], 6), -key[3], -key[2], -key[1], -key[0]))
    table = markdown_table(["components", "whitening", "tone dirs ignored", "w",
                            *(DISPLAY_NAMES.get(t, t) for t in tasks), "Avg"], [
        [*(f"**{v:g}**" if key == best else f"{v:g}" for v in key), *(f"{recalls[t]:.1f}" for t in tasks), f"{average:.1f}"]
        for key, (recalls, average) in rows.items()])
    page = (f"# LamRA-Ret's appearance channel: components, whitening and weight chosen on val\n\n"
            f"Val split, every query, each task's full local pool; R@5 x100. w = 0 is the LMM embedding alone. "
            f"PCA of {len(paths)} training images' global trunk features, each component divided by its standard "
            f"deviation to the whitening power, after the given number of skin-tone directions (the principal "
            f"directions along which a training drawing's tone variants differ) are projected out. Chosen: "
            f"{best[0]} components, whitening {best[1]:g}, {best[2]} tone directions ignored, w = {best[3]:g} "
            f"(best average; ties go to the smaller weight, fewer ignored directions, the weaker whitening, fewer "
            f"components). Test numbers "
            f"are on `results/pocketbeir.md`.\n\n{table}\n")
    print(page)
    if args.dry_run:
        return
    set_channel(args.model, "appearance", AppearanceChannel.fit(features, best[0], weight=best[3], whiten=best[1],
                                                                ignore=tone_directions[:best[2]]))
    # the page names the grid it shows
    command = command_with_options("scripts/fit_appearance.py", parser, args, ("model", "dims", "grid", "whiten", "ignore_tone"))
    write_markdown(args.page, command, page)
    print(f"wrote the channel into {args.model} and {args.page}; {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
