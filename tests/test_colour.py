"""The colour channel: the histogram, the regression it learns, the scores it adds, how packages carry it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lamra import LamRA
from lamra.colour import COLOUR_FILE, ColourChannel, colour_histogram
from lamra.light_checkpoint import load_channel, role_digest, set_channel
from package_helpers import light_package

PAINTS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (30, 60, 220), "yellow": (240, 200, 20)}


def drawing(paint: tuple[int, int, int], side: int = 64, trim: tuple[int, int, int] = (20, 20, 20)) -> Image.Image:
    """A filled square with a dark outline on a transparent background, like an emoji PNG."""
    image = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    edge = side // 32  # the outline scales with the drawing
    image.paste((*trim, 255), (side // 4, side // 4, 3 * side // 4, 3 * side // 4))
    image.paste((*paint, 255), (side // 4 + edge, side // 4 + edge, 3 * side // 4 - edge, 3 * side // 4 - edge))
    return image


def test_histogram_counts_foreground_colours_whatever_the_size():
    red = colour_histogram(drawing(PAINTS["red"]))
    assert red.shape == (512,) and np.sum(red**2) == pytest.approx(1.0)  # square roots of shares
    bin_of = lambda rgb: (rgb[0] * 8 // 256 * 8 + rgb[1] * 8 // 256) * 8 + rgb[2] * 8 // 256  # noqa: E731
    assert red[bin_of(PAINTS["red"])] > red[bin_of((20, 20, 20))] > 0 and red[bin_of(PAINTS["blue"])] == 0
    assert colour_histogram(drawing(PAINTS["red"]).convert("RGB")).tolist() != red.tolist()  # black, not white
    np.testing.assert_allclose(colour_histogram(Image.new("RGB", (32, 32), "white")), 0)  # all background
    np.testing.assert_allclose(colour_histogram(drawing(PAINTS["red"], side=1024)), red, atol=0.02)


def colour_world(seed: int = 0, per_colour: int = 40, hidden: int = 12):
    """Training data where the wanted colour is written in the query's 'embedding' (a noisy code of
    the colour's name); image queries show a drawing in another colour and ask for a recolouring."""
    rng = np.random.default_rng(seed)
    names = list(PAINTS)
    codes = rng.normal(size=(len(names), hidden))
    histograms = {name: colour_histogram(drawing(PAINTS[name])) for name in names}
    embeddings, own, has_image, wanted = [], [], [], []
    for index, name in enumerate(names * per_colour):
        with_image = (index // len(names)) % 2 == 1  # every colour asked for with and without an image
        embedding = codes[names.index(name)] + 0.3 * rng.normal(size=hidden)
        embeddings.append(embedding / np.linalg.norm(embedding))
        own.append(histograms[names[(names.index(name) + 1) % len(names)]] if with_image else np.zeros(512))
        has_image.append(with_image)
        wanted.append(histograms[name])
    image_histograms = np.stack([colour_histogram(drawing(PAINTS[name], trim=tuple(rng.integers(0, 60, 3))))
                                 for name in names * 5])
    return (image_histograms, np.array(embeddings), np.array(own), np.array(has_image), np.array(wanted)), codes, names


def test_the_channel_learns_which_colour_a_query_asks_for():
    data, codes, names = colour_world()
    channel = ColourChannel.fit(*data, dims=6, ridge=0.1, text_weight=0.5, image_weight=1.0)
    again = ColourChannel.fit(*data, dims=6, ridge=0.1, text_weight=0.5, image_weight=1.0)
    np.testing.assert_array_equal(channel.predictor, again.predictor)  # deterministic
    assert channel.dims == 6 and channel.embedding_dims == 12
    documents = channel.document_vectors(np.stack([colour_histogram(drawing(PAINTS[n])) for n in names]),
                                         np.ones(len(names), bool))
    unit_codes = codes / np.linalg.norm(codes, axis=1, keepdims=True)
    text_queries = channel.query_vectors(unit_codes, np.zeros((len(names), 512)), np.zeros(len(names), bool))
    assert (text_queries @ documents.T).argmax(axis=1).tolist() == list(range(len(names)))
    shown = np.stack([colour_histogram(drawing(PAINTS[names[(i + 1) % len(names)]])) for i in range(len(names))])
    image_queries = channel.query_vectors(unit_codes, shown, np.ones(len(names), bool))
    assert (image_queries @ documents.T).argmax(axis=1).tolist() == list(range(len(names)))  # the asked colour, not the shown one
    half = channel.with_weights(0.5, 0.5)  # the image weight scales the scores of image queries
    half_scores = half.query_vectors(unit_codes, shown, np.ones(len(names), bool)) @ half.document_vectors(
        np.stack([colour_histogram(drawing(PAINTS[n])) for n in names]), np.ones(len(names), bool)).T
    np.testing.assert_allclose(image_queries @ documents.T, 2 * half_scores, rtol=1e-4)
    # the weight is split: a candidate's block is its colours times sqrt(1.0), whatever a query asks
    colours = channel.colours(np.stack([colour_histogram(drawing(PAINTS[n])) for n in names]), np.ones(len(names), bool))
    np.testing.assert_allclose(documents, colours * np.sqrt(1.0), rtol=1e-6)
    predicted = channel.with_weights(1.0, 1.0).query_vectors(  # scale 1: the predictions themselves
        unit_codes, np.zeros((len(names), 512)), np.zeros(len(names), bool))
    np.testing.assert_allclose(text_queries @ documents.T, 0.5 * predicted @ colours.T, rtol=1e-4)  # text weight 0.5
    silent = channel.with_weights(0.0, 1.0).query_vectors(unit_codes, shown, np.zeros(len(names), bool))
    np.testing.assert_allclose(silent, 0)  # text weight 0: text queries add nothing
    np.testing.assert_allclose(channel.document_vectors(np.ones((2, 512)), np.zeros(2, bool)), 0)  # no image, no colour


def test_channel_round_trips_and_refuses_what_it_cannot_use(tmp_path):
    data, _, _ = colour_world()
    channel = ColourChannel.fit(*data, dims=5, text_weight=0.25, image_weight=0.75)
    path = channel.save(tmp_path / COLOUR_FILE)
    loaded = ColourChannel.load(path)
    for name in ("mean", "components", "scales", "input_mean", "predictor", "output_mean"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(channel, name))
    assert (loaded.text_weight, loaded.image_weight) == (0.25, 0.75)
    for again in range(4):  # the same bytes every time (a package's digest hashes them)
        assert loaded.save(tmp_path / f"again{again}.safetensors").read_bytes() == path.read_bytes()
    path.write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match=COLOUR_FILE):
        ColourChannel.load(path)
    with pytest.raises(ValueError, match="image_weight"):
        channel.with_weights(0.1, float("nan"))
    with pytest.raises(ValueError, match="at least 2 histograms"):
        ColourChannel.fit(data[0][:1], *data[1:], dims=4)
    with pytest.raises(ValueError, match="one length"):
        ColourChannel.fit(data[0], data[1][:3], *data[2:], dims=4)


