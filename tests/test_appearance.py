"""The appearance channel: its PCA, the scores it gives, how packages carry it, how indexes keep it."""

from __future__ import annotations

import numpy as np
import pytest

from lamra import LamRA
from lamra.appearance import APPEARANCE_FILE, AppearanceChannel
from lamra.index import VectorIndex, build_index, load_or_build_index
from lamra.light_checkpoint import load_channel, role_digest, set_channel
from package_helpers import light_package


def random_channel(features: int = 40, dims: int = 8, weight: float = 0.5, seed: int = 0) -> AppearanceChannel:
    rng = np.random.default_rng(seed)
    return AppearanceChannel.fit(rng.normal(size=(100, features)) @ rng.normal(size=(features, features)), dims, weight)


def test_fit_is_a_deterministic_orthonormal_pca():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(200, 30)) * np.linspace(3, 0.1, 30)  # variance falls along the axes
    first, again = AppearanceChannel.fit(features, 5), AppearanceChannel.fit(features.copy(), 5)
    np.testing.assert_array_equal(first.components, again.components)
    np.testing.assert_allclose(first.components @ first.components.T, np.eye(5), atol=2e-3)  # float16-rounded
    assert np.argmax(np.abs(first.components[0])) == 0  # the widest axis comes first
    assert AppearanceChannel.fit(features, 100).dims == 30  # no more components than features
    np.testing.assert_array_equal(first.scales, 1)  # plain PCA unless asked to whiten
    whitened = AppearanceChannel.fit(features, 5, whiten=1.0)
    projected = ((features - whitened.mean) @ whitened.components.T) * whitened.scales
    np.testing.assert_allclose(projected.std(axis=0, ddof=1), 1, rtol=2e-3)  # every direction counts alike
    with pytest.raises(ValueError, match="at least 2"):
        AppearanceChannel.fit(features[:1], 5)


def test_a_direction_that_varies_within_groups_is_found_and_ignored():
    rng = np.random.default_rng(3)
    nuisance = np.zeros(20)
    nuisance[7] = 1.0  # what a skin tone would change: each drawing comes in five shades along it
    drawings = rng.normal(size=(30, 20)) * 2
    drawings[:, 7] = 0
    features = np.concatenate([drawings + 3 * shade * nuisance for shade in (-2, -1, 0, 1, 2)])  # the widest axis
    groups = [f"drawing {row}" for row in range(30)] * 5
    found = AppearanceChannel.within_group_directions(features, groups, 1)
    assert found.shape == (1, 20) and abs(found[0] @ nuisance) > 0.999
    assert AppearanceChannel.within_group_directions(features, list(range(150)), 1).shape == (0, 20)  # no group of two
    with pytest.raises(ValueError, match="3 group labels for 150"):
        AppearanceChannel.within_group_directions(features, groups[:3], 1)

    blind = AppearanceChannel.fit(features, 8, ignore=found)
    assert np.abs(blind.components @ nuisance).max() < 2e-3  # float16-rounded components
    shades = blind.vectors(features[[0, 30, 120]], np.ones(3, bool))  # one drawing in three shades
    np.testing.assert_allclose(shades @ shades.T, 1, atol=1e-3)  # look alike once the shade is ignored
    seeing = AppearanceChannel.fit(features, 8).vectors(features[[0, 120]], np.ones(2, bool))
    assert seeing[0] @ seeing[1] < 0.99  # without ``ignore`` the shade counts
    with pytest.raises(ValueError, match="directions to ignore"):
        AppearanceChannel.fit(features, 8, ignore=np.ones((1, 5)))


def test_scores_are_lmm_cosine_plus_weighted_appearance_cosine_when_both_hold_an_image():
    rng = np.random.default_rng(2)
    channel = random_channel(weight=0.7)
    lmm = rng.normal(size=(4, 16))
    lmm /= np.linalg.norm(lmm, axis=1, keepdims=True)
    trunk = rng.normal(size=(4, 40))
    has_image = np.array([True, True, False, False])
    vectors = np.concatenate([lmm, channel.vectors(trunk, has_image)], axis=1)
    projected = (trunk - channel.mean) @ channel.components.T
    appearance_cosine = (projected @ projected.T) / np.outer(*[np.linalg.norm(projected, axis=1)] * 2)
    expected = lmm @ lmm.T + 0.7 * appearance_cosine * np.outer(has_image, has_image)
    np.testing.assert_allclose(vectors @ vectors.T, expected, atol=1e-5)
    np.testing.assert_allclose(vectors[2:, 16:], 0)  # text-only items carry no appearance


