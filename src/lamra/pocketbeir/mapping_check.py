"""Emoji -> WordNet mappings checked by hand, to measure the mapping's precision.

Rows are (emoji label, synset id, correct?): ``random.Random(1).sample(mappings sorted by emoji
code, 50)`` of the full mapping, drawn after the last rule change (an earlier sample, seed 0, was
used while developing the rules and is not counted), then judged one by one: is this the sense the
emoji depicts?
``docs/pocketbeir/mapping_check.tsv`` is the same list, with lemmas and definitions, for reading.
"""

from __future__ import annotations

CHECKED: tuple[tuple[str, str, bool], ...] = (
    ('flag: Northern Mariana Islands', 'n08837864', True),
    ('police car', 'n03141065', True),
    ('ferry', 'n03329663', True),
    ('bell pepper', 'n07720875', True),
    ('yo-yo', 'n04613555', True),
    ('flag: Finland', 'n08779504', True),
    ('bread', 'n07679356', True),
    ('flag: Liberia', 'n08959254', True),
    ('telephone receiver', 'n04402580', True),
    ('stethoscope', 'n04317175', True),
    ('woman pilot', 'n10433164', True),
    ('syringe', 'n04376876', True),
    ('duck', 'n01846331', True),
    ('poodle', 'n02113335', True),
    ('fly', 'n02190166', True),
    ('flag: Samoa', 'n08991491', True),
    ('flag: India', 'n08900535', True),
    ('clipboard', 'n03044418', True),
    ('flag: Brazil', 'n08853741', True),
    ('anchor', 'n02709367', True),
    ('monkey face', 'n02484322', True),
    ('man firefighter', 'n10091651', True),
    ('clown face', 'n09931165', False),
    ('x-ray', 'n04100620', True),
    ('boomerang', 'n02871963', True),
    ('flag: Andorra', 'n09023118', True),
    ('cupcake', 'n07631023', True),
    ('woman scientist', 'n10560637', True),
    ('lollipop', 'n07615774', False),
    ('scientist', 'n10560637', True),
    ('cactus', 'n11842204', True),
    ('shopping cart', 'n04204347', True),
    ('flag: Japan', 'n08921850', True),
    ('cityscape', 'n03036149', False),
    ('flag: Bhutan', 'n08852209', True),
    ('flag: Bulgaria', 'n08714132', True),
    ('flag: Bermuda', 'n08710678', True),
    ('turkey', 'n01794158', True),
    ('fountain pen', 'n03388183', True),
    ('flag: Angola', 'n08707917', True),
    ('two-hump camel', 'n02437482', True),
    ('oyster', 'n01960459', True),
    ('volcano', 'n09470550', False),
    ('man farmer', 'n10078806', True),
    ('child', 'n09917593', True),
    ('dove', 'n01812337', True),
    ('wind face', 'n11525955', True),
    ('woman cook', 'n09963320', True),
    ('Statue of Liberty', 'n04307106', True),
    ('hibiscus', 'n12177844', True),
)


def precision(mappings, wordnet) -> tuple[int, int]:
    """(correct, checked) over the checked rows whose mapping the current rules still produce."""
    current = {m.label: m.synset for m in mappings.values()}
    rows = [(label, synset, ok) for label, synset, ok in CHECKED if current.get(label) == synset]
    return sum(ok for _, _, ok in rows), len(rows)
