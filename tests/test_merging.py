"""ftlab.merging: known answers of each method on hand-made tensors, and the same tensors as mergekit on tiny models."""

import math
from pathlib import Path

import pytest
import torch
import yaml
from conftest import build_tiny_model
from safetensors.torch import load_file

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


def test_dare_keeps_a_density_share_and_the_update_size():
    base, model = {"w": torch.zeros(20_000)}, {"w": torch.full((20_000,), 0.5)}
    merged = merging.dare(base, [model], density=0.1, seed=1)["w"]
    assert (merged != 0).float().mean().item() == pytest.approx(0.1, abs=0.01)  # 90% dropped
    assert merged.sum().item() == pytest.approx(model["w"].sum().item(), rel=1e-5)  # rescaled: same L1 norm...
    assert merged.max().item() == pytest.approx(5.0, rel=0.1)  # ...which is ~1 / density per survivor
    assert torch.equal(merging.dare(base, [model], density=1.0)["w"], model["w"])
    assert torch.equal(merged, merging.dare(base, [model], density=0.1, seed=1)["w"])  # seeded


def test_dare_ties_elects_signs_after_dropping_and_sums_what_agrees():
    base = sd(0.0, 0.0)
    merged = merging.dare(base, [sd(1.0, -1.0), sd(-3.0, -1.0)], density=1.0, sign_election=True)["w"]
    assert merged.tolist() == [-3.0, -2.0]  # entry 0: sum -2 elects "-", only -3 agrees; entry 1: both agree


def test_a_tied_election_goes_to_plus():
    merged = merging.elect_and_merge([torch.tensor([1.0]), torch.tensor([-1.0])], [1.0, 1.0])
    assert merged.tolist() == [1.0]


def test_stack_layers_renumbers_embeddings_from_the_first_final_norm_from_the_last():
    def model(tag):
        return {"model.embed_tokens.weight": torch.tensor([tag]), "model.norm.weight": torch.tensor([tag]),
                **{f"model.layers.{i}.mlp.weight": torch.tensor([tag * 10 + i]) for i in range(3)}}

    stacked = merging.stack_layers([(model(1.0), 0, 2), (model(2.0), 1, 3)])
    assert [stacked[f"model.layers.{i}.mlp.weight"].item() for i in range(4)] == [10, 11, 21, 22]
    assert stacked["model.embed_tokens.weight"].item() == 1.0 and stacked["model.norm.weight"].item() == 2.0
    assert len(stacked) == 6


# ---- Equivalence with mergekit, on tiny models, through the recipes in 07_model_merging/mergekit/ ------------
ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "07_model_merging" / "mergekit"
RUN_A, RUN_B, BASE = "runs/07_a_extract", "runs/07_b_describe", "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def tiny_three(tmp_path_factory):
    """A 30-layer tiny base (SmolLM2's depth, so passthrough's layer ranges fit) and two "finetunes" of it:
    the base plus small random updates of their own, as finetuning from one base leaves them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("merge")
    base = build_tiny_model(folder / "base", layers=30)
    finetunes = []
    for seed in (1, 2):
        model = AutoModelForCausalLM.from_pretrained(base)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=generator))
        model.save_pretrained(folder / f"ft{seed}")
        AutoTokenizer.from_pretrained(base).save_pretrained(folder / f"ft{seed}")
        finetunes.append(folder / f"ft{seed}")
    return {BASE: str(base), RUN_A: str(finetunes[0]), RUN_B: str(finetunes[1])}


def recipe_for(name: str, paths: dict) -> dict:
    """A recipe of 07_model_merging with its three model names replaced by the tiny models' folders."""
    recipe = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())
    if "base_model" in recipe:
        recipe["base_model"] = paths[recipe["base_model"]]
    for entry in recipe.get("models", []) + [s for sl in recipe.get("slices", []) for s in sl["sources"]]:
        entry["model"] = paths[entry["model"]]
    return recipe


def mergekit_merge(recipe: dict, out: Path) -> dict:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    run_merge(MergeConfiguration.model_validate(recipe), str(out), MergeOptions(quiet=True, write_model_card=False))
    return load_file(out / "model.safetensors")


def weights(paths: dict) -> tuple[dict, dict, dict]:
    return tuple(load_file(Path(paths[k]) / "model.safetensors") for k in (BASE, RUN_A, RUN_B))


def assert_same(mine: dict, theirs: dict, atol: float = 1e-6):
    assert set(mine) == set(theirs)
    worst = max((mine[k].float() - theirs[k].float()).abs().max().item() for k in theirs)
    assert worst <= atol, f"largest difference {worst}"


@pytest.mark.parametrize("name, readable", [
    ("linear", lambda base, a, b: merging.linear([a, b], [0.5, 0.5])),
    ("slerp", lambda base, a, b: merging.slerp(a, b, 0.5)),
    ("task_arithmetic", lambda base, a, b: merging.task_arithmetic(base, [a, b], [1.0, 1.0], scale=1.0)),
    ("ties", lambda base, a, b: merging.ties(base, [a, b], [1.0, 1.0], density=0.5)),
])
def test_readable_merge_equals_mergekit_tensor_for_tensor(name, readable, tiny_three, tmp_path):
    base, a, b = weights(tiny_three)
    assert_same(readable(base, a, b), mergekit_merge(recipe_for(name, tiny_three), tmp_path / name))


