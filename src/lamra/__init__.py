"""LamRA: a large multimodal model as a universal retrieval assistant (retrieve, rerank, evaluate)."""

from lamra.items import InputError
from lamra.model import Hit, LamRA

__all__ = ["LamRA", "Hit", "InputError"]
__version__ = "0.1.0"
