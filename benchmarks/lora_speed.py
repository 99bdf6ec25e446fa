"""Tokens/s and peak memory of LoRA and QLoRA, plain and through Unsloth, at one model shape: the GPU benchmark.

    make bench-gpu          # = python benchmarks/lora_speed.py: Llama-3.2-1B's shape, batch 4 x 2048 tokens
    python benchmarks/lora_speed.py --paths peft-lora peft-qlora --steps 20
    python benchmarks/lora_speed.py --shape smollm2-135m --batch 4 --seq 512 --steps 4   # a CPU-sized look

Every path trains the same randomly initialised model (written once to runs/bench/<shape>/) on the same
random tokens, LoRA r=16 (alpha 32) on all linear layers, with gradient checkpointing, for --steps steps:

  peft-lora          transformers + PEFT, as 05_peft_lora/train.py trains
  peft-lora-liger    the same with `use_liger_kernel` (Liger's Triton kernels; CUDA only): RMSNorm, RoPE and
                     SwiGLU only, since TRL 1.15's SFTTrainer turns Liger's fused cross-entropy off
  unsloth-lora       05_peft_lora/train_unsloth.py's route (Unsloth's loader, kernels and checkpointing)
  peft-qlora-upcast  the textbook QLoRA recipe: 4-bit NF4 base + peft's `prepare_model_for_kbit_training`,
                     which casts every weight it leaves unquantized (embeddings, norms) to fp32
  peft-qlora         06_qlora/train.py's route: the same 4-bit base with nothing upcast
  unsloth-qlora      the route of 05_peft_lora/train_unsloth.py --config 06_qlora/config.yaml

Each path runs in its own process (Unsloth patches transformers when imported, and a peak is per process).
Tokens/s leaves out the first step (kernel compilation, allocator warm-up); peak memory is
`torch.cuda.max_memory_allocated` on a GPU and the peak resident set on a CPU (which includes Python and
the libraries, ~1 GiB). A path that cannot run here (Liger off CUDA, Unsloth off Linux) is listed with the
reason. The table is printed and written to runs/bench/lora_speed.md with the device's name.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPES = {  # LlamaConfig fields; Llama-3.2-1B's and SmolLM2-135M's published shapes, and a test-sized one
    "llama-3.2-1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
                     "num_key_value_heads": 8, "vocab_size": 128256, "rope_theta": 500000.0},
    "smollm2-135m": {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
                     "num_key_value_heads": 3, "vocab_size": 49152, "rope_theta": 100000.0},
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 512, "rope_theta": 10000.0},
}
PATHS = {
    "peft-lora": "transformers + PEFT LoRA (05 train.py)",
    "peft-lora-liger": "+ Liger RMSNorm, RoPE, SwiGLU (use_liger_kernel; TRL 1.15 keeps its own loss)",
    "unsloth-lora": "Unsloth LoRA (05 train_unsloth.py)",
    "peft-qlora-upcast": "transformers + PEFT QLoRA, prepare_model_for_kbit_training",
    "peft-qlora": "transformers + PEFT QLoRA, nothing upcast (06 train.py)",
    "unsloth-qlora": "Unsloth QLoRA (05 train_unsloth.py, 06's config)",
}


def cannot_run(path: str, device: str) -> str | None:
    """Why `path` cannot run on this machine, or None."""
    from ftlab.platforms import installed

    if "unsloth" in path and not installed("unsloth"):
        return "Unsloth is not installed (Linux only)"
    if "liger" in path and (device != "cuda" or not installed("liger_kernel")):
        return "Liger's kernels need an NVIDIA GPU"
    return None


def write_model(shape: str, folder: Path, tokenizer: str = "HuggingFaceTB/SmolLM2-135M-Instruct") -> Path:
    """A randomly initialised Llama of `shape` in bf16, with `tokenizer`'s tokenizer (the embedded SmolLM2's by
    default; only its pad token is used: the data are random ids), written once."""
    if (folder / "config.json").exists():
        return folder
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from ftlab.models import resolve_model

    torch.manual_seed(0)
    config = LlamaConfig(**SHAPES[shape], tie_word_embeddings=True, max_position_embeddings=8192)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_model(tokenizer)).save_pretrained(folder)
    return folder


def run_one(path: str, model_dir: Path, args) -> dict:
    """Train `path` for args.steps steps in this process; return tokens/s and peak memory."""
    if path.startswith("unsloth"):
        import unsloth  # noqa: F401  (before transformers and TRL)
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

    from ftlab.platforms import choose, detect
    from ftlab.resources import count_parameters, peak_memory

    choice = choose(detect())
    quantized = "qlora" in path
    config = {"output_dir": str(ROOT / "runs" / "bench" / "out" / path), "per_device_train_batch_size": args.batch,
                  "max_steps": args.steps, "learning_rate": 2e-4, "logging_steps": 1, "save_strategy": "no", "report_to": "none",
                  "bf16": choice.bf16, "fp16": choice.fp16, "use_cpu": choice.device == "cpu", "max_length": args.seq,
                  "gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False},
                  "optim": "paged_adamw_8bit" if quantized and choice.device == "cuda" else "adamw_torch",
                  "use_liger_kernel": path.endswith("liger"), "dataloader_num_workers": 0, "seed": 0}
    compute = torch.bfloat16 if choice.bf16 else torch.float16 if choice.fp16 else torch.float32
    lora = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear"}

    if path.startswith("unsloth"):
        from trl import SFTConfig, SFTTrainer
        from unsloth import FastLanguageModel

        model, _ = FastLanguageModel.from_pretrained(model_name=str(model_dir), max_seq_length=args.seq,
                                                     load_in_4bit=quantized, dtype=compute)
        model = FastLanguageModel.get_peft_model(model, **lora, use_gradient_checkpointing="unsloth", random_state=0)
        config.update(gradient_checkpointing=False)  # Unsloth's own checkpointing is on instead
    else:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
        from transformers import AutoModelForCausalLM
        from trl import SFTConfig

        from ftlab.quantization import nf4_config
        from ftlab.trl_cpu import SFTTrainer

        kwargs = {}
        if quantized:
            kwargs["quantization_config"] = nf4_config(compute)
            kwargs["device_map"] = {"": choice.device}
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=compute, **kwargs)
        if not quantized:
            model = model.to(choice.device)
        if path == "peft-qlora-upcast":
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
        model = get_peft_model(model, LoraConfig(**lora, task_type="CAUSAL_LM"))

    generator = torch.Generator().manual_seed(0)
    rows = torch.randint(0, model.config.vocab_size, (args.batch * args.steps, args.seq), generator=generator)
    data = Dataset.from_dict({"input_ids": rows.tolist()})

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_begin(self, *_, **__):
            if choice.device == "cuda":
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, *_, **__):
            if choice.device == "cuda":
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.start)

    timer = StepTimer()
    trainer = SFTTrainer(model=model, args=SFTConfig(**config), train_dataset=data, callbacks=[timer])
    trainer.train()
    timed = timer.times[1:] or timer.times
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    trainable, total = count_parameters(model)
    return {"path": path, "tokens_per_s": args.batch * args.seq * len(timed) / sum(timed),
            "peak_gib": peak_memory()["peak_gib"], "device": choice.device, "last_loss": losses[-1],
            "trainable": trainable, "total": total}


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=SHAPES, default="llama-3.2-1b")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--tokenizer", default="HuggingFaceTB/SmolLM2-135M-Instruct",
                        help="whose tokenizer the random model gets (a hub id or folder; only its pad token is used)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run this path in this process
    args = parser.parse_args()
    model_dir = args.out / args.shape
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, model_dir, args)), flush=True)
        return

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    write_model(args.shape, model_dir, args.tokenizer)
    name = device_name()
    rows = [(f"Measured on {name}: `python benchmarks/lora_speed.py --shape {args.shape} --batch {args.batch} "
            f"--seq {args.seq} --steps {args.steps}`, LoRA r=16 on all linear layers, gradient checkpointing."), "",
            "| path | tokens/s | peak GiB | last loss |", "|---|---|---|---|"]
    for path in args.paths:
        if reason := cannot_run(path, device):
            rows.append(f"| {PATHS[path]} | not run: {reason} | | |")
        else:
            command = [sys.executable, __file__, "--one", path, "--shape", args.shape, "--batch", str(args.batch),
                       "--seq", str(args.seq), "--steps", str(args.steps), "--out", str(args.out)]
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
            results = [json.loads(line[7:]) for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode or not results:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                rows.append(f"| {PATHS[path]} | failed: {last[:120]} | | |")
            else:
                r = results[0]
                rows.append(f"| {PATHS[path]} | {r['tokens_per_s']:,.0f} | {r['peak_gib']:.2f} | {r['last_loss']:.3f} |")
        print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lora_speed.md").write_text("\n".join(rows) + "\n", encoding="utf-8")
    print("\n" + "\n".join(rows) + f"\n\nwrote {args.out / 'lora_speed.md'}")


if __name__ == "__main__":
    main()
