"""Talk to a trained model: `python -m ftlab.chat RUN_DIR`, for any folder's output or a .gguf file.

    python -m ftlab.chat runs/02_sft                        # task mode: type a sentence, see the JSON and its check
    python -m ftlab.chat runs/05_peft_lora --mode free      # free chat; the conversation is kept turn to turn
    python -m ftlab.chat runs/09_export/model-q4_k_m.gguf   # the exported file, run by llama.cpp
    echo "Ana Lima, 31, lives in Porto." | python -m ftlab.chat runs/02_sft    # one answer, for a script

RUN_DIR is a full or merged model, a quantized one (08_quantization), an adapter (put on the base its
adapter_config.json names), or a GGUF file. Task mode sends each line with the task's system prompt, one
turn at a time and greedy, exactly as the eval sets are scored, streams the answer, then shows it parsed or
says why a program reading it would fail. Free mode is an ordinary chat. Typing /task, /free or /reset
switches mode or clears the conversation; end of input (Ctrl-D) or Ctrl-C ends the chat.

The first line says where it runs: a folder's model on the best device (ftlab/platforms.py; --device picks
another) in that device's 16-bit format (bf16; fp16 on a GPU without bf16, such as a T4; fp32 on a CPU without
bf16), a GGUF file in llama.cpp (on the CPU, unless llama-cpp-python was built for a GPU).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ftlab import gguf  # (light: llama_cpp itself is imported only when a GGUF file is loaded)
from ftlab.startup import fail  # also: a LearnerError ends the run as one `error:` line; unprintable names as "?"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ftlab.chat", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a folder a script saved (model, merged model, quantized model or "
                                        "adapter), or a .gguf file")
    parser.add_argument("--mode", choices=("task", "free"), default="task",
                        help="task (default): the extraction prompt, answers checked; free: plain chat")
    parser.add_argument("--max_new_tokens", type=int, default=None, help="default 80 in task mode (as scored), "
                                                                         "256 in free mode")
    parser.add_argument("--temperature", type=float, default=None,
                        help="0 is greedy (task mode's default, as scored); free mode's default 0.2 keeps a "
                             "small model on topic while varying its wording")
    parser.add_argument("--system", default=None, help="free mode: a system prompt to start the conversation")
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best there is)")
    parser.add_argument("--seed", type=int, default=0, help="for sampling (temperature > 0); default 0")
    return parser.parse_args(argv)


class TransformersModel:
    """A folder's model in PyTorch, on the best device (or `device`), in that device's own 16-bit format."""

    def __init__(self, path: Path, device: str | None):
        import torch

        from ftlab.models import has_soft_prompt, load_output
        from ftlab.platforms import choose_to_run

        choice = choose_to_run(use_cpu=device == "cpu")  # (a GPU that torch cannot use: the CPU, and the line says why)
        self.device = device or choice.device
        dtype = choice.dtype if self.device == choice.device else "float32"  # (--device mps on a CUDA machine...)
        self.device_line = f"device: {self.device}, {dtype} ({choice.why})"
        self.model, self.tokenizer = load_output(path, dtype=getattr(torch, dtype), device=self.device)
        if hasattr(self.model, "merge_and_unload") and not has_soft_prompt(self.model):
            self.model = self.model.merge_and_unload()  # an adapter folded in: the same answers, fewer matmuls
        self.model.eval()
        self.about = f"{type(self.model).__name__} on {self.device}, {self.model.dtype}".replace("torch.", "")

    def stream(self, messages: list[dict], max_new_tokens: int, temperature: float):
        """Yield the reply as it is generated (streamed token by token by transformers' TextIteratorStreamer)."""
        import threading

        from transformers import TextIteratorStreamer

        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = self.tokenizer(text, return_tensors="pt", add_special_tokens=False).to(self.model.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        sampling = {"do_sample": True, "temperature": temperature, "top_p": 0.9} if temperature > 0 else \
            {"do_sample": False}
        # generate() runs in a thread and hands each decoded piece to the streamer; this loop prints them.
        # daemon=True: on Ctrl-C the main thread leaves, and the generation does not keep the process alive.
        worker = threading.Thread(target=self.model.generate, daemon=True, kwargs=dict(
            **inputs, max_new_tokens=max_new_tokens, streamer=streamer, pad_token_id=self.tokenizer.pad_token_id,
            **sampling))
        worker.start()
        yield from streamer
        worker.join()


class LlamaCppModel:
    """A GGUF file as llama.cpp runs it: its own tokenizer and chat template, read from the file."""

    def __init__(self, path: Path):
        if (why := gguf.missing()) is not None:
            fail(why)
        self.llm = gguf.load(path)
        self.about = f"llama.cpp, {path.stat().st_size / 1e6:.0f} MB GGUF"
        self.device_line = ("device: gpu (llama.cpp offloads every layer to it)" if gguf.on_gpu() else
                            "device: cpu (llama.cpp: this llama-cpp-python is a CPU build; "
                            'CMAKE_ARGS="-DGGML_CUDA=on" make setup-gguf builds it for CUDA)')

    def stream(self, messages: list[dict], max_new_tokens: int, temperature: float):
        yield from gguf.stream_chat(self.llm, messages, max_new_tokens, temperature)


def verdict(answer: str) -> str:
    """What a program reading the answer would get: the record, or why it cannot use it (the course's strict
    metric: one JSON object and nothing else, then the task's schema)."""
    from ftlab.data import check_target
    from ftlab.metrics import parse_json_object

    record = parse_json_object(answer)
    if record is None:
        first = answer.strip().splitlines()[0][:60] if answer.strip() else ""
        return f"  -> not valid JSON: a program reading it would fail (it starts {first!r})"
    try:
        check_target(answer.strip())
    except (ValueError, TypeError) as e:
        return f"  -> valid JSON, but not the task's schema: {e}"
    return "  -> valid JSON with the task's schema: " + json.dumps(record, ensure_ascii=False)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from ftlab.models import what_is_in
    from ftlab.task import prompt_messages

    path = Path(args.run_dir)
    kind = what_is_in(path)  # a path that holds no model: ModelNotFound, one `error:` line (ftlab/errors.py)
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        fail("--max_new_tokens must be at least 1")
    import torch

    torch.manual_seed(args.seed)
    model = LlamaCppModel(path) if kind == "gguf" else TransformersModel(path, args.device)
    mode, history = args.mode, []
    print(model.device_line)
    print(f"{path} ({kind}; {model.about}). Task mode: type a sentence about a person, get its JSON. Free mode: "
          f"chat. /task, /free, /reset; Ctrl-D or Ctrl-C ends. Now in {mode} mode.", flush=True)
    try:
        while True:
            try:
                line = input("text> " if mode == "task" else "you> ").strip()
            except EOFError:
                break
            if not line:
                continue
            if not sys.stdin.isatty():  # piped input is not echoed by a terminal: show it, so the transcript reads
                print(line)
            if line in ("/task", "/free", "/reset"):
                mode = line[1:] if line != "/reset" else mode
                history.clear()
                print(f"(conversation cleared; {mode} mode)")
                continue
            if mode == "task":
                messages = prompt_messages(line)  # one turn, the system prompt every eval example has
            else:
                system = [{"role": "system", "content": args.system}] if args.system else []
                messages = system + history + [{"role": "user", "content": line}]
            budget = args.max_new_tokens or (80 if mode == "task" else 256)
            temperature = args.temperature if args.temperature is not None else (0.0 if mode == "task" else 0.2)
            pieces = []
            for piece in model.stream(messages, budget, temperature):
                pieces.append(piece)
                sys.stdout.write(piece)
                sys.stdout.flush()
            reply = "".join(pieces).strip()
            print()
            if mode == "task":
                print(verdict(reply))
            else:
                history += [messages[-1], {"role": "assistant", "content": reply}]
    except KeyboardInterrupt:
        print("\n(interrupted)")
    print("bye")


if __name__ == "__main__":
    main()
