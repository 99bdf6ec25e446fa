"""ftlab.merging: known answers of each method on hand-made tensors."""

import math

import pytest
import torch

from ftlab import merging


def sd(*values) -> dict:
    return {"w": torch.tensor(values, dtype=torch.float32)}


def test_linear_is_the_weighted_average():
    assert torch.equal(merging.linear([sd(1.0, 2.0), sd(3.0, 6.0)])["w"], torch.tensor([2.0, 4.0]))
    assert torch.allclose(merging.linear([sd(1.0, 2.0), sd(3.0, 6.0)], [3, 1])["w"], torch.tensor([1.5, 3.0]))
    assert torch.equal(merging.linear([sd(1.0), sd(3.0)], [1, 1], normalize=False)["w"], torch.tensor([4.0]))


def test_models_must_hold_the_same_tensors():
    with pytest.raises(ValueError, match="models differ in tensors"):
        merging.linear([{"a": torch.ones(1)}, {"b": torch.ones(1)}])


def test_slerp_ends_are_the_models_and_the_middle_keeps_the_length():
    a, b = sd(1.0, 0.0), sd(0.0, 1.0)
    assert torch.allclose(merging.slerp(a, b, 0.0)["w"], a["w"])
    assert torch.allclose(merging.slerp(a, b, 1.0)["w"], b["w"])
    middle = merging.slerp(a, b, 0.5)["w"]
    assert torch.allclose(middle, torch.tensor([1.0, 1.0]) / math.sqrt(2))  # on the arc: length 1
    assert merging.linear([a, b])["w"].norm() == pytest.approx(1 / math.sqrt(2))  # the chord: shorter
    # Nearly parallel tensors: the arc is a line, so it interpolates linearly (as mergekit does).
    assert torch.allclose(merging.slerp(sd(1.0, 0.0), sd(2.0, 0.0), 0.25)["w"], torch.tensor([1.25, 0.0]))


def test_task_arithmetic_adds_scaled_task_vectors():
    base, a, b = sd(1.0, 1.0), sd(2.0, 1.0), sd(1.0, 3.0)
    assert [v["w"].tolist() for v in merging.task_vectors(base, [a, b])] == [[1.0, 0.0], [0.0, 2.0]]
    assert merging.task_arithmetic(base, [a, b])["w"].tolist() == [2.0, 3.0]
    assert merging.task_arithmetic(base, [a, b], [1.0, -1.0], scale=0.5)["w"].tolist() == [1.5, 0.0]  # b removed


def test_ties_trims_elects_signs_and_takes_the_disjoint_mean():
    base = sd(0.0, 0.0, 0.0)
    a, b = sd(3.0, -1.0, 0.1), sd(-2.0, -2.0, 0.2)
    # No trimming: signs of the sums [1, -3, 0.3] are (+, -, +); entry 0 keeps only a's 3 (b disagrees).
    assert torch.allclose(merging.ties(base, [a, b], density=1.0)["w"], torch.tensor([3.0, -1.5, 0.15]))
    # density 2/3: each vector keeps its two largest entries, so the small 0.1 and 0.2 are dropped.
    assert merging.trim(a["w"], 2 / 3).tolist() == [3.0, -1.0, 0.0]
    assert torch.allclose(merging.ties(base, [a, b], density=2 / 3)["w"], torch.tensor([3.0, -1.5, 0.0]))
    # Weights count in the election: b weighted 2x wins entry 0 and is its only contributor.
    assert merging.ties(base, [a, b], [1.0, 2.0], density=1.0)["w"][0].item() == pytest.approx(-2.0)


def test_dare_keeps_a_density_share_and_its_expected_value():
    base, model = {"w": torch.zeros(20_000)}, {"w": torch.full((20_000,), 0.5)}
    merged = merging.dare(base, [model], density=0.1, seed=1)["w"]
    assert (merged != 0).float().mean().item() == pytest.approx(0.1, abs=0.01)  # 90% dropped
    assert set(merged.unique().tolist()) == {0.0, 5.0}  # the survivors rescaled by 1 / density
    assert merged.mean().item() == pytest.approx(0.5, rel=0.05)  # ...so the expected update is unchanged
    assert torch.equal(merging.dare(base, [model], density=1.0)["w"], model["w"])
    same_seed = merging.dare(base, [model], density=0.1, seed=1)["w"]
    assert torch.equal(merged, same_seed)


def test_dare_ties_elects_signs_after_dropping():
    base = sd(0.0, 0.0)
    merged = merging.dare(base, [sd(1.0, -1.0), sd(-3.0, -1.0)], density=1.0, sign_election=True)["w"]
    assert merged.tolist() == [-3.0, -1.0]
