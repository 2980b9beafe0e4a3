"""RememberingEncoder: each (item, instruction, role) reaches the model once, rows come back in order."""

import numpy as np

from lamra.evaluate.remembering import RememberingEncoder


class CountingModel:
    similarity = "cosine"

    def __init__(self):
        self.seen = []

    def encode(self, items, instruction=None, role="query", image_root=None, **options):
        self.seen.extend((item["txt"], text, role) for item, text in zip(items, instruction))
        return np.array([[len(item["txt"]), len(text or ""), role == "query"] for item, text in zip(items, instruction)],
                        np.float32)


def test_each_item_is_encoded_once_per_instruction_and_role():
    model = CountingModel()
    encoder = RememberingEncoder(model)
    items = [{"txt": "a"}, {"txt": "bb"}]
    first = encoder.encode(items, instruction="find it")
    again = encoder.encode(items[::-1], instruction="find it")
    np.testing.assert_array_equal(again, first[::-1])
    encoder.encode(items[:1], instruction=None, role="document")  # another instruction and role: new vectors
    assert model.seen == [("a", "find it", "query"), ("bb", "find it", "query"), ("a", None, "document")]
    assert encoder.similarity == "cosine"  # the rest is the model's
