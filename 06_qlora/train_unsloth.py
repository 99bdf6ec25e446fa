"""QLoRA through Unsloth: the same job as train.py, with Unsloth loading the 4-bit base and training it.

There is one Unsloth script in the course, 05_peft_lora/train_unsloth.py: LoRA and QLoRA differ there
by one config key, `load_in_4bit`, exactly as Unsloth's own `FastLanguageModel.from_pretrained` does.
This file runs it with 06's config, so the QLoRA folder has its Unsloth command too. What Unsloth
changes on a GPU for QLoRA: its Triton kernels dequantize the NF4 blocks and run the LoRA matmuls
fused, the loss never builds the full-vocabulary logits, and nothing outside the adapters is upcast to
fp32 (see README.md for what the plain route costs). Without a GPU, Unsloth's CPU fallback loads the
same bitsandbytes NF4 layers as train.py and trains them (measured here, see README.md), so the 4-bit
eval-mode trap of train.py applies and is handled the same way: score, then reload before training.

    python 06_qlora/train_unsloth.py --config 06_qlora/config.yaml --output_dir runs/06_unsloth
"""

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    if "--load_in_4bit" in sys.argv[1:] and sys.argv[sys.argv.index("--load_in_4bit") + 1:][:1] != ["true"]:
        raise SystemExit("error: 06_qlora trains on a 4-bit base: for 16-bit LoRA through Unsloth run "
                         "05_peft_lora/train_unsloth.py")
    runpy.run_path(str(Path(__file__).resolve().parents[1] / "05_peft_lora" / "train_unsloth.py"), run_name="__main__")
