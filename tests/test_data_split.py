"""wkviz.data.cover_elements: test structures with elements unseen in training move to training."""

import numpy as np
import pytest
from ase import Atoms

from wkviz.data import cover_elements
from wkviz.errors import InputError


def _mol(symbols):
    return Atoms(symbols, positions=np.arange(3 * len(Atoms(symbols)), dtype=float).reshape(-1, 3))


#                0       1       2       3        4      5         6       7
FRAMES = [_mol("CH4"), _mol("H2O"), _mol("NH3"), _mol("CH3F"), _mol("HF"), _mol("CH3OH"), _mol("H2S"),
          _mol("C2H6")]


def test_every_test_structure_with_an_unseen_element_moves_in_one_pass():
    train, test, moved = cover_elements(FRAMES, [5, 0, 1], [2, 3, 4, 7])
    # N and F are absent from CH3OH, CH4, H2O: NH3 and both fluorine molecules move (one pass against the given
    # training set, although moving CH3F alone would cover HF); C2H6 stays
    assert moved.tolist() == [2, 3, 4]
    assert train.tolist() == [5, 0, 1, 2, 3, 4], "the given training order first, then the moved ones"
    assert test.tolist() == [7]
    seen = set(np.concatenate([FRAMES[i].numbers for i in train]).tolist())
    assert all(set(FRAMES[i].numbers.tolist()) <= seen for i in test)


def test_deterministic_and_independent_of_the_training_order():
    a = cover_elements(FRAMES, [5, 0, 1], [2, 3, 4, 7])
    b = cover_elements(FRAMES, [1, 5, 0], [2, 3, 4, 7])
    assert a[2].tolist() == b[2].tolist() and a[1].tolist() == b[1].tolist()
    assert b[0].tolist() == [1, 5, 0, 2, 3, 4]
    c = cover_elements(FRAMES, np.array([5, 0, 1]), np.array([2, 3, 4, 7]))
    assert all(np.array_equal(x, y) for x, y in zip(a, c))


def test_nothing_moves_when_training_covers_every_element():
    train_in, test_in = np.array([0, 1, 2, 3]), np.array([4, 5, 7])
    train, test, moved = cover_elements(FRAMES, train_in, test_in)
    assert moved.size == 0 and moved.dtype.kind == "i"
    assert np.array_equal(train, train_in) and np.array_equal(test, test_in)
    train[0] = 99  # copies: the caller's (possibly cached) arrays are never aliased
    assert train_in[0] == 0


def test_an_all_unseen_test_set_stays_rather_than_becoming_empty():
    train, test, moved = cover_elements(FRAMES, [5, 0, 1], [2, 3, 6])
    assert moved.size == 0 and test.tolist() == [2, 3, 6] and train.tolist() == [5, 0, 1]


def test_indices_out_of_range_are_refused():
    with pytest.raises(InputError, match="test indices must lie in 0..7"):
        cover_elements(FRAMES, [0, 1], [8])
