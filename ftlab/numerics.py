"""Number formats as arithmetic on tensors: what a value becomes when fp16, bf16, fp8, int8 or int4 stores it.

A float format is a sign, an exponent and a mantissa. The exponent's bits set the *range*: how large a value
can be before it becomes infinity (overflow) and how small before it becomes zero (underflow). The mantissa's
bits set the *precision*: neighbouring values sit a relative step of 2^-mantissa_bits apart, so every value is
rounded by up to half that step. fp16 and bf16 spend their 16 bits differently: fp16 has 10 mantissa bits
(fine steps) and 5 exponent bits (largest value 65,504); bf16 has 7 and 8 (coarse steps, fp32's range).

An integer format has no exponent: 2^bits evenly spaced levels, placed over the values by a scale (one per
row, per token or per group of 32 weights). Nothing overflows (the scale is chosen from the largest value),
but one large value in a group makes the step coarse for every other value in it. NF4 (QLoRA's format) is a
table of 16 levels spaced for normally distributed weights, one scale per block of 64.

    from ftlab.numerics import FORMATS, Tally, round_to

    round_to(torch.tensor([70000.0]), FORMATS["fp16"])   # tensor([inf]): above fp16's largest value
    tally = Tally(["fp16", "bf16", "int8"])
    tally.add(weights)                                   # any number of tensors
    tally.rows()                                         # per format: overflow, underflow, relative error

`round_float` is written out for teaching and checked against torch's own casts (tests/test_quantization.py);
it also gives TF32, which has no torch dtype (NVIDIA GPUs use it inside fp32 matmuls).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FloatFormat:
    """A sign, `exponent_bits` and `mantissa_bits`; `largest` is the biggest finite value. `saturates`: values
    beyond it become `largest` (torch's fp8 e4m3, which has no infinity) instead of infinity. `scaled`: the tensor
    is first divided by a per-tensor scale that maps its largest value onto `largest`, as fp8 is used in practice."""

    name: str
    exponent_bits: int
    mantissa_bits: int
    largest: float
    saturates: bool = False
    scaled: bool = False
    dtype: str | None = None  # torch's dtype for it, if torch has one (its cast is faster than `round_float`)

    @property
    def bits(self) -> int:
        return 1 + self.exponent_bits + self.mantissa_bits

    @property
    def smallest_normal(self) -> float:
        return 2.0 ** (2 - 2 ** (self.exponent_bits - 1))

    @property
    def smallest_subnormal(self) -> float:
        """Below the smallest normal value the step stays fixed: precision is lost digit by digit, down to this."""
        return self.smallest_normal * 2.0 ** -self.mantissa_bits

    @property
    def relative_step(self) -> float:
        """The gap between 1 and the next value (machine epsilon): rounding errs by up to half of it."""
        return 2.0 ** -self.mantissa_bits

    @property
    def overflow_above(self) -> float:
        """Values of larger magnitude round beyond `largest`: it plus half the step between the top two values."""
        return self.largest + 2.0 ** (math.floor(math.log2(self.largest)) - self.mantissa_bits) / 2


@dataclass(frozen=True)
class IntFormat:
    """`bits`-bit symmetric integers as torchao stores them (what 08_quantization/quantize.py runs): the levels
    -2^(bits-1)..2^(bits-1)-1 (int8: -128..127) times a scale = (largest |value|) / 127.5 (int4: / 7.5), one per
    row (`group_size` None: per output channel of a weight, per token of an activation) or per group of
    `group_size` values. That scale puts the largest value 127.5 steps (int4: 7.5) from zero, half a step past the
    last level it rounds to, so it comes back as 127/127.5 of itself (int4: 7/7.5, 7% smaller); -128 (-8) is
    reached only where float rounding tips -127.5 down. `table` replaces the even levels with NF4's 16 values (in
    [-1, 1], one scale per block)."""

    name: str
    bits: int
    group_size: int | None = None
    table: str | None = None  # "nf4"

    @property
    def levels(self) -> int:
        return 2 ** self.bits  # NF4's table: 16 too

    @property
    def levels_range(self) -> tuple[int, int]:
        return -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1

    @property
    def relative_step(self) -> float:
        """The step between levels, relative to the group's largest value (NF4: its finest, near zero)."""
        return 0.0796 if self.table == "nf4" else 2 / (2 ** self.bits - 1)


def ieee_largest(exponent_bits: int, mantissa_bits: int) -> float:
    """The largest finite value of an IEEE-style format (the top exponent is kept for infinity and NaN)."""
    return (2 - 2.0 ** -mantissa_bits) * 2.0 ** (2 ** (exponent_bits - 1) - 1)


