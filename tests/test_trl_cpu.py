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


# ---- One fallback for every TRL trainer: TRL's fused log-probabilities, computed in PyTorch off the GPU ------
ALL_OUTPUTS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


@pytest.mark.parametrize("softcap, scale, temperature", [(None, 1.0, 1.0), (None, 0.5, 0.7), (3.0, 2.0, 1.3)])
def test_pytorch_log_probs_equal_the_definitions(softcap, scale, temperature):
    """Each of the five fields TRL's Triton kernel returns, against its textbook formula on the full logits."""
    from ftlab.trl_cpu import log_probs_in_pytorch

    torch.manual_seed(0)
    hidden, weight, bias = torch.randn(7, 16), torch.randn(50, 16), torch.randn(50)
    targets = torch.randint(0, 50, (7,))
    got = log_probs_in_pytorch(hidden, weight, bias, targets, temperature, 32768, softcap, scale, ALL_OUTPUTS)
    logits = (hidden @ weight.T + bias) * scale
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    logits = logits / temperature
    log_p = logits.log_softmax(-1)
    expected = (log_p.gather(-1, targets[:, None]).squeeze(-1), -(log_p.exp() * log_p).sum(-1),
                (log_p.exp() ** 2).sum(-1).log(), logits.mean(-1))
    for name, value, want in zip(ALL_OUTPUTS, got, expected, strict=False):
        torch.testing.assert_close(value, want, rtol=1e-5, atol=1e-5, msg=name)
    assert torch.equal(got[4], logits.argmax(-1) == targets)
    assert log_probs_in_pytorch(hidden, weight, bias, targets)[1:] == (None, None, None, None)  # only what is asked


def test_trl_fused_head_runs_on_a_cpu_and_equals_the_models_own_loss(tiny_model):
    """What TRL's SFT, DPO, KTO, GRPO and RLOO trainers all call: `add_fused_lm_head`, then fused_lm_head=True."""
    from trl.trainer.utils import add_fused_lm_head

    from ftlab.trl_cpu import LogProbsOnAnyDevice, install

    install()
    install()  # idempotent: the dispatcher is not wrapped twice
    from trl.trainer import utils

    assert isinstance(utils._ChunkedLogProbFunction, LogProbsOnAnyDevice)
    assert not isinstance(utils._ChunkedLogProbFunction.triton_kernel, LogProbsOnAnyDevice)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    inputs = batch(model.config.vocab_size)
    reference = model(**inputs).loss  # without fused_lm_head: the model's own forward and loss
    reference.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    fused = model(**inputs, fused_lm_head=True)
    fused.loss.backward()
    assert fused.loss.item() == pytest.approx(reference.item(), rel=1e-5)
    assert fused.log_probs.shape == inputs["labels"][:, 1:].shape and (fused.entropy >= 0).all()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)


def sft_trainer(tiny_model, tmp_path, loss_type):
    from datasets import Dataset
    from trl import SFTConfig

    from ftlab.data import load_split, to_prompt_completion
    from ftlab.trl_cpu import SFTTrainer

    rows = [to_prompt_completion(r) for r in load_split("sft_eval")[:4]]
    args = SFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, loss_type=loss_type, report_to=[],
                     per_device_train_batch_size=4, max_length=256, gradient_checkpointing=False)
    return SFTTrainer(model=str(tiny_model), args=args, train_dataset=Dataset.from_list(rows))


def test_sft_on_a_cpu_honours_every_loss_type(tiny_model, tmp_path):
    """`dft` weights each answer token's loss by its (detached) probability: on a CPU it must not train plain NLL."""
    losses = {}
    for loss_type in ("nll", "dft"):
        trainer = sft_trainer(tiny_model, tmp_path / loss_type, loss_type)
        inputs = next(iter(trainer.get_train_dataloader()))
        assert trainer.fast_path_fits(trainer.model, inputs, False) == (loss_type == "nll")
        losses[loss_type] = trainer.compute_loss(trainer.model, inputs).item()
        with torch.no_grad():
            log_p = trainer.model(input_ids=inputs["input_ids"]).logits[:, :-1].log_softmax(-1).float()
        labels = inputs["labels"][:, 1:]
        keep = labels != -100
        token_log_p = log_p.gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)[keep]
        weight = token_log_p.exp() if loss_type == "dft" else torch.ones_like(token_log_p)
        assert losses[loss_type] == pytest.approx((-(token_log_p * weight)).mean().item(), rel=1e-4)
    assert losses["dft"] < losses["nll"] / 10  # an untrained model gives each right token p ~ 1/vocab
