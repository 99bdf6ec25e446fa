"""The model resolver: local folders, clear errors, and the real embedded SmolLM2 loading offline."""

import pytest
import torch

from ftlab.models import EMBEDDED, ModelNotFound, embedded_gguf, resolve_model

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_a_local_folder_resolves_to_itself(tiny_model):
    assert resolve_model(str(tiny_model)) == str(tiny_model)


@pytest.mark.parametrize("ref", ["./no/such/model", "/no/such/model", "not-a-hub-id"])
def test_a_missing_path_names_itself(ref):
    with pytest.raises(ModelNotFound, match="model path not found"):
        resolve_model(ref)


def test_an_unknown_hub_id_offline_says_what_was_tried(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound, match="not embedded"):
        resolve_model("nobody/no-such-model-xyz")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Convert the embedded GGUF into a fresh cache (not the user's), offline, as a first run would."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("FTLAB_CACHE", str(tmp_path_factory.mktemp("cache")))
    path = resolve_model(SMOLLM2)
    assert resolve_model(SMOLLM2) == path  # the second call finds the cache instead of converting again
    yield path
    mp.undo()


def greedy(model, tokenizer, text, max_new_tokens=48):
    messages = [{"role": "user", "content": text}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    with torch.no_grad():
        ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return ids[0, inputs["input_ids"].shape[1]:]


def test_embedded_model_converts_loads_offline_and_matches_the_gguf(converted):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(converted)
    tokenizer = AutoTokenizer.from_pretrained(converted)
    assert model.config.model_type == "llama" and 130e6 < model.num_parameters() < 140e6
    # The GGUF metadata names the wrong eos; the converted copy must end turns with <|im_end|>.
    assert tokenizer.eos_token == "<|im_end|>" and model.generation_config.eos_token_id == tokenizer.eos_token_id

    text = "What is the capital of France?"
    saved = greedy(model, tokenizer, text)
    assert saved[-1].item() == tokenizer.eos_token_id, "generation did not stop at <|im_end|>"
    assert "Paris" in tokenizer.decode(saved, skip_special_tokens=True)

    gguf = embedded_gguf(SMOLLM2)
    original = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    original.generation_config.eos_token_id = tokenizer.eos_token_id
    assert torch.equal(greedy(original, tokenizer, text), saved)


def test_every_embedded_model_is_installed():
    for ref in EMBEDDED:
        assert embedded_gguf(ref).stat().st_size > 50e6