FORMATS: dict[str, FloatFormat | IntFormat] = {f.name: f for f in (
    FloatFormat("fp32", 8, 23, ieee_largest(8, 23), dtype="float32"),
    FloatFormat("tf32", 8, 10, ieee_largest(8, 10)),   # 19 bits: fp32's range, fp16's precision (GPU matmuls)
    FloatFormat("bf16", 8, 7, ieee_largest(8, 7), dtype="bfloat16"),
    FloatFormat("fp16", 5, 10, ieee_largest(5, 10), dtype="float16"),   # 65,504
    # e4m3fn: no infinity, so its top exponent holds values (up to 448); torch's cast saturates there
    FloatFormat("fp8_e4m3", 4, 3, 448.0, saturates=True, dtype="float8_e4m3fn"),
    FloatFormat("fp8_e5m2", 5, 2, ieee_largest(5, 2), dtype="float8_e5m2"),  # 57,344
    FloatFormat("fp8_e4m3_scaled", 4, 3, 448.0, saturates=True, scaled=True, dtype="float8_e4m3fn"),
    IntFormat("int8", 8),                               # per row / per token
    IntFormat("int4_g32", 4, group_size=32),
    IntFormat("nf4_b64", 4, group_size=64, table="nf4"),
)}


# ---- Rounding --------------------------------------------------------------------------------------------------
def round_float(x: torch.Tensor, fmt: FloatFormat, with_overflow: bool = False):
    """`x` rounded to the nearest value `fmt` holds (ties to even, as hardware does), returned as fp32: infinity
    where it overflows (or `fmt.largest` if it saturates), zero where it underflows. `with_overflow` also returns
    where it overflowed (a value just above the largest can still round down to it). Every step is exact in fp32
    (divisions and products by powers of two), so it computes in fp32."""
    x = x.float()
    scale = 1.0
    if fmt.scaled:
        top = x.abs().max().item() if x.numel() else 0.0
        scale = top / fmt.largest if top > 0 else 1.0
        x = x / scale
    magnitude = x.abs()
    _, exponent = torch.frexp(magnitude)  # magnitude = m * 2^exponent with m in [0.5, 1)
    # The step between neighbours is 2^(e - mantissa_bits) for values in [2^e, 2^(e+1)); below the smallest
    # normal value every step is the same (subnormals), which is how precision fades out before zero.
    e = (exponent - 1).clamp(min=2 - 2 ** (fmt.exponent_bits - 1))
    step = torch.ldexp(torch.ones_like(magnitude), e - fmt.mantissa_bits)
    rounded = torch.round(magnitude / step) * step  # torch.round: half to even
    over = rounded > fmt.largest
    rounded = torch.where(over, fmt.largest if fmt.saturates else math.inf, rounded)
    result = torch.copysign(rounded, x) * scale
    return (result, over) if with_overflow else result


def nf4_table() -> torch.Tensor:
    """NF4's 16 levels in [-1, 1] (quantiles of a normal distribution), as bitsandbytes defines them."""
    from bitsandbytes.functional import get_4bit_type

    return get_4bit_type("nf4", device="cpu").float()


def round_int(x: torch.Tensor, fmt: IntFormat) -> torch.Tensor:
    """`x` quantized to `fmt`'s levels with one absmax scale per row or group, and back to fp32 (dequantized).
    A group size that does not divide the row falls back to one scale per row; NF4 groups the flattened tensor."""
    shape = x.shape
    width = x.shape[-1] if x.dim() else 1
    size = fmt.group_size if fmt.group_size and (fmt.table or width % fmt.group_size == 0) else width
    flat = x.float().reshape(-1)
    pad = (-flat.numel()) % size
    groups = torch.nn.functional.pad(flat, (0, pad)).reshape(-1, size)
    top = groups.abs().amax(-1, keepdim=True)
    if fmt.table == "nf4":
        top = torch.where(top > 0, top, torch.ones_like(top))
        table = nf4_table()
        index = torch.bucketize(groups / top, (table[1:] + table[:-1]) / 2)  # nearest level: between midpoints
        dequantized = table[index] * top
    else:  # torchao's symmetric scheme, step for step: 2^bits levels -2^(bits-1)..2^(bits-1)-1 over [-top, top]
        low, high = fmt.levels_range
        scale = (top / ((high - low) / 2)).clamp(min=torch.finfo(torch.float32).eps)  # top / 127.5 (int4: / 7.5)
        dequantized = torch.round(groups * (1.0 / scale)).clamp(low, high) * scale
    return dequantized.reshape(-1)[: flat.numel()].reshape(shape)


