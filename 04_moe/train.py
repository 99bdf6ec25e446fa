"""Mixture of Experts: upcycle the dense SmolLM2 into an MoE, finetune it on the task, watch the router.

An MoE block replaces the one MLP of a transformer block with several ("experts") and a router that
sends each token to its top-k. This script builds one without any download by *sparse upcycling*
(ftlab/moe.py): every expert starts as a copy of SmolLM2's own MLP and the router is new, so with
`--expert_noise 0` the untrained MoE computes exactly what the dense model does (the script prints the logit
difference). Identical experts give the router no gradient from the task loss, though, so config.yaml adds a
little noise to each copy (`expert_noise: 0.01`): the experts differ from the start and the router can learn
which to prefer. Training then lets the experts specialise. The load-balancing loss (`router_aux_loss_coef`) keeps the
router from sending everything to a few experts (collapse); the script measures, per layer, the share
of tokens each expert receives before and after training, as a table and a heat map.

Run from the repository root inside the project's environment (`make setup`; `source .venv/bin/activate`):

    python 04_moe/train.py --config 04_moe/config.yaml
    python 04_moe/train.py --config 04_moe/config.yaml --router_aux_loss_coef 0 --output_dir runs/04_no_aux
    python 04_moe/train.py --config 04_moe/config.yaml --use_peft true --learning_rate 2e-3 \
        --lora_target_parameters mlp.experts.gate_up_proj mlp.experts.down_proj --output_dir runs/04_lora
    python 04_moe/train.py --config 04_moe/config.yaml --upcycle false \
        --model_name_or_path allenai/OLMoE-1B-7B-0924-Instruct --output_dir runs/04_olmoe   # a real MoE (GPU)
    python 04_moe/train.py --config 04_moe/config.yaml --resume true

Every key of config.yaml is also a flag; flags win. Writes the model, metrics.json (with total and active
parameters and the expert loads), expert_load.png, predictions.jsonl and loss_curve.png to --output_dir.
"""

import sys
from dataclasses import dataclass, field

try:  # outside .venv: one line, not a traceback
    from ftlab.startup import TaskArguments, fail, parse_config, prepare_output_dir
except ModuleNotFoundError as e:
    raise SystemExit(f"error: {sys.executable} lacks {e.name!r}: run `make setup`, then `source .venv/bin/activate`")


@dataclass
class ScriptArguments(TaskArguments):
    upcycle: bool = field(default=True, metadata={
        "help": "true: build the MoE from the dense model_name_or_path; false: model_name_or_path is an MoE already"})
    num_experts: int = field(default=4, metadata={"help": "upcycling: experts per layer (each a copy of the MLP)"})
    top_k: int = field(default=2, metadata={"help": "upcycling: experts each token runs through"})
    expert_noise: float = field(default=0.0, metadata={
        "help": "upcycling: Gaussian noise on each expert copy, in units of the weight's std (0: exactly the dense model, "
                "but then the task loss gives the router no gradient; config.yaml: 0.01)"})
    load_samples: int = field(default=64, metadata={"help": "eval prompts whose tokens measure the expert loads"})


