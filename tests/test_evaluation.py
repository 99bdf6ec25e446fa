"""ftlab.evaluation: the cheap paths (shared prefix, early stop for answers that cannot be JSON) change no score."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ftlab.data import load_split
from ftlab.evaluation import StopWhenHopeless, common_prefix_length, evaluate, generate, not_json, not_one_line


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model):
    """The tiny model with larger random weights, so that greedy decoding writes varied tokens, not only <|im_end|>."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    return model, AutoTokenizer.from_pretrained(tiny_model)


def test_sharing_the_prompt_prefix_gives_the_same_answers(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prompts = [r["messages"][:-1] for r in load_split("handwritten_eval")[:6]]
    shared = generate(model, tokenizer, prompts, max_new_tokens=12, batch_size=3)
    plain = generate(model, tokenizer, prompts, max_new_tokens=12, batch_size=3, min_shared=10**6)
    one_by_one = [generate(model, tokenizer, [p], max_new_tokens=12)[0] for p in prompts]
    assert shared == plain == one_by_one
    assert any(shared)


def test_common_prefix_length():
    assert common_prefix_length([[1, 2, 3], [1, 2, 4, 5], [1, 2]]) == 2
    assert common_prefix_length([[7, 8], [7, 8]]) == 2


class Words:
    """A stand-in tokenizer: token i decodes to WORDS[i]."""
    WORDS = ("", "{", '"name"', "Sure", "!", " Here", "\n")

    def batch_decode(self, rows, skip_special_tokens=True):
        return ["".join(self.WORDS[t] for t in row) for row in rows.tolist()]


def test_stops_only_answers_that_can_no_longer_be_json():
    stop = StopWhenHopeless(Words(), prompt_length=1, hopeless=not_json, shown=2)
    rows = torch.tensor([[0, 3, 4], [0, 1, 2], [0, 0, 0]])  # prose, JSON so far, nothing yet
    assert stop(rows, None).tolist() == [True, False, False]
    assert stop(rows[:, :2], None).tolist() == [False, False, False]  # fewer than `shown` new tokens


def test_stops_a_sentence_once_it_starts_a_second_line():
    stop = StopWhenHopeless(Words(), prompt_length=1, hopeless=not_one_line, shown=2)
    rows = torch.tensor([[0, 3, 5, 6, 5], [0, 3, 4, 5, 5], [0, 6, 3, 4, 5]])  # two lines; one; a leading newline
    assert stop(rows, None).tolist() == [True, False, False]


def test_evaluate_uses_the_describe_metric_for_describe_examples(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    examples = load_split("describe_eval")[:3]
    scores, predictions = evaluate(model, tokenizer, examples, max_new_tokens=6, batch_size=3)
    assert "one_sentence" in scores and "valid_json" not in scores and len(predictions) == 3
    with pytest.raises(ValueError, match="one task"):
        evaluate(model, tokenizer, examples + load_split("sft_eval")[:1], max_new_tokens=2)


def test_evaluate_scores_in_the_order_given(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    examples = load_split("sft_eval")[:5]
    scores, predictions = evaluate(model, tokenizer, examples, max_new_tokens=6, batch_size=2)
    assert scores["n"] == 5 and len(predictions) == 5
    assert predictions == generate(model, tokenizer, [e["messages"][:-1] for e in examples], max_new_tokens=6,
                                   batch_size=5, hopeless=not_json)


class LegacyCacheLlama:
    """Wraps a model so that its forward returns past_key_values as a tuple of (keys, values) per layer, as Unsloth's
    patched Llama does on CUDA, and takes such a tuple back (as Unsloth's patched generation does)."""

    def __init__(self, model):
        self.model = model
        self.calls_with_tuple_cache = 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, *args, **kwargs):
        out = self.model(*args, **kwargs)
        if out.past_key_values is not None:
            self.calls_with_tuple_cache += 1
            out.past_key_values = tuple((layer.keys, layer.values) for layer in out.past_key_values.layers)
        return out


def test_a_model_that_returns_legacy_tuple_caches_is_scored_without_the_shared_prefix(model_and_tokenizer):
    """The shared-prefix trick calls `cache.batch_repeat_interleave`; a tuple has none: the batch takes the plain path
    (same answers) instead of an AttributeError."""
    model, tokenizer = model_and_tokenizer
    legacy = LegacyCacheLlama(model)
    prompts = [r["messages"][:-1] for r in load_split("handwritten_eval")[:4]]
    plain = generate(model, tokenizer, prompts, max_new_tokens=10, batch_size=4, min_shared=10**6)
    assert generate(legacy, tokenizer, prompts, max_new_tokens=10, batch_size=4) == plain
    assert legacy.calls_with_tuple_cache == 1  # its prefix pass returned a tuple, so it was not reused


def score_train_with_lr_0_score(model, tokenizer, tmp_path, device: str, bf16: bool, fp16: bool):
    """Answers before and after two steps of `Trainer` at learning rate 0 (the weights do not change; accelerate
    wraps model.forward in autocast as in a real run): both must be the same answers."""
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from ftlab.evaluation import evaluate_all

    examples = load_split("sft_eval")[:6]
    eval_sets = {"synthetic": examples[:4]}
    model = model.to(device)
    before_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    before, before_answers = evaluate_all(model, tokenizer, eval_sets, max_new_tokens=12, batch_size=4,
                                          bf16=bf16, fp16=fp16)
    texts = [tokenizer.apply_chat_template(e["messages"], tokenize=False) for e in examples]
    train = Dataset.from_dict(tokenizer(texts, truncation=True, max_length=128))
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, learning_rate=0.0, per_device_train_batch_size=2,
                             use_cpu=device == "cpu", bf16=bf16, fp16=fp16, report_to=[], save_strategy="no")
    trainer = Trainer(model=model, args=args, train_dataset=train,
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    trainer.train()
    assert all(torch.equal(before_weights[k], v) for k, v in model.state_dict().items())  # lr 0: nothing moved
    assert ("forward" in model.__dict__) == (bf16 or fp16)  # accelerate's autocast wrapper, as after a real run
    after, after_answers = evaluate_all(model, tokenizer, eval_sets, max_new_tokens=12, batch_size=4,
                                        bf16=bf16, fp16=fp16)
    assert after_answers == before_answers and after == before
    return before_answers


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_before_and_after_use_the_same_arithmetic_on_the_cpu(model_and_tokenizer, tmp_path, bf16):
    import copy

    model, tokenizer = model_and_tokenizer
    answers = score_train_with_lr_0_score(copy.deepcopy(model), tokenizer, tmp_path, "cpu", bf16=bf16, fp16=False)
    assert any(answers["synthetic"])


@pytest.mark.gpu
def test_before_and_after_use_the_same_arithmetic_on_cuda(model_and_tokenizer, tmp_path):
    """On CUDA the model generates itself under the run's autocast: before (no wrapper) = after (accelerate's)."""
    import copy

    from ftlab.platforms import choose, detect

    choice = choose(detect())
    model, tokenizer = model_and_tokenizer
    score_train_with_lr_0_score(copy.deepcopy(model), tokenizer, tmp_path, "cuda", bf16=choice.bf16, fp16=choice.fp16)
