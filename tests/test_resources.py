"""What a run used (ftlab/resources.py): measured from `measure_training(trainer)` on, around `trainer.train()`."""

import torch
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

from ftlab import resources


def tiny_trainer(model_dir, out, max_steps: int) -> Trainer:
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    rows = [{"input_ids": torch.arange(i, i + 16), "labels": torch.arange(i, i + 16)} for i in range(8)]
    args = TrainingArguments(output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=4, save_steps=2,
                             use_cpu=True, report_to=[], logging_steps=1)
    return Trainer(model=model, args=args, train_dataset=rows)


def test_a_run_records_its_device_its_parameters_devices_and_whether_it_resumed(tiny_model, tmp_path):
    trainer = tiny_trainer(tiny_model, tmp_path, max_steps=2)
    resources.measure_training(trainer)
    result = trainer.train()
    assert result.metrics["train_runtime"] > 0
    assert resources.TRAINED_ON == {"device": "cpu", "first_step": 0, "parameters": ["cpu"]}
    assert not resources.resumed()
    assert resources.peak_memory()["device"] == "cpu" and resources.peak_memory()["peak_gib"] > 0

    trainer = tiny_trainer(tiny_model, tmp_path, max_steps=4)  # the same folder, two steps further
    resources.measure_training(trainer)
    trainer.train(resume_from_checkpoint=True)
    assert resources.TRAINED_ON["first_step"] == 2 and resources.resumed()


def test_parameters_are_counted_trainable_and_total(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    total = sum(p.numel() for p in model.parameters())
    assert resources.count_parameters(model) == (total, total)
    model.lm_head.requires_grad_(False)
    model.model.embed_tokens.requires_grad_(False)  # (tied to lm_head or not, both are frozen now)
    frozen = sum(p.numel() for p in {id(p): p for p in (*model.lm_head.parameters(),
                                                        *model.model.embed_tokens.parameters())}.values())
    assert resources.count_parameters(model) == (total - frozen, total)