def test_slerp_equals_mergekit_at_other_t(tiny_three, tmp_path):
    _, a, b = weights(tiny_three)
    recipe = recipe_for("slerp", tiny_three)
    recipe["parameters"]["t"] = 0.2
    assert_same(merging.slerp(a, b, 0.2), mergekit_merge(recipe, tmp_path / "slerp"))


@pytest.mark.parametrize("name", ["dare_linear", "dare_ties"])
def test_dare_rescales_what_mergekit_keeps_exactly_as_mergekit_does(name, tiny_three, tmp_path):
    """DARE's drops are random, so the two cannot draw the same ones. With one model the merged update shows which
    entries mergekit kept; given that mask, the readable drop-and-rescale must give the same tensor."""
    base, a, _ = weights(tiny_three)
    recipe = recipe_for(name, tiny_three)
    recipe["models"] = recipe["models"][:1]
    theirs = mergekit_merge(recipe, tmp_path / name)
    (tau,) = merging.task_vectors(base, [a])
    kept_shares = []
    for key in base:
        keep = theirs[key] != base[key]
        kept_shares.append(keep.float().mean().item())
        mine = base[key] + merging.drop_and_rescale(tau[key], 0.5, keep=keep)
        assert torch.allclose(mine, theirs[key], atol=1e-6), key
    assert sum(kept_shares) / len(kept_shares) == pytest.approx(0.5, abs=0.05)  # density 0.5: half were dropped



def set_weights(recipe: dict, model_weights: tuple, normalize: bool) -> dict:
    for entry, weight in zip(recipe["models"], model_weights, strict=True):
        entry["parameters"]["weight"] = weight
    recipe["parameters"]["normalize"] = normalize
    return recipe


@pytest.mark.parametrize("model_weights, normalize", [((0.7, 0.3), True), ((0.7, 0.3), False), ((1.0, 2.0), True)])
def test_ties_with_unequal_weights_equals_mergekit(model_weights, normalize, tiny_three, tmp_path):
    """The weights count twice in TIES: in the election (the sign of the weighted sum) and, with `normalize`, in the
    divisor (the sum of the weights of the models that agree, entry by entry); weights 1 and 1 test neither."""
    base, a, b = weights(tiny_three)
    recipe = set_weights(recipe_for("ties", tiny_three), model_weights, normalize)
    mine = merging.ties(base, [a, b], list(model_weights), density=0.5, normalize=normalize)
    assert_same(mine, mergekit_merge(recipe, tmp_path / "ties"))


@pytest.mark.parametrize("name", ["dare_linear", "dare_ties"])
@pytest.mark.parametrize("normalize", [False, True])
def test_dare_of_two_weighted_models_equals_mergekit_given_its_drops(name, normalize, tiny_three, tmp_path,
                                                                    monkeypatch):
    """DARE's drops are random, so mergekit's are recorded (every task vector it sparsifies, and what it kept) and
    the readable `dare` is given the same ones; everything after the drop (rescale, weights 0.7 / 0.3, the sign
    election of dare_ties, normalize on or off) must then give mergekit's tensors."""
    import mergekit.merge_methods.generalized_task_arithmetic as gta

    drops, sparsify = {}, gta.sparsify

    def recording(delta, **kwargs):
        dropped = sparsify(delta, **kwargs)
        drops[delta.numpy().tobytes()] = dropped != 0
        return dropped

    monkeypatch.setattr(gta, "sparsify", recording)
    recipe = set_weights(recipe_for(name, tiny_three), (0.7, 0.3), normalize)
    theirs = mergekit_merge(recipe, tmp_path / name)
    base, a, b = weights(tiny_three)
    assert len(drops) == 2 * len(base)  # every tensor of both models, each recorded once
    drop_and_rescale = merging.drop_and_rescale
    monkeypatch.setattr(merging, "drop_and_rescale", lambda vector, density, **_: drop_and_rescale(
        vector, density, keep=drops[vector.numpy().tobytes()]))
    mine = merging.dare(base, [a, b], [0.7, 0.3], density=0.5, sign_election=name == "dare_ties", normalize=normalize)
    assert_same(mine, theirs)

def test_passthrough_stacks_40_layers_that_reload_and_generate(tiny_three, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, a, b = weights(tiny_three)
    theirs = mergekit_merge(recipe_for("passthrough", tiny_three), tmp_path / "stack")
    assert_same(merging.stack_layers([(a, 0, 20), (b, 10, 30)]), theirs, atol=0)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "stack")
    assert model.config.num_hidden_layers == 40 and len(model.model.layers) == 40
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "stack")
    new = model.generate(**tokenizer("Ana", return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert new.shape[1] > 1
