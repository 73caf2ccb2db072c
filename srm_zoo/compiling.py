"""``torch.compile`` settings shared by ``srm-zoo bench``, ``train`` and ``eval``: its modes, their
check, and Inductor's count of graphs compiled without the CUDA graphs their mode asked for."""
from typing import Optional

from .errors import UserError

__all__ = ['COMPILE_MODES', 'check_compile_mode', 'replays_cuda_graphs', 'cudagraph_skips', 'describe_skips']

COMPILE_MODES = ('default', 'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs')
"""``torch.compile``'s modes; ``reduce-overhead`` and ``max-autotune`` replay CUDA graphs on CUDA."""
_CUDA_GRAPH_MODES = ('reduce-overhead', 'max-autotune')


def check_compile_mode(compile: bool, mode: Optional[str]) -> None:
    """A clear error for a mode without ``--compile`` or a mode ``torch.compile`` does not have."""
    if mode is not None and not compile:
        raise UserError('--compile-mode sets the mode of torch.compile: add --compile.')
    if mode not in (None, *COMPILE_MODES):
        raise UserError(f'Unknown --compile-mode {mode!r}: use one of {", ".join(COMPILE_MODES)}.')


def replays_cuda_graphs(mode: Optional[str]) -> bool:
    """Whether ``mode`` has a compiled model replay CUDA graphs (on CUDA), whose outputs the next
    replay overwrites."""
    return mode in _CUDA_GRAPH_MODES


def cudagraph_skips() -> int:
    """Graphs Inductor has compiled in this process without the CUDA graphs their mode asked for (the
    counter PyTorch's own benchmarks read)."""
    from torch._dynamo.utils import counters
    return counters['inductor']['cudagraph_skips']


def describe_skips(count: int) -> str:
    """A log line for ``count`` graphs compiled without CUDA graphs, naming the switch that says why."""
    return (f'compiled graphs run without CUDA graphs: {count} (TORCH_LOGS=perf_hints, or cudagraphs in newer '
            'PyTorch, says why)')
