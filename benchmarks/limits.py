"""What this CPU allows, measured where the benchmark runs: the benchmarks print their rates beside it.

A transformer's forward pass costs about 2 FLOPs per parameter per token (its matrix multiplies),
so generation and scoring are bounded near ``gflops / (2 x parameters)`` tokens per second, and LoRA
training (forward, then a backward pass through frozen weights that skips their weight gradients)
near ``gflops / (4 x parameters)``.
"""

from __future__ import annotations

import time


def matmul_gflops(size: int = 1024, repeats: int = 20, dtype: str = "float32") -> float:
    """Matrix-multiply speed of this machine in ``dtype`` (fp32 by default; bf16 is 2-3x fp32 on a CPU
    with bf16 units, slower without them), on torch's own thread count."""
    import torch

    a = torch.randn(size, size, dtype=getattr(torch, dtype))
    b = torch.randn(size, size, dtype=getattr(torch, dtype))
    a @ b  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def tokens_per_second_limit(gflops: float, parameters: int, flops_per_parameter: int) -> float:
    """The most tokens per second ``gflops`` allows at ``flops_per_parameter`` FLOPs per parameter per token."""
    return gflops * 1e9 / (flops_per_parameter * parameters)


def model_parameters(spec: str) -> int:
    """The parameters of model ``spec`` as loaded for training (plain layers). An inference model's
    linear layers hold oneDNN-packed weights (``empathy_utils.packed_linear``) that ``parameters()``
    does not list, so its own count would be too small."""
    from empathy_utils.models import load_model

    return sum(p.numel() for p in load_model(spec).parameters())


if __name__ == "__main__":
    from empathy_utils.models import cpu_has_bf16_units

    print(f"fp32 matmul {matmul_gflops():.0f} GFLOP/s, bf16 {matmul_gflops(dtype='bfloat16'):.0f} GFLOP/s "
          f"(this CPU has bf16 units: {cpu_has_bf16_units()})")
