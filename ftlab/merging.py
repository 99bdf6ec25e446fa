"""Model merging, readable: each method on plain state dicts ({name: tensor}), in a few lines.

Merging adapts a model with no training at all: it combines the weights of models finetuned from one
base. mergekit is the tool to use on real models (07_model_merging drives it with YAML files); this
module is the arithmetic behind its methods, written to be read, with mergekit 0.1.5's conventions, so
that tests/test_merging.py can check it against mergekit tensor for tensor.

Summing:
- `linear`: a weighted average of whole models (a "model soup").
- `slerp`: spherical interpolation of two models, tensor by tensor: it follows the arc between two weight
  vectors instead of the chord, so the result keeps their size, where a plain average of two vectors
  pointing apart comes out shorter.
- `task_arithmetic`: a finetune minus its base is a *task vector*; adding weighted task vectors to the
  base adds skills (a negative weight removes one).
Pruning before summing (task vectors interfere: one model's update is another's noise):
- `ties`: TRIM each task vector to its largest `density` share of entries, ELECT a sign per entry (the
  sign of the weighted sum), and take the DISJOINT MEAN of the entries that agree with it.
- `dare`: DROP a random share (1 - density) of each task vector's entries and RESCALE the survivors so
  the update keeps its size; then sum (`dare_linear`) or elect signs as TIES does (`dare_ties`).
Stacking:
- `stack_layers`: a deeper model from slices of the layers of one or more models ("frankenmerging").
"""

from __future__ import annotations

import re

import torch

StateDict = dict[str, torch.Tensor]


def _check_same_keys(models: list[StateDict]) -> None:
    keys = set(models[0])
    for model in models[1:]:
        if set(model) != keys:
            raise ValueError(f"models differ in tensors: {sorted(keys ^ set(model))[:3]}")


def linear(models: list[StateDict], weights: list[float] | None = None, normalize: bool = True) -> StateDict:
    """sum_i w_i * theta_i (divided by sum_i w_i when `normalize`): with equal weights, the average."""
    _check_same_keys(models)
    weights = weights or [1.0] * len(models)
    total = sum(weights) if normalize else 1.0
    return {name: sum(w * m[name].float() for w, m in zip(weights, models, strict=True)) / total
            for name in models[0]}


def slerp_tensor(a: torch.Tensor, b: torch.Tensor, t: float, dot_threshold: float = 0.9995) -> torch.Tensor:
    """Spherical interpolation from `a` (t=0) to `b` (t=1): the angle between the two flattened tensors
    decides the mix; when they are nearly parallel (or opposite) the arc is a line, so it lerps."""
    a32, b32 = a.float(), b.float()
    unit_a, unit_b = a32 / a32.norm().clamp(min=1e-8), b32 / b32.norm().clamp(min=1e-8)
    dot = (unit_a * unit_b).sum().clamp(-1.0, 1.0)
    if dot.abs() > dot_threshold:
        return (1 - t) * a32 + t * b32
    omega = torch.arccos(dot)  # the angle between them
    return (torch.sin((1 - t) * omega) * a32 + torch.sin(t * omega) * b32) / torch.sin(omega)


def slerp(a: StateDict, b: StateDict, t: float) -> StateDict:
    """`slerp_tensor` on every tensor: t=0 gives model a (mergekit's `base_model`), t=1 model b."""
    _check_same_keys([a, b])
    return {name: slerp_tensor(a[name], b[name], t) for name in a}


def task_vectors(base: StateDict, models: list[StateDict]) -> list[StateDict]:
    """What each finetune changed: tau_i = theta_i - theta_base, tensor by tensor."""
    _check_same_keys([base, *models])
    return [{name: m[name].float() - base[name].float() for name in base} for m in models]


def task_arithmetic(base: StateDict, models: list[StateDict], weights: list[float] | None = None,
                    scale: float = 1.0) -> StateDict:
    """theta_base + scale * sum_i w_i * tau_i (mergekit's `lambda` is `scale`)."""
    vectors = task_vectors(base, models)
    weights = weights or [1.0] * len(models)
    return {name: base[name].float() + scale * sum(w * v[name] for w, v in zip(weights, vectors, strict=True))
            for name in base}


