"""ftlab.trl_cpu: the CPU loss runs the output layer on labelled positions only; it must equal the model's own loss."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from ftlab.trl_cpu import loss_on_labelled_tokens, shared_prefix_length


def batch(vocab: int, prompt: int = 40, answer: int = 5, rows: int = 3, pad: int = 2, shared: int = 0):
    """Right-padded rows whose first `prompt` tokens carry no loss (label -100), like completion-only SFT;
    the first `shared` tokens are the same in every row (a common system prompt)."""
    torch.manual_seed(0)
    ids = torch.randint(3, vocab, (rows, prompt + answer + pad))
    ids[:, :shared] = ids[0, :shared]
    labels, mask = ids.clone(), torch.ones_like(ids)
    labels[:, :prompt] = -100
    for r in range(rows):  # row r has r extra pad tokens at the end
        if r:
            ids[r, -r:], labels[r, -r:], mask[r, -r:] = 0, -100, 0
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("num_items, shared", [(None, 0), (40, 0), (None, 36), (40, 36)])
def test_equals_the_models_own_loss_and_gradients(tiny_model, num_items, shared):
    """With and without a shared prefix (computed once, then repeated per row): same loss, same gradients."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    inputs = batch(model.config.vocab_size, shared=shared)
    assert shared_prefix_length(inputs["input_ids"], inputs["attention_mask"]) >= shared
    reference = model(**inputs).loss
    if num_items is not None:  # Trainer divides by every labelled token of the accumulated batch
        reference = reference * (inputs["labels"][:, 1:] != -100).sum() / num_items
    reference.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    loss, accuracy = loss_on_labelled_tokens(model, inputs, num_items)
    loss.backward()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    assert 0 <= accuracy.item() <= 1
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_works_through_a_peft_wrapper(tiny_model):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    inputs = batch(model.config.vocab_size, shared=36)
    loss, _ = loss_on_labelled_tokens(model, inputs)
    assert loss.item() == pytest.approx(model(**inputs).loss.item(), rel=1e-5)


def test_shared_prefix_length():
    ids = torch.tensor([[5, 6, 7, 8], [5, 6, 9, 8], [5, 6, 7, 0]])
    assert shared_prefix_length(ids) == 2
    assert shared_prefix_length(ids[:1]) == 4
    assert shared_prefix_length(ids[[0, 0]], torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])) == 3  # padding ends it
