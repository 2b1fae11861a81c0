"""experiments/grounding_by_word.py tells "looks at the named part" from "at another part", at the attribute word
and at the noun, and its grid levels are those of one-hot maps."""

from __future__ import annotations

import torch

from jointcap.metrics.localisation import word_grounding
from tests.conftest import load_script


def _script():
    return load_script("grounding_by_word")


def _scene() -> tuple[torch.Tensor, torch.Tensor, list[list[str]], dict[str, int], frozenset[str]]:
    """Part 0 ("crown") fills the top-left quarter, part 1 ("tail") the bottom-right one; part 2 is not visible."""
    masks = torch.zeros(1, 3, 16, 16, dtype=torch.bool)
    masks[0, 0, :8, :8] = True
    masks[0, 1, 8:, 8:] = True
    maps = torch.zeros(1, 4, 4, 4)  # (B, W, h, w) at the words "red crown blue tail"
    maps[0, 0, 3, 3] = 1.0  # "red": on the tail (another part)
    maps[0, 1, 0, 0] = 1.0  # "crown": on the crown
    maps[0, 2, 0, 3] = 1.0  # "blue": off the bird
    maps[0, 3, 3, 3] = 1.0  # "tail": on the tail
    return (
        maps,
        masks,
        [["red", "crown", "blue", "tail"]],
        {"crown": 0, "tail": 1, "wing": 2},
        frozenset({"red", "blue"}),
    )


def test_attribute_noun_and_elsewhere_are_told_apart() -> None:
    gbw = _script()
    maps, masks, words, part_words, attrs = _scene()
    assert word_grounding(maps, words, part_words, attrs, masks) == (0, 2)  # neither attribute on its part
    assert word_grounding(maps, words, part_words, attrs, gbw._others(masks)) == (1, 2)  # "red" on the tail
    assert gbw._either(maps, words, part_words, attrs, masks) == (2, 2)  # each noun is on its own part
    assert gbw.noun_triples(words, part_words, masks, 4) == [(0, 1, 0), (0, 3, 1)]
    others = gbw._others(masks)
    assert not others[0, 2].any()  # an invisible part counts nowhere
    assert torch.equal(others[0, 0], masks[0, 1])  # the crown's "other parts" are the tail


def test_grid_levels_are_those_of_one_hot_maps() -> None:
    gbw = _script()
    _, masks, *_ = _scene()
    chance, ceiling = gbw.cell_levels(masks[0, :2], (4, 4))
    assert torch.allclose(chance, torch.tensor([0.25, 0.25])) and torch.equal(ceiling, torch.ones(2))
    thin = torch.zeros(1, 16, 16, dtype=torch.bool)
    thin[0, 4, 4] = True  # a one-pixel part between cell centres: no one-hot map's peak reaches it
    chance, ceiling = gbw.cell_levels(thin, (4, 4))
    assert float(chance.sum()) == 0.0 and float(ceiling.sum()) == 0.0