def main():
    import torch
    from trl import ModelConfig, SFTConfig

    # ---- 1. Config ---------------------------------------------------------------------------------------
    script_args, training_args, model_args = parse_config(ScriptArguments, SFTConfig, ModelConfig)
    if script_args.upcycle and not 1 <= script_args.top_k <= script_args.num_experts:
        fail(f"--top_k {script_args.top_k}: must be between 1 and --num_experts ({script_args.num_experts})")
    if script_args.upcycle and script_args.expert_noise == 0 and training_args.router_aux_loss_coef == 0:
        print("warning: --expert_noise 0 and --router_aux_loss_coef 0: identical experts give the router no gradient "
              "from the task loss, so it learns only as far as the experts drift apart (config.yaml: 0.01)",
              file=sys.stderr)

    from trl import get_peft_config

    from ftlab.checkpoints import protect
    from ftlab.data import load_task
    from ftlab.evaluation import score_task
    from ftlab.models import load_causal_lm
    from ftlab.moe import (
        expert_load,
        experts_follow_autocast,
        experts_per_layer,
        plot_expert_load,
        total_and_active_parameters,
        upcycle,
    )
    from ftlab.report import summarize
    from ftlab.resources import measure_training
    from ftlab.trl_cpu import SFTTrainer

    out = prepare_output_dir(training_args.output_dir, overwrite=script_args.overwrite_output_dir,
                             resume=script_args.resume)
    torch.manual_seed(training_args.seed)

    # ---- 2. The MoE: upcycled from the dense model, or loaded as it is ----------------------------------
    model, tokenizer = load_causal_lm(model_args, "cpu" if script_args.upcycle else training_args.device)
    data = load_task(script_args)
    extra = {}
    if script_args.upcycle:
        dense = model
        if dense.config.model_type != "llama":
            fail(f"--upcycle true copies a Llama-architecture MLP; {model_args.model_name_or_path} is "
                 f"{dense.config.model_type!r} (an MoE already? pass --upcycle false)")
        model = upcycle(dense, script_args.num_experts, script_args.top_k, noise=script_args.expert_noise,
                        seed=training_args.seed)
        probe = tokenizer(["Hi, I'm Ana Ruiz from Porto, 34, ana.ruiz@mail.pt."], return_tensors="pt")
        with torch.no_grad():
            gap = (model(**probe).logits - dense(**probe).logits).abs().max().item()
        print(f"upcycled {dense.config.num_hidden_layers} MLPs into {script_args.num_experts} experts each "
              f"(top-{script_args.top_k}); largest logit difference from the dense model: {gap:.2e}")
        extra.update(upcycle_logit_gap=gap, expert_noise=script_args.expert_noise)
        del dense
        model.to(training_args.device)
    elif not hasattr(model.config, "output_router_logits"):
        fail(f"{model_args.model_name_or_path} is not a Mixture-of-Experts model (its config has no router); "
             "pass --upcycle true to build one from it")
    total, active = total_and_active_parameters(model)
    print(f"parameters: {total:,} in all, {active:,} used per token ({active / total:.0%})")
    # On a GPU the experts compute in the autocast format (bf16 on a bf16 card) through one grouped kernel, like every
    # other matmul; transformers alone would keep them in their weights' fp32 (ftlab/moe.py says why). On a CPU they
    # stay as the recorded runs had them.
    if training_args.device.type == "cuda":
        experts_follow_autocast(model)
    extra["experts_implementation"] = model.get_experts_implementation()[""]
    print(f"experts: {extra['experts_implementation']} (transformers' experts backend)")

    # ---- 3. Data, the score before training, and where the router sends tokens before training ---------
    print(data.describe())
    train_dataset, eval_dataset = data.sft_datasets(eval_loss=training_args.eval_strategy != "no")
    load_texts = [tokenizer.apply_chat_template(ex["messages"], tokenize=False)
                  for ex in data.eval_sets["synthetic"][: script_args.load_samples]]
    loads = {"before": expert_load(model, tokenizer, load_texts)}
    before = score_task("before", model, tokenizer, data, script_args, training_args)  # None: --eval_before false

    # ---- 4. Train (TRL adds router_aux_loss_coef x the load-balancing loss, and logs it as aux_loss) ------
    trainer = SFTTrainer(model=model, args=training_args, train_dataset=train_dataset,
                         eval_dataset=eval_dataset,
                         processing_class=tokenizer, peft_config=get_peft_config(model_args))
    model = trainer.model  # with --use_peft, the PEFT model around the MoE
    print(f"router_aux_loss_coef: {trainer.router_aux_loss_coef} (aux loss {'on' if trainer.aux_loss_enabled else 'off'})")
    protect(trainer)  # Ctrl-C saves, a NaN loss stops, a full disk is said first (ftlab/checkpoints.py)
    measure_training(trainer)  # peak memory from here on, and where the weights train (ftlab/resources.py)
    result = trainer.train(resume_from_checkpoint=script_args.resume or None)  # True: the last checkpoint-*

    # ---- 5. Evaluate, router statistics after, report, save -------------------------------------------
    after = score_task("after", model, tokenizer, data, script_args, training_args)
    loads["after"] = expert_load(model, tokenizer, load_texts)
    print_loads(loads)
    plot_expert_load(loads, out / "expert_load.png")
    extra.update(bf16=training_args.bf16, total_parameters_moe=total, active_parameters_per_token=active,
                 num_experts=experts_per_layer(model.config), top_k=model.config.num_experts_per_tok,
                 router_aux_loss_coef=trainer.router_aux_loss_coef,
                 aux_losses=[h["aux_loss"] for h in trainer.state.log_history if "aux_loss" in h],
                 expert_load={k: [[round(x, 4) for x in row] for row in v.tolist()] for k, v in loads.items()})
    summarize("04_moe" + (" (LoRA)" if model_args.use_peft else ""), trainer, result, data, before, after, extra=extra)
    trainer.save_model(out)
    print(f"saved model to {out} (reload: AutoModelForCausalLM.from_pretrained('{out}')); expert_load.png")


def print_loads(loads: dict) -> None:
    """Per layer, each expert's share of the tokens, before and after; and the busiest expert's share."""
    first = next(iter(loads.values()))
    num = first.shape[1]
    print(f"\n== share of tokens per expert (uniform = {1 / num:.0%}) ==")
    print("layer  " + "  ".join(f"{name:^{6 * num}}" for name in loads))
    for layer in range(first.shape[0]):
        print(f"{layer:5d}  " + "  ".join(" ".join(f"{x:5.0%}" for x in load[layer]) for load in loads.values()))
    print("busiest expert's share, mean over layers: "
          + ", ".join(f"{name} {load.max(dim=1).values.mean():.0%}" for name, load in loads.items()))


if __name__ == "__main__":
    main()