def cast(x: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """What `round_float` computes, through torch's own cast (one pass instead of ten), for a format torch has."""
    x = x.float()
    if not fmt.scaled:
        return x.to(getattr(torch, fmt.dtype)).float()
    top = x.abs().max().item() if x.numel() else 0.0
    scale = top / fmt.largest if top > 0 else 1.0
    return (x / scale).to(getattr(torch, fmt.dtype)).float() * scale


def round_to(x: torch.Tensor, fmt: FloatFormat | IntFormat) -> torch.Tensor:
    """`x` as `fmt` stores it, in fp32 (an integer format: quantized and dequantized)."""
    if isinstance(fmt, IntFormat):
        return round_int(x, fmt)
    return cast(x, fmt) if fmt.dtype else round_float(x, fmt)


# ---- Counting what a format does to real tensors -------------------------------------------------------------
LOWEST_EXPONENT, HISTOGRAM_BINS = -64, 96  # the magnitude histogram's range: 2^-64 .. 2^32


class Tally:
    """Overflow, underflow and rounding error of each format over any number of tensors (weights, activations...).

    overflow: values beyond the format's largest (they become infinity, or the largest value if it saturates);
    underflow: non-zero values that become zero; relative error: the rounding error's root-mean-square over the
    values' root-mean-square, counting only values the format can hold (the overflowed ones are counted apart)."""

    def __init__(self, names: list[str]):
        unknown = [n for n in names if n not in FORMATS]
        if unknown:
            raise ValueError(f"unknown format(s) {unknown}: choose from {list(FORMATS)}")
        self.names = list(names)
        self.count = self.nonzero = 0
        self.largest, self.smallest = 0.0, math.inf
        self.counts = {n: {"overflow": 0, "underflow": 0, "error_sq": 0.0, "value_sq": 0.0} for n in names}
        self.exponents = torch.zeros(HISTOGRAM_BINS, dtype=torch.long)  # how many values fall in [2^e, 2^(e+1))

    @torch.no_grad()
    def add(self, x: torch.Tensor) -> None:
        shaped = x.detach().float()  # integer formats scale per row: keep the rows
        x = shaped.reshape(-1)
        if x.numel() == 0:
            return
        magnitude = x.abs()
        zeros = int((magnitude == 0).sum())
        self.count += x.numel()
        self.nonzero += x.numel() - zeros
        self.largest = max(self.largest, magnitude.max().item())
        if zeros < x.numel():
            self.smallest = min(self.smallest, torch.where(magnitude > 0, magnitude, math.inf).min().item())
        _, exponent = torch.frexp(magnitude)  # zeros land in the bin of 2^-1: taken out again below
        counts = torch.bincount((exponent - 1 - LOWEST_EXPONENT).clamp(0, HISTOGRAM_BINS - 1), minlength=HISTOGRAM_BINS)
        counts[-1 - LOWEST_EXPONENT] -= zeros
        self.exponents += counts
        value_sq = torch.linalg.vector_norm(x).item() ** 2
        for name in self.names:
            fmt, c = FORMATS[name], self.counts[name]
            q = round_to(shaped, fmt).reshape(-1)
            c["underflow"] += int((q == 0).sum()) - zeros  # a zero stays zero; any other zero was a value once
            error = q - x
            held_sq = value_sq
            if isinstance(fmt, FloatFormat) and not fmt.scaled:  # (integers, scaled fp8: the scale fits the largest)
                over = magnitude > fmt.overflow_above if fmt.saturates else torch.isinf(q)
                if over.any():
                    c["overflow"] += int(over.sum())
                    error = error.masked_fill(over, 0)
                    held_sq = torch.linalg.vector_norm(x.masked_fill(over, 0)).item() ** 2
            c["error_sq"] += torch.linalg.vector_norm(error).item() ** 2
            c["value_sq"] += held_sq

    def rows(self) -> list[dict]:
        return [{"format": name, "overflow": c["overflow"], "underflow": c["underflow"],
                 "relative_error": math.sqrt(c["error_sq"] / c["value_sq"]) if c["value_sq"] else 0.0}
                for name, c in self.counts.items()]

    def histogram(self) -> dict[int, int]:
        """{e: how many non-zero values lie in [2^e, 2^(e+1))}, e from LOWEST_EXPONENT (which also counts smaller)."""
        return {LOWEST_EXPONENT + i: int(n) for i, n in enumerate(self.exponents) if n}

    def summary(self) -> dict:
        return {"values": self.count, "nonzero": self.nonzero, "largest": self.largest,
                "smallest_nonzero": self.smallest if self.nonzero else None, "formats": self.rows(),
                "log2_histogram": self.histogram()}


def format_properties(names: list[str]) -> list[dict]:
    """Each format's bits, range and precision, for the table every lesson on formats starts with."""
    rows = []
    for name in names:
        fmt = FORMATS[name]
        if isinstance(fmt, FloatFormat):
            rows.append({"format": name, "bits": fmt.bits, "exponent_bits": fmt.exponent_bits,
                         "mantissa_bits": fmt.mantissa_bits, "largest": fmt.largest,
                         "smallest_normal": fmt.smallest_normal, "smallest_subnormal": fmt.smallest_subnormal,
                         "relative_step": fmt.relative_step, "scale": "per tensor" if fmt.scaled else None})
        else:
            rows.append({"format": name, "bits": fmt.bits, "levels": fmt.levels, "relative_step": fmt.relative_step,
                         "scale": f"per {fmt.group_size} values" if fmt.group_size else "per row (channel / token)"})
    return rows
