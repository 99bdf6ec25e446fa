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
