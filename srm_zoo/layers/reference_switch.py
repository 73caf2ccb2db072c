"""The switch that forces SRM's reference (published, unfused) formulation.

By default SRM runs its fast path wherever it applies (one-pass float32 statistics, BatchNorm
folded into the gate in eval mode, the gate fused with the block's residual add and ReLU, Triton
kernels on CUDA). The reference path is the plain published formulation of
:mod:`srm_zoo.layers.srm`. Force it with the environment variable ``SRM_ZOO_REFERENCE=1`` (read
at every call in eager mode; a model compiled with ``torch.compile`` reads it when it compiles, so set it
before) or from Python (a compiled model follows this switch: it compiles again when the switch changes)::

    from srm_zoo.layers import use_reference
    use_reference(True)            # from now on
    with use_reference(True):      # only inside the block
        model(x)
"""
import os
from typing import Optional

__all__ = ['ENV_VAR', 'reference_enabled', 'use_reference']

ENV_VAR = 'SRM_ZOO_REFERENCE'

_forced: Optional[bool] = None


def reference_enabled() -> bool:
    """Whether SRM uses its reference formulation: :func:`use_reference` wins over ``SRM_ZOO_REFERENCE``."""
    if _forced is not None:
        return _forced
    return os.environ.get(ENV_VAR, '').strip().lower() in ('1', 'true', 'yes', 'on')


class use_reference:
    """Force (``True``) or forbid (``False``) the reference SRM path; ``None`` defers to the environment.

    Takes effect at once; used as a context manager, the previous setting returns on exit.
    """

    def __init__(self, enabled: Optional[bool] = True) -> None:
        global _forced
        self._previous = _forced
        _forced = None if enabled is None else bool(enabled)

    def __enter__(self) -> 'use_reference':
        return self

    def __exit__(self, *exc) -> None:
        global _forced
        _forced = self._previous
