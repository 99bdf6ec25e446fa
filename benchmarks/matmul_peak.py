"""The hardware's peak for training-shaped work: how many FLOP/s one large matrix multiply reaches.

    python benchmarks/matmul_peak.py            # this machine's CPU (or the GPU, if there is one)

Training a transformer is almost all matrix multiplies, ~6 FLOPs per parameter per token (2 forward,
4 backward). So "6 x parameters x tokens/s" of a training run, divided by this peak, says how much of
the hardware the run uses (model FLOP utilisation, MFU). The peak is measured rather than read off a
datasheet: a 2-core slice of a server CPU has no datasheet.
"""

import argparse
import time

import torch


def matmul_flops(n: int, dtype: torch.dtype, device: str, seconds: float = 3.0) -> float:
    """FLOP/s of repeated (n x n) @ (n x n) products: 2 n^3 FLOPs each."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(2):  # warm-up: first calls pick kernels and allocate
        a @ b
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
    sync()
    return 2 * n**3 * runs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="matrix side (default 2048)")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}, "
          f"threads: {torch.get_num_threads()}, torch {torch.__version__}")
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        print(f"{name}: {matmul_flops(args.size, dtype, device) / 1e9:,.0f} GFLOP/s ({args.size}x{args.size} matmul)")


if __name__ == "__main__":
    main()