def test_a_package_with_the_channel_gives_queries_and_documents_their_own_blocks(tmp_path):
    package = light_package(tmp_path)
    plain = LamRA.from_pretrained(package, precision="fp32")
    hidden = plain.encode(["x"]).shape[1]
    without = role_digest(package)
    data, _, _ = colour_world(hidden=hidden)
    channel = ColourChannel.fit(*data, dims=4, text_weight=0.5, image_weight=1.0)
    set_channel(package, "colour", channel)
    assert role_digest(package) != without == role_digest(package, channels=False)
    assert role_digest(package, "rank") == role_digest(package, "rank", channels=False)
    with pytest.raises(TypeError, match="ColourChannel"):
        set_channel(package, "colour", object())

    model = LamRA.from_pretrained(package, precision="fp32")
    assert model.similarity == "dot" and plain.similarity == "cosine"
    red = drawing(PAINTS["red"])
    items = ["a red square", red, ("a red square", red)]
    lmm = plain.encode(items)
    queries, documents = model.encode(items), model.encode(items, role="document")
    assert queries.shape == documents.shape == (3, hidden + 4)
    np.testing.assert_allclose(queries[:, :hidden], lmm, atol=1e-5)  # the LMM part is untouched
    np.testing.assert_allclose(documents[:, :hidden], lmm, atol=1e-5)
    histogram = colour_histogram(red)[None]
    np.testing.assert_allclose(documents[0, hidden:], 0)  # a text candidate has no colours
    np.testing.assert_allclose(documents[1, hidden:], channel.document_vectors(histogram, [True])[0], atol=1e-5)
    np.testing.assert_allclose(queries[0, hidden:], channel.query_vectors(lmm[:1], np.zeros((1, 512)), [False])[0],
                               atol=1e-4)
    np.testing.assert_allclose(queries[2, hidden:], channel.query_vectors(lmm[2:], histogram, [True])[0], atol=1e-4)
    hits = model.search(["a red square"], corpus=items, top_k=3)[0]  # the corpus is encoded as documents
    expected = queries[0] @ documents.T
    np.testing.assert_allclose(sorted(h.score for h in hits), sorted(expected), atol=1e-4)

    set_channel(package, "colour", None)
    assert load_channel(package, "colour") is None and not (package / COLOUR_FILE).exists()
    assert role_digest(package) == without
