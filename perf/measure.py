"""Timing the perf scripts share: synchronised clocks, interleaved repeats, and the FLOP limit.

Repeats of the candidates are taken in turn (A B A B ...), never all of A then all of B,
so a machine that slows down or speeds up during a run shifts every candidate alike;
figures are medians of those repeats.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, TypeVar

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

T = TypeVar("T")


def sync(device: torch.device) -> None:
    """CUDA work is queued, not done, when a call returns: wait for it before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(call: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """What the call returns, and the seconds it took until the device finished."""
    sync(device)
    start = time.perf_counter()
    result = call()
    sync(device)
    return result, time.perf_counter() - start


def seconds(call: Callable[[], object], device: torch.device) -> float:
    return timed(call, device)[1]


def interleaved(candidates: dict[str, Callable[[], object]], repeats: int, device: torch.device, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each candidate, `repeats` times in turn, after `warmup` untimed rounds."""
    for _ in range(warmup):
        for call in candidates.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, call in candidates.items():
            times[name].append(seconds(call, device))
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def matmul_gflops(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """Measured fp32 matmul rate on this device and thread count: the ceiling for dense training work."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device)
    b = torch.randn(size, size, generator=generator).to(device)
    out = torch.empty(size, size, device=device)
    times = interleaved({"mm": lambda: torch.mm(a, b, out=out)}, repeats, device)["mm"]
    return 2 * size**3 / median(times) / 1e9


def train_flops_per_image(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """FLOPs (convolutions and matmuls, which dominate) of one forward+backward, per image of the batch."""
    with FlopCounterMode(display=False) as counter:
        model(x, y).loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / x.shape[0]
