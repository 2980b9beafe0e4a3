"""Turning whatever a user passes to ``encode``/``rerank`` into an ordered list of segments.

An item is a sequence of segments, each a string or a PIL image. Accepted inputs:

- ``"a string"``                              -> text
- ``PIL.Image.Image`` or ``pathlib.Path``     -> image (a Path is always read as an image file)
- ``("text", image)`` / ``(image, "text")``   -> text + image pair (image first, as LamRA does)
- ``{"txt": ..., "img_path": ...}``           -> an M-BEIR record (query or candidate); ``image_root``
                                                 resolves ``img_path``
- ``["text", img, "more text", img2]``        -> interleaved segments, in order

Errors name the item and its position so that one bad file in a batch of thousands is easy to find.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

Segment = str | Image.Image


class InputError(ValueError):
    """Bad user input (missing image, empty text, unsupported type), named with its position."""


# Images are refused above this many pixels before they are decoded (PIL's own bomb limit is 178M,
# and decoding one that large takes seconds and gigabytes); the model sees 224x224 or ~300*28*28.
MAX_IMAGE_PIXELS = int(os.environ.get("LAMRA_MAX_IMAGE_PIXELS", 40_000_000))


def check_top_k(top_k: Any, name: str = "top_k") -> int:
    """A count of hits: an integer of at least 1 (``True``, 0 and -1 are refused, not sliced with)."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise InputError(f"{name} must be an integer of at least 1, got {top_k!r}")
    return top_k


def check_text(text: str) -> str:
    """Text must be non-empty and valid Unicode (a lone surrogate cannot be tokenised or stored)."""
    if not text.strip():
        raise InputError("empty text")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InputError(f"text is not valid Unicode ({error.reason} at character {error.start})") from None
    return text


def check_image_size(image: Image.Image, name: str, max_pixels: int | None = None) -> None:
    """Refuse an empty image, or one over ``max_pixels`` (default ``LAMRA_MAX_IMAGE_PIXELS``)."""
    limit = MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    width, height = image.size
    if width == 0 or height == 0:
        raise InputError(f"image {name} has no pixels ({width}x{height})")
    if width * height > limit:
        raise InputError(f"image {name} is {width}x{height} pixels, more than the limit of {limit:,} "
                         "(set LAMRA_MAX_IMAGE_PIXELS to raise it)")


def resolve_under(root: str | os.PathLike, path: str | os.PathLike) -> Path:
    """``root / path`` resolved; a path that escapes ``root`` (``..``, an absolute path, a link out)
    is refused."""
    root = Path(root).resolve()
    full = (root / path).resolve()
    if full != root and root not in full.parents:
        raise InputError(f"image path {str(path)!r} escapes the data root {str(root)!r}")
    return full


def image_file(path: str | os.PathLike, image_root: str | os.PathLike | None = None) -> Path:
    """The image's file (under ``image_root`` when given, escapes refused); InputError if it is not there."""
    path = resolve_under(image_root, path) if image_root is not None else Path(path)
    if not path.is_file():
        raise InputError(f"image file not found: {str(path)!r}")
    return path


def load_image(path: str | os.PathLike, image_root: str | os.PathLike | None = None) -> Image.Image:
    """Open an image as RGB; transparent pixels are composited onto white (emoji PNGs are RGBA).

    With ``image_root``, a relative path is resolved under it and a path that escapes it is refused.
    """
    path = image_file(path, image_root)
    try:
        with Image.open(path) as image:
            check_image_size(image, repr(str(path)))  # from the header, before decoding
            image.load()
            return to_rgb(image)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as error:
        if isinstance(error, InputError):
            raise
        raise InputError(f"cannot read image {str(path)!r}: {error}") from None


def to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _segment(value: Any, image_root) -> Segment:
    if isinstance(value, str):
        return check_text(value)
    if isinstance(value, Image.Image):
        check_image_size(value, "given as a PIL image")
        return to_rgb(value)
    if isinstance(value, os.PathLike):
        return load_image(value, image_root)
    raise InputError(f"unsupported segment type {type(value).__name__}")


def to_segments(item: Any, image_root: str | os.PathLike | None = None) -> list[Segment]:
    """Normalise one item to its segments (raises InputError without position information)."""
    if isinstance(item, dict):
        text = _field(item, ("txt", "query_txt"), (str,)) or ""
        img_path = _field(item, ("img_path", "query_img_path"), (str, os.PathLike))
        segments: list[Segment] = []
        if img_path:
            segments.append(load_image(img_path, image_root))
        if text.strip():
            segments.append(check_text(text))
        if not segments:
            raise InputError("record has neither text nor image")
        return segments
    if isinstance(item, (str, Image.Image, os.PathLike)):
        return [_segment(item, image_root)]
    if isinstance(item, Sequence) and not isinstance(item, (bytes, bytearray)):
        if not item:
            raise InputError("empty sequence")
        segments = [_segment(value, image_root) for value in item]
        if isinstance(item, tuple) and len(segments) == 2:
            # a (text, image) pair is shown image first, as LamRA's prompts do
            segments.sort(key=lambda s: not isinstance(s, Image.Image))
        return segments
    raise InputError(f"unsupported input type {type(item).__name__}")


def _field(record: dict, keys: tuple[str, ...], types: tuple[type, ...]) -> Any:
    """The first non-empty of ``keys``; a value of another type is refused with the key named."""
    for key in keys:
        value = record.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, types):
            wanted = " or ".join("a path" if t is os.PathLike else "a string" for t in types)
            raise InputError(f"field {key!r} must be {wanted}, got {type(value).__name__}")
        return value
    return None


def to_segment_batch(items: Sequence[Any], image_root=None, what: str = "item") -> list[list[Segment]]:
    """Normalise a batch; the first bad item raises an InputError naming its position."""
    if isinstance(items, (str, Image.Image, os.PathLike, dict)):
        raise InputError(f"expected a list of {what}s, got a single {type(items).__name__}")
    batch = []
    for position, item in enumerate(items):
        try:
            batch.append(to_segments(item, image_root))
        except InputError as error:
            raise InputError(f"{what} {position} ({_describe(item)}): {error}") from None
    return batch


def _describe(item: Any) -> str:
    text = repr(item)
    return text if len(text) <= 80 else text[:77] + "..."


def with_instruction(segments: list[Segment], instruction: str | None) -> list[Segment]:
    """Prefix the item's text with an instruction as LamRA does: ``"{instruction} {query_txt}"``."""
    if not instruction:
        return segments
    segments = list(segments)
    for i, segment in enumerate(segments):
        if isinstance(segment, str):
            segments[i] = f"{instruction} {segment}"
            return segments
    return segments + [instruction]
