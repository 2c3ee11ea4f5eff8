"""Benchmarks printed as ratios measured side by side in one run (the machine is shared and noisy).

Blocks of steps of every (field, backend) are interleaved round-robin, so drift in machine load
hits all of them alike; the median block per entry is reported. ``bench_train`` also counts the
FLOPs of one step of each (zoo.flops: torch's FlopCounterMode, XLA's cost analysis), so each
field's time ratio to free stands beside its arithmetic floor ratio, and times a float32 GEMM
between the rounds, so each step's achieved GFLOP/s reads as a fraction of what the machine's
matrix product reaches. ``bench_train(..., out=PATH)`` also writes a JSON record (settings,
per-field medians, IQRs, ratios and FLOPs, the GEMM's rate, the machine and the library
versions, the date): the leaderboard's cost columns come from such a record, never from timings
taken while other work ran.

Files, one per `zoo bench` command: train, memory, sample, check, conv, scaling; flops counts the
FLOPs of a step, common holds what they share (statistics, the record, the machine).
"""

from __future__ import annotations

from zoo.bench.check import bench_check
from zoo.bench.common import machine_info, paired_ratio
from zoo.bench.conv import bench_conv
from zoo.bench.memory import bench_memory, peak_rss
from zoo.bench.sample import bench_sample
from zoo.bench.scaling import bench_scaling
from zoo.bench.train import bench_train

__all__ = ["bench_check", "bench_conv", "bench_memory", "bench_sample", "bench_scaling", "bench_train",
           "machine_info", "paired_ratio", "peak_rss"]
