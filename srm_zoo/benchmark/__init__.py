"""Throughput benchmarks: interleaved rounds of several models in one process (``srm-zoo bench``)."""
from .runner import BenchConfig, ModelVariant, round_ratios, run_benchmark
