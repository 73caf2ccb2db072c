"""Throughput benchmarks: interleaved rounds of several models in one process (``srm-zoo bench``)."""
from .runner import COMPILE_MODES, BenchConfig, ModelVariant, run_benchmark
