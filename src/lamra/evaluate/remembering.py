"""An encoder that remembers: each (item, instruction, role) is encoded once, so a sweep that
evaluates the same model many times (a grid of search or scoring settings) pays for encoding once."""

from __future__ import annotations

import json

import numpy as np


class RememberingEncoder:
    def __init__(self, model):
        self.model = model
        self.vectors: dict[tuple, np.ndarray] = {}

    def encode(self, items, instruction=None, role: str = "query", image_root=None, **options) -> np.ndarray:
        instructions = instruction if isinstance(instruction, (list, tuple)) else [instruction] * len(items)
        keys = [(json.dumps(item, sort_keys=True, default=str), text, role) for item, text in zip(items, instructions)]
        fresh = [row for row, key in enumerate(keys) if key not in self.vectors]
        if fresh:
            encoded = self.model.encode([items[row] for row in fresh], instruction=[instructions[row] for row in fresh],
                                        role=role, image_root=image_root, **options)
            self.vectors.update((keys[row], vector) for row, vector in zip(fresh, encoded))
        return np.stack([self.vectors[key] for key in keys])

    def __getattr__(self, name):  # similarity, name, backbone, ...: the model's
        return getattr(self.model, name)
