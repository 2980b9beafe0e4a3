"""The appearance channel: what the frozen image tower says about how alike two images look.

The compact LMM learns its training concepts and carries over little of what its EfficientNet trunk
knows about appearance to concepts it never saw (``docs/training/notes.md``: on EmojiVendor's unseen
concepts the trunk's own mean-pooled features beat LamRA-Ret, 47.5 vs 44.8 R@5, and the two scores
summed beat both). The channel puts that knowledge into the embedding itself, a late fusion of two
similarities in one inner product (in the spirit of UniIR's score-level fusion): each item's vector
is ``[LMM embedding, sqrt(w) * a]``, where ``a``
is the unit-length PCA projection of the mean of its images' global trunk features (zeros for an item
without an image). The inner product of two such vectors is

    LMM cosine + w * appearance cosine   (the second term only when both items hold an image),

so text-to-text, text-to-image and image-to-text scores are exactly the LMM's, and image-to-image
ones add how alike the pictures look. The rows are not unit length: such a model ranks by inner
product (``similarity == "dot"``), and indexes built from it keep the vectors as they are.

The mean, components and their scales come from the training images only (``fit``: PCA, optionally
whitened, as CNN image descriptors are in instance retrieval: each component divided by a power of
its standard deviation, so a few dominant directions stop deciding every comparison), after the
directions along which a drawing's skin-tone variants differ are projected out: the instruction, read
by the LMM, says which tone is wanted, and a channel that sees tone pulls every answer toward the
query picture's own. The whitening power, the number of tone directions and ``w`` are chosen on val
(``scripts/fit_appearance.py``). Stored beside the adapters as ``appearance.safetensors``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lamra.channel_file import load_channel_file, save_channel_file

APPEARANCE_FILE = "appearance.safetensors"


@dataclass(frozen=True)
class AppearanceChannel:
    """PCA of global trunk features (``mean`` (F,), ``components`` (k, F), orthonormal rows, each
    projection multiplied by its ``scales`` entry (k,): ones, or the whitening) and the weight ``w``
    of the appearance cosine in the score."""

    mean: np.ndarray
    components: np.ndarray
    scales: np.ndarray
    weight: float

    def __post_init__(self):
        if self.mean.ndim != 1 or self.components.ndim != 2 or self.components.shape[1] != self.mean.shape[0]:
            raise ValueError(f"appearance channel: mean {self.mean.shape} and components {self.components.shape} disagree")
        if self.scales.shape != (self.components.shape[0],) or not np.all(np.isfinite(self.scales)):
            raise ValueError(f"appearance channel: scales {self.scales.shape} for {self.components.shape[0]} components")
        if not np.isfinite(self.weight) or self.weight < 0:
            raise ValueError(f"appearance channel: weight must be a finite number >= 0, got {self.weight}")

    @property
    def dims(self) -> int:
        return int(self.components.shape[0])

    @classmethod
    def fit(cls, features: np.ndarray, dims: int, weight: float = 1.0, whiten: float = 0.0,
            ignore: np.ndarray | None = None) -> AppearanceChannel:
        """PCA of training images' global features (n, F): the top ``dims`` directions, each projection
        divided by its standard deviation to the power ``whiten`` (0: plain PCA, 1: full whitening).
        ``ignore`` (t, F), orthonormal rows, are directions the channel must not see (from
        ``within_group_directions``): they are projected out before the PCA, so every component is
        orthogonal to them and the stored format does not change.
        Deterministic (SVD; each component's sign fixed so its largest entry is positive)."""
        features = np.asarray(features, np.float64)
        if features.ndim != 2 or len(features) < 2:
            raise ValueError(f"appearance channel: need at least 2 feature rows (n, F), got shape {features.shape}")
        if ignore is not None and len(ignore):
            ignore = np.asarray(ignore, np.float64)
            if ignore.ndim != 2 or ignore.shape[1] != features.shape[1]:
                raise ValueError(f"appearance channel: directions to ignore {ignore.shape} for features {features.shape}")
            features = features - (features @ ignore.T) @ ignore
        dims = min(dims, *features.shape)
        mean = features.mean(axis=0)
        _, singular, vt = np.linalg.svd(features - mean, full_matrices=False)
        components = vt[:dims]
        signs = np.sign(components[np.arange(dims), np.abs(components).argmax(axis=1)])
        deviation = singular[:dims] / np.sqrt(len(features) - 1)
        scales = np.maximum(deviation, deviation[0] * 1e-6) ** -float(whiten)  # floor: no division by zero
        # Components are stored in float16 (the shipped weights have a size budget); rounded here
        # already, so the channel that is measured is the one that is saved.
        components = (components * signs[:, None]).astype(np.float16).astype(np.float32)
        return cls(mean.astype(np.float32), components, scales.astype(np.float32), float(weight))

    @staticmethod
    def within_group_directions(features: np.ndarray, groups: list, count: int) -> np.ndarray:
        """The ``count`` directions (orthonormal rows) along which images of one group differ most:
        the principal components of each feature minus its group's mean, over groups of two or more.
        With a group per drawing and its skin-tone variants, they are what a tone changes in the
        trunk's view, which an appearance score should not reward (the instruction says the tone)."""
        features = np.asarray(features, np.float64)
        if len(groups) != len(features):
            raise ValueError(f"appearance channel: {len(groups)} group labels for {len(features)} feature rows")
        members: dict = {}
        for row, group in enumerate(groups):
            members.setdefault(group, []).append(row)
        residuals = [features[rows] - features[rows].mean(axis=0) for rows in members.values() if len(rows) > 1]
        if not residuals or count < 1:
            return np.zeros((0, features.shape[1]))
        _, _, vt = np.linalg.svd(np.concatenate(residuals), full_matrices=False)
        return vt[:count]

    def with_weight(self, weight: float) -> AppearanceChannel:
        return AppearanceChannel(self.mean, self.components, self.scales, float(weight))

    def vectors(self, features: np.ndarray, has_image: np.ndarray) -> np.ndarray:
        """``sqrt(w)`` times the unit projection of each row of ``features`` (n, F); zero rows where
        ``has_image`` is False."""
        projected = ((np.asarray(features, np.float32) - self.mean) @ self.components.T) * self.scales
        norms = np.linalg.norm(projected, axis=1, keepdims=True)
        unit = np.divide(projected, norms, out=np.zeros_like(projected), where=norms > 0)
        return (np.sqrt(self.weight) * unit * np.asarray(has_image, bool)[:, None]).astype(np.float32)

    def save(self, path: str | os.PathLike) -> Path:
        return save_channel_file(path, {"mean": self.mean, "components": self.components, "scales": self.scales},
                                 {"weight": self.weight}, half=("components",))

    @classmethod
    def load(cls, path: str | os.PathLike) -> AppearanceChannel:
        arrays, metadata = load_channel_file(path, "appearance channel")
        try:
            return cls(arrays["mean"], arrays["components"], arrays["scales"], float(metadata["weight"]))
        except (KeyError, ValueError) as error:
            raise ValueError(f"cannot read the appearance channel {path}: {error}") from None