def test_channel_round_trips_and_a_corrupt_file_is_named(tmp_path):
    channel = random_channel()
    path = channel.save(tmp_path / APPEARANCE_FILE)
    loaded = AppearanceChannel.load(path)
    np.testing.assert_array_equal(loaded.components, channel.components)
    assert loaded.weight == channel.weight
    path.write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match=APPEARANCE_FILE):
        AppearanceChannel.load(path)
    with pytest.raises(ValueError, match="weight"):
        channel.with_weight(-1.0)


def test_a_package_carries_the_channel_and_its_digest_says_so(tmp_path):
    package = light_package(tmp_path)
    without = role_digest(package)
    channel = random_channel(features=1280, dims=4)
    set_channel(package, "appearance", channel)
    assert load_channel(package, "appearance").dims == 4
    assert role_digest(package) != without == role_digest(package, channels=False)
    assert role_digest(package, "rank") == role_digest(package, "rank", channels=False)  # the reranker's own
    set_channel(package, "appearance", None)
    assert load_channel(package, "appearance") is None and not (package / APPEARANCE_FILE).exists()
    assert role_digest(package) == without


def test_a_model_with_the_channel_appends_it_to_image_items_only(tmp_path, images):
    package = light_package(tmp_path)
    set_channel(package, "appearance", random_channel(features=1280, dims=6, weight=0.5))
    model = LamRA.from_pretrained(package, precision="fp32")
    plain = LamRA.from_pretrained(package, precision="fp32", channels=False)
    assert (model.similarity, plain.similarity) == ("dot", "cosine")
    photo, sticker = images
    items = ["a red square", photo, ("a red square", sticker)]
    vectors, lmm = model.encode(items), plain.encode(items)
    assert vectors.shape == (3, lmm.shape[1] + 6) and model.encode([]).shape == (0, lmm.shape[1] + 6)
    np.testing.assert_allclose(vectors[:, : lmm.shape[1]], lmm, atol=1e-5)  # the LMM part is untouched
    np.testing.assert_allclose(vectors[0, lmm.shape[1] :], 0)
    np.testing.assert_allclose(np.linalg.norm(vectors[1:, lmm.shape[1] :], axis=1), np.sqrt(0.5), atol=1e-5)
    hits = model.search([photo], corpus=items, top_k=3)[0]
    assert hits[0].item is photo and hits[0].score == pytest.approx(1.5, abs=1e-4)  # cosine 1 + 0.5 * 1


def test_dot_indexes_keep_rows_as_given_and_are_rebuilt_for_another_similarity(tmp_path):
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(6, 5)).astype(np.float32)
    index = VectorIndex.from_vectors(vectors, [f"d{i}" for i in range(6)], similarity="dot")
    np.testing.assert_allclose(index.vectors, vectors)
    scores, ids = index.search(vectors[:1], 6)
    np.testing.assert_allclose(scores[0], np.sort(vectors @ vectors[0])[::-1], rtol=1e-5)
    with pytest.raises(ValueError, match="similarity"):
        VectorIndex.from_vectors(vectors, [f"d{i}" for i in range(6)], similarity="euclid")

    ids = [f"d{i}" for i in range(6)]
    calls = []

    def encode(batch):
        calls.append(len(batch))
        return vectors[list(batch)]

    built = build_index(encode, list(range(6)), ids, tmp_path / "index", model_name="m", similarity="dot",
                        show_progress=False)
    assert VectorIndex.load(tmp_path / "index").similarity == "dot"
    np.testing.assert_allclose(built.vectors, vectors)
    load_or_build_index(encode, list(range(6)), ids, tmp_path / "index", model_name="m", similarity="dot",
                        show_progress=False)
    assert len(calls) == 1  # reused
    rebuilt = load_or_build_index(encode, list(range(6)), ids, tmp_path / "index", model_name="m",
                                  show_progress=False)
    assert len(calls) == 2 and rebuilt.similarity == "cosine"
    np.testing.assert_allclose(np.linalg.norm(rebuilt.vectors, axis=1), 1, atol=1e-5)
