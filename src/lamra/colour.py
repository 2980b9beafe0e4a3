"""The colour channel: the colours a query asks for, scored against the colours a candidate has.

The compact LMM keeps little of the colour its trunk sees (``docs/training/notes.md``: a linear probe
tells a drawing's skin tone from its LMM vector 54% of the time, from a plain colour histogram 90%).
So "this emoji with dark skin tone" finds the right emoji in the wrong tone, and the appearance
channel (``lamra.appearance``), which must ignore tone, cannot help. This channel adds the missing
term to the score, as one more block of the vector:

- a candidate's block is its colours: the PCA-whitened square-root histogram of the foreground pixels
  of its image (``colour_histogram``; zeros for an item without an image), times ``sqrt(w)``, where
  ``w`` is the larger of the two weights below;
- a query's block is the colours of what it asks for, predicted by a ridge regression from the
  query's LMM embedding and its own image's colours (so "with dark skin tone" and the picture it
  modifies both count), times its weight over ``sqrt(w)``: ``text_weight`` for a query without an
  image, ``image_weight`` for one with an image.

The inner product of the two adds ``weight * <predicted colours, candidate colours>`` to the LMM and
appearance scores. Splitting the weight between the sides keeps a candidate's block on the scale of
the query's, so sums of candidate vectors (query expansion's feedback) do not drown the other terms. It touches only scores of candidates with an image, and it needs nothing from the
backbone: the histogram is computed from the pixels. The regression is fitted on training queries
(each one's positive candidate's colours are the target) and the weights on val
(``scripts/fit_colour.py``). Queries and candidates get different blocks, so a collection must be
encoded with ``role="document"`` (``LamRA.search``, indexes and evaluation do). Stored beside the
adapters as ``colour.safetensors``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lamra.channel_file import load_channel_file, save_channel_file
from lamra.items import to_rgb

COLOUR_FILE = "colour.safetensors"
LEVELS = 8  # per channel: 8 x 8 x 8 RGB bins
BACKGROUND = 235  # a pixel with every channel at or above this is background (white, or near it)
HISTOGRAM_SIDE = 128  # larger images are subsampled first: the histogram barely changes, the cost does


def colour_histogram(image: Image.Image) -> np.ndarray:
    """The square roots of the shares of the image's foreground pixels in each of 512 RGB bins
    (transparent pixels count as white; white is background). All zeros for a blank image."""
    image = to_rgb(image)
    if max(image.size) > HISTOGRAM_SIDE:  # nearest neighbour keeps the image's own colours
        scale = HISTOGRAM_SIDE / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.NEAREST)
    pixels = np.asarray(image, dtype=np.int32).reshape(-1, 3)
    pixels = pixels[(pixels < BACKGROUND).any(axis=1)]
    bins = pixels * LEVELS // 256
    counts = np.bincount((bins[:, 0] * LEVELS + bins[:, 1]) * LEVELS + bins[:, 2], minlength=LEVELS**3)
    return np.sqrt(counts / max(len(pixels), 1)).astype(np.float32)


@dataclass(frozen=True)
class ColourChannel:
    """A candidate's colours: ``(histogram - mean) @ components.T * scales`` (PCA, whitened). A
    query's wanted colours: ``(inputs - input_mean) @ predictor + output_mean``, where the inputs are
    the unit LMM embedding, the query image's colours (zeros without one) and a 0/1 image flag."""

    mean: np.ndarray  # (512,)
    components: np.ndarray  # (k, 512), orthonormal rows
    scales: np.ndarray  # (k,)
    input_mean: np.ndarray  # (hidden + k + 1,)
    predictor: np.ndarray  # (hidden + k + 1, k)
    output_mean: np.ndarray  # (k,)
    text_weight: float
    image_weight: float

    def __post_init__(self):
        k = self.components.shape[0]
        if self.mean.shape != (LEVELS**3,) or self.components.shape != (k, LEVELS**3) or self.scales.shape != (k,):
            raise ValueError(f"colour channel: mean {self.mean.shape}, components {self.components.shape} and "
                             f"scales {self.scales.shape} disagree")
        inputs = self.input_mean.shape[0]
        if self.predictor.shape != (inputs, k) or self.output_mean.shape != (k,) or inputs <= k + 1:
            raise ValueError(f"colour channel: predictor {self.predictor.shape} for {inputs} inputs and {k} outputs")
        for name in ("text_weight", "image_weight"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"colour channel: {name} must be a finite number >= 0, got {value}")

    @property
    def dims(self) -> int:
        return int(self.components.shape[0])

    @property
    def embedding_dims(self) -> int:
        """The LMM embedding size the predictor reads."""
        return int(self.input_mean.shape[0]) - self.dims - 1

    @property
    def document_scale(self) -> float:
        """``sqrt`` of the larger weight: a candidate's share of the score's weight."""
        return float(np.sqrt(max(self.text_weight, self.image_weight)))

    def colours(self, histograms: np.ndarray, has_image: np.ndarray) -> np.ndarray:
        """Whitened PCA coordinates of ``colour_histogram`` rows; zero rows where ``has_image`` is False."""
        return _project(histograms, self.mean, self.components, self.scales, has_image)

    def document_vectors(self, histograms: np.ndarray, has_image: np.ndarray) -> np.ndarray:
        """Candidates' blocks: their colours times ``document_scale``."""
        return (self.colours(histograms, has_image) * self.document_scale).astype(np.float32)

    def query_vectors(self, embeddings: np.ndarray, histograms: np.ndarray, has_image: np.ndarray) -> np.ndarray:
        """Queries' blocks: the predicted colours of what each asks for, times its weight over
        ``document_scale`` (so the inner product with a candidate's block carries the weight)."""
        has_image = np.asarray(has_image, bool)
        wanted = _inputs(embeddings, self.colours(histograms, has_image), has_image)
        wanted = (wanted - self.input_mean) @ self.predictor + self.output_mean
        weights = np.where(has_image, self.image_weight, self.text_weight)
        scale = self.document_scale
        return (wanted * (weights / scale if scale > 0 else weights)[:, None]).astype(np.float32)

    @classmethod
    def fit(cls, image_histograms: np.ndarray, embeddings: np.ndarray, query_histograms: np.ndarray,
            query_has_image: np.ndarray, wanted_histograms: np.ndarray, dims: int, ridge: float = 10.0,
            text_weight: float = 0.0, image_weight: float = 0.0) -> ColourChannel:
        """PCA (whitened) of training images' histograms (n, 512), then a ridge regression from each
        training query (its unit LMM embedding (m, hidden), its image's histogram and whether it has
        one) to the colours of its positive candidate (``wanted_histograms``, (m, 512)).
        Deterministic (SVD; each component's sign fixed so its largest entry is positive)."""
        histograms = np.asarray(image_histograms, np.float64)
        if histograms.ndim != 2 or histograms.shape[1] != LEVELS**3 or len(histograms) < 2:
            raise ValueError(f"colour channel: need at least 2 histograms (n, {LEVELS**3}), got {histograms.shape}")
        if not len(embeddings) == len(query_histograms) == len(query_has_image) == len(wanted_histograms) > 0:
            raise ValueError("colour channel: the training queries' embeddings, histograms, image flags and "
                             "targets must be non-empty and of one length")
        dims = min(dims, *histograms.shape)
        mean = histograms.mean(axis=0)
        _, singular, vt = np.linalg.svd(histograms - mean, full_matrices=False)
        components = vt[:dims]
        components = components * np.sign(components[np.arange(dims), np.abs(components).argmax(axis=1)])[:, None]
        deviation = singular[:dims] / np.sqrt(len(histograms) - 1)
        pca = (mean.astype(np.float32), components.astype(np.float32),
               (1.0 / np.maximum(deviation, deviation[0] * 1e-6)).astype(np.float32))
        has_image = np.asarray(query_has_image, bool)
        inputs = _inputs(embeddings, _project(query_histograms, *pca, has_image), has_image).astype(np.float64)
        targets = _project(wanted_histograms, *pca).astype(np.float64)
        input_mean, output_mean = inputs.mean(axis=0), targets.mean(axis=0)
        centred = inputs - input_mean
        predictor = np.linalg.solve(centred.T @ centred + ridge * np.eye(centred.shape[1]),
                                    centred.T @ (targets - output_mean))
        return cls(*pca, input_mean.astype(np.float32),
                   predictor.astype(np.float32), output_mean.astype(np.float32), float(text_weight), float(image_weight))

    def with_weights(self, text_weight: float, image_weight: float) -> ColourChannel:
        return ColourChannel(self.mean, self.components, self.scales, self.input_mean, self.predictor,
                             self.output_mean, float(text_weight), float(image_weight))

    def save(self, path: str | os.PathLike) -> Path:
        return save_channel_file(path, {name: getattr(self, name) for name in _ARRAYS},
                                 {"text_weight": self.text_weight, "image_weight": self.image_weight})

    @classmethod
    def load(cls, path: str | os.PathLike) -> ColourChannel:
        arrays, metadata = load_channel_file(path, "colour channel")
        try:
            return cls(*(arrays[name] for name in _ARRAYS), float(metadata["text_weight"]),
                       float(metadata["image_weight"]))
        except (KeyError, ValueError) as error:
            raise ValueError(f"cannot read the colour channel {path}: {error}") from None


_ARRAYS = ("mean", "components", "scales", "input_mean", "predictor", "output_mean")  # the stored fields, in order


def _project(histograms: np.ndarray, mean: np.ndarray, components: np.ndarray, scales: np.ndarray,
             has_image: np.ndarray | None = None) -> np.ndarray:
    """Whitened PCA coordinates of histogram rows; zero rows where ``has_image`` is False."""
    coordinates = ((np.asarray(histograms, np.float32) - mean) @ components.T) * scales
    if has_image is not None:
        coordinates = coordinates * np.asarray(has_image, bool)[:, None]
    return coordinates.astype(np.float32)


def _inputs(embeddings: np.ndarray, colours: np.ndarray, has_image: np.ndarray) -> np.ndarray:
    """The predictor's input rows: LMM embedding, own image's colours (zeros without one), image flag."""
    flags = np.asarray(has_image, np.float32)[:, None]
    return np.concatenate([np.asarray(embeddings, np.float32), colours, flags], axis=1)