def trim(vector: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the `density` share of entries with the largest magnitude (at least one), zero the rest."""
    if density >= 1:
        return vector
    k = max(1, int(density * vector.numel()))
    keep = torch.zeros(vector.numel(), dtype=torch.bool)
    keep[vector.abs().flatten().argsort(descending=True)[:k]] = True
    return torch.where(keep.view_as(vector), vector, torch.zeros_like(vector))


def elect_and_merge(vectors: list[torch.Tensor], weights: list[float], normalize: bool = True) -> torch.Tensor:
    """TIES's second and third steps on one tensor: each entry's sign is the sign of the weighted sum (+ on a
    tie); only the models whose entry has that sign count, averaged by their weights when `normalize`."""
    weighted = torch.stack([w * v for w, v in zip(weights, vectors, strict=True)])
    sign = torch.where(weighted.sum(0) >= 0, 1.0, -1.0)
    agree = torch.sign(weighted) == sign
    merged = (weighted * agree).sum(0)
    if not normalize:
        return merged
    counted = (torch.tensor(weights).view(-1, *[1] * vectors[0].dim()) * agree).sum(0)
    return merged / torch.where(counted == 0, 1.0, counted)


def ties(base: StateDict, models: list[StateDict], weights: list[float] | None = None, density: float = 0.5,
         scale: float = 1.0, normalize: bool = True) -> StateDict:
    """TIES-merging: trim each task vector to `density`, elect signs, disjoint mean (a sum of what agrees when not
    `normalize`), add to the base."""
    vectors = task_vectors(base, models)
    weights = weights or [1.0] * len(models)
    return {name: base[name].float()
            + scale * elect_and_merge([trim(v[name], density) for v in vectors], weights, normalize)
            for name in base}


def drop_and_rescale(vector: torch.Tensor, density: float, keep: torch.Tensor | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """DARE: zero each entry with probability 1 - density (or where `keep` is False), then scale the survivors
    so their absolute values add up to what the whole vector's did. The paper divides by `density` instead:
    the same factor on average; mergekit matches the L1 norm exactly, and so does this."""
    if density >= 1:
        return vector
    if keep is None:
        keep = torch.rand(vector.shape, generator=generator) < density
    kept = torch.where(keep, vector, torch.zeros_like(vector))
    before, after = vector.abs().sum(), kept.abs().sum()
    return kept if before < 1e-7 or after < 1e-7 else kept * (before / after)


def dare(base: StateDict, models: list[StateDict], weights: list[float] | None = None, density: float = 0.5,
         sign_election: bool = False, scale: float = 1.0, seed: int = 0, normalize: bool = False) -> StateDict:
    """DARE: drop and rescale each task vector, then sum them (dare_linear) or keep only the entries that agree
    with the elected sign and sum those (dare_ties). By default neither averages (mergekit's default): the
    rescaled updates add up. `normalize` divides by the weights' sum (dare_ties: of the models that agree)."""
    vectors = task_vectors(base, models)
    weights = weights or [1.0] * len(models)
    generator = torch.Generator().manual_seed(seed)
    total = sum(weights) if normalize and abs(sum(weights)) >= 1e-8 else 1.0
    merged = {}
    for name in base:
        dropped = [drop_and_rescale(v[name], density, generator=generator) for v in vectors]
        update = (elect_and_merge(dropped, weights, normalize) if sign_election
                  else sum(w * d for w, d in zip(weights, dropped, strict=True)) / total)
        merged[name] = base[name].float() + scale * update
    return merged


LAYER = re.compile(r"^(.*\.layers\.)(\d+)(\..*)$")  # model.layers.7.mlp.up_proj.weight


def stack_layers(slices: list[tuple[StateDict, int, int]]) -> StateDict:
    """A deeper model: layers [start, end) of each (model, start, end) in order, renumbered from 0. What comes
    before the layers (the embeddings) is taken from the first slice's model, what comes after them (the final
    norm, an untied head) from the last's, as mergekit's passthrough does. Set the config's `num_hidden_layers`
    to the new count."""
    first, last = slices[0][0], slices[-1][0]
    stacked = {name: (first if "embed" in name else last)[name] for name in first if not LAYER.match(name)}
    new_index = 0
    for model, start, end in slices:
        for i in range(start, end):
            for name, t in model.items():
                m = LAYER.match(name)
                if m and int(m[2]) == i:
                    stacked[f"{m[1]}{new_index}{m[3]}"] = t
            new_index += 1
    return stacked
