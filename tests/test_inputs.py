"""Bad input gets one clear error naming the item and its position; good input is normalised."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from lamra import InputError, LamRA
from lamra.items import load_image, to_segment_batch, to_segments


@pytest.fixture(scope="module")
def model(compact_backbone):
    return LamRA(compact_backbone)


def test_missing_image_names_item_and_position(model, tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(InputError, match=r"item 1 .*not found: .*nope\.png"):
        model.encode(["fine", missing, "also fine"])


def test_corrupt_image_names_item_and_position(model, tmp_path):
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    with pytest.raises(InputError, match=r"item 2 .*cannot read image .*broken\.png"):
        model.encode(["fine", "fine", ("caption", corrupt)])


@pytest.mark.parametrize("bad", ["", "   ", ["text", ""]])
def test_empty_text_is_refused(model, bad):
    with pytest.raises(InputError, match=r"item 1 .*empty"):
        model.encode(["fine", bad])


@pytest.mark.parametrize("bad", [42, b"bytes", None, 3.5])
def test_unsupported_type_is_refused(model, bad):
    with pytest.raises(InputError, match=r"item 0 .*unsupported"):
        model.encode([bad, "fine"])


def test_single_string_instead_of_list_is_refused(model):
    with pytest.raises(InputError, match="expected a list"):
        model.encode("just one string")


def test_transparent_png_is_composited_onto_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(path)
    assert load_image(path).getpixel((0, 0)) == (255, 255, 255)


def test_path_escaping_the_data_root_is_refused(tmp_path):
    (tmp_path / "root").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "outside.png")
    with pytest.raises(InputError, match="escapes the data root"):
        load_image("../outside.png", image_root=tmp_path / "root")


def test_mbeir_record_and_pair_order(tmp_path):
    Image.new("RGB", (4, 4), (1, 2, 3)).save(tmp_path / "a.png")
    segments = to_segments({"txt": "a caption", "img_path": "a.png"}, image_root=tmp_path)
    assert isinstance(segments[0], Image.Image) and segments[1] == "a caption"
    pair = to_segments(("text first", Path(tmp_path / "a.png")))
    assert isinstance(pair[0], Image.Image)  # pairs are shown image first, as LamRA does


def test_nothing_is_dropped_from_a_good_batch():
    batch = to_segment_batch(["a", ("b", Image.new("RGB", (2, 2))), ["c", "d"]])
    assert [len(b) for b in batch] == [1, 2, 2]


def _png(path: Path, size: tuple[int, int]) -> Path:
    Image.new("RGB", size, (200, 40, 40)).save(path)
    return path


# item -> what the error must say (checked without the model: to_segment_batch is what encode calls first)
BAD_ITEMS = {
    "lone surrogate": ("a \ud800 b", r"item 0 .*not valid Unicode"),
    "non-string txt": ({"txt": 42}, r"item 0 .*field 'txt' must be a string, got int"),
    "non-string img_path": ({"img_path": ["a.png"]}, r"item 0 .*field 'img_path' must be a string or a path, got list"),
    "dict txt": ({"query_txt": {"x": 1}}, r"item 0 .*field 'query_txt' must be a string, got dict"),
    "zero-size PIL image": (Image.new("RGB", (0, 4)), r"item 0 .*no pixels \(0x4\)"),
}


@pytest.mark.parametrize("case", list(BAD_ITEMS))
def test_bad_items_are_named(case):
    item, message = BAD_ITEMS[case]
    with pytest.raises(InputError, match=message):
        to_segment_batch([item, "fine"])


def test_oversize_images_are_refused_before_decoding(tmp_path, monkeypatch):
    import lamra.items

    monkeypatch.setattr(lamra.items, "MAX_IMAGE_PIXELS", 100 * 100)
    big = _png(tmp_path / "big.png", (200, 100))
    with pytest.raises(InputError, match=r"big\.png' is 200x100 pixels, more than the limit of 10,000"):
        to_segment_batch([big])
    to_segment_batch([_png(tmp_path / "fits.png", (100, 100))])


def test_a_decompression_bomb_names_the_file(tmp_path, monkeypatch):
    # PIL raises its own bomb error above twice its MAX_IMAGE_PIXELS: it must not escape as PIL's error
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    bomb = _png(tmp_path / "bomb.png", (100, 100))
    with pytest.raises(InputError, match=r"item 0 .*bomb\.png"):
        to_segment_batch([bomb])
