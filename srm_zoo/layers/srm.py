"""Style-based Recalibration Module (SRM), exactly as published.

Lee, Kim, Nam, "SRM: A Style-based Recalibration Module for Convolutional Neural Networks",
ICCV 2019, arXiv:1903.10829.

For an input ``x`` of shape (N, C, H, W):

1. style pooling: ``mu = mean_{HW}(x)``, ``sigma = sqrt(var_{HW}(x) + eps)`` with the
   *unbiased* variance (divide by H*W - 1) and ``eps = 1e-5`` added before the square root;
2. style integration: ``z = cfc[c, 0] * mu + cfc[c, 1] * sigma`` with ``cfc`` of shape (C, 2),
   initialised to zero (a channel-wise fully connected layer);
3. ``z_hat = BatchNorm(z)`` per channel;
4. ``out = x * sigmoid(z_hat)``.

Behaviour the published maths leaves undefined:

* ``H * W == 1``: the unbiased variance is 0/0. SRM takes the variance of a single value to be
  zero, so ``sigma = sqrt(eps)`` and the output is finite.
* Mixed precision: the statistics are computed in float32 (or in float64 for float64 inputs), the
  BatchNorm and the gate in the dtype of SRM's parameters (float32 under autocast; bfloat16 in a
  model cast with ``.to(torch.bfloat16)``, whose BatchNorm takes no wider input); the output has
  the input's dtype.
* A batch of one in training mode cannot give BatchNorm statistics over one value per channel:
  SRM raises a :class:`ValueError` naming the remedies instead of a bare PyTorch error.

Speed: ``SRM.forward`` runs the same maths through a fast path (:mod:`srm_zoo.layers.srm_fast`;
Triton kernels on CUDA) wherever it applies. TorchScript, FX symbolic tracing, ``torch.jit.trace``,
``torch.func`` transforms, forward-mode AD and the switch of :mod:`srm_zoo.layers.reference_switch`
(``SRM_ZOO_REFERENCE=1`` or ``use_reference(True)``) run the reference formulation written out in
this module.
"""
from typing import ClassVar, Optional, Tuple

import torch
import torch.autograd.forward_ad as forward_ad
import torch.fx
import torch.nn as nn
from timm.layers import register_notrace_function

from .reference_switch import reference_enabled
from .srm_fast import fast_gate, gate_residual_relu, has_hooks, norm_gate_residual_relu

__all__ = ['SRM', 'STYLE_POOLINGS', 'style_pool', 'use_reference_path']

STYLE_POOLINGS: Tuple[str, ...] = ('mean_std', 'mean', 'std')
"""Style pooling variants of the paper's ablation: mean and standard deviation, or one of them."""


@register_notrace_function
def style_pool(x: torch.Tensor, style_pooling: str = 'mean_std', eps: float = 1e-5) -> torch.Tensor:
    """Per-(sample, channel) style statistics of ``x`` (N, C, H, W) as an (N, C, S) tensor.

    S is 2 for ``'mean_std'`` (mean, std) and 1 for ``'mean'`` or ``'std'``. Statistics are
    computed in at least float32. ``std = sqrt(unbiased variance + eps)``; for H*W == 1 the
    variance is taken as 0.
    """
    compute_dtype = torch.promote_types(x.dtype, torch.float32)
    flat = x.to(compute_dtype).flatten(2)
    num_values = flat.shape[-1]
    mean = flat.mean(dim=-1)
    if style_pooling == 'mean':
        return mean.unsqueeze(-1)
    if num_values > 1:
        var = flat.var(dim=-1, unbiased=True)
    else:
        var = torch.zeros_like(mean)
    std = (var + eps).sqrt()
    if style_pooling == 'std':
        return std.unsqueeze(-1)
    return torch.stack((mean, std), dim=-1)


def _check_batch_statistics(batch_size: int, uses_batch_statistics: bool) -> None:
    """Raise a clear error where BatchNorm would need statistics over a single sample."""
    if uses_batch_statistics and batch_size == 1:
        raise ValueError(
            'SRM: a batch of one sample in training mode gives its BatchNorm a single value per '
            'channel, so no batch statistics exist. Use a batch of two or more, switch the model '
            'to eval mode (model.eval()), or freeze the BatchNorm layers '
            '(timm.layers.freeze_batch_norm_2d(model)).'
        )


@register_notrace_function
def _check_batch_of(srm: nn.Module, batch_size: int) -> None:
    """:func:`_check_batch_statistics` for ``srm``, whose mode it reads when it runs: a leaf of FX graphs,
    which may be traced in one mode and run in another."""
    _check_batch_statistics(batch_size, srm.uses_batch_statistics())


@register_notrace_function
def _check_inputs(x: torch.Tensor, shortcut: Optional[torch.Tensor], channels: int) -> None:
    """Raise a clear error for inputs SRM of ``channels`` channels cannot take: not (N, channels, H, W), or a
    shortcut of another shape (broadcasting would silently make another output)."""
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f'SRM({channels}) takes (N, {channels}, H, W) inputs, got one of shape {tuple(x.shape)}.')
    if shortcut is not None and shortcut.shape != x.shape:
        raise ValueError(f'SRM: the shortcut must have the shape of the input, {tuple(x.shape)}, not '
                         f'{tuple(shortcut.shape)}.')


# older torch has only is_fx_tracing, which is true under FX symbolic tracing alone there
_fx_symbolic_tracing = getattr(torch.fx._symbolic_trace, 'is_fx_symbolic_tracing', torch.fx._symbolic_trace.is_fx_tracing)


def _traced_or_transformed() -> bool:
    """Whether ``torch.jit.trace``, a ``torch.func`` transform (``vmap``, ``grad``, ``jvp``, ...) or
    forward-mode AD (``torch.autograd.forward_ad.dual_level``) is active; never while ``torch.compile``
    traces."""
    if torch.compiler.is_compiling():
        return False
    return (torch._C._is_tracing() or torch._C._functorch.peek_interpreter_stack() is not None
            or forward_ad._current_level >= 0)


@torch.jit.ignore
def use_reference_path() -> bool:
    """The reference formulation is forced; FX is tracing (its graph shows the published maths); the JIT
    tracer records (it would fix the fast path's choices, made on values and shapes, as constants); or a
    ``torch.func`` transform or forward-mode AD is active (the fast path's kernels and autograd functions
    support neither, PyTorch's own operations both)."""
    return reference_enabled() or _fx_symbolic_tracing() or _traced_or_transformed()


# Leaf calls under FX tracing (they branch on shapes and on the batch size).
torch.fx.wrap('style_pool')
torch.fx.wrap('_check_batch_of')
torch.fx.wrap('_check_inputs')


_PUBLISHED_METHODS = ('gate', 'forward_reference', 'forward')
"""The methods that say what SRM computes."""


class SRM(nn.Module):
    """Style-based Recalibration Module, usable as timm's ``attn_layer``.

    Args:
        channels: number of input (and output) channels.
        style_pooling: ``'mean_std'`` (the paper's SRM), ``'mean'`` or ``'std'``.
        eps: added to the unbiased variance before the square root.
        device: parameter device.
        dtype: parameter dtype.
        **kwargs: ignored; accepted so that any attention-layer call site can construct SRM.

    State: ``cfc`` (C, S) channel-wise weights, initialised to zero, and ``bn``, a standard
    :class:`torch.nn.BatchNorm2d` over the (N, C, 1, 1) style vector.

    A subclass that replaces :meth:`gate`, :meth:`forward_reference` or :meth:`forward` (an ablation, say)
    runs as written: the fast path, which computes the published maths, steps aside for it.
    """

    published_maths: ClassVar[bool] = True
    """True where the class computes SRM as published, so that the fast path may compute it in its place; False
    for a subclass that replaces one of :data:`_PUBLISHED_METHODS`, unless its class body says otherwise (a
    ``forward`` that only wraps ``super().forward``, say)."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if 'published_maths' not in vars(cls):
            cls.published_maths = all(getattr(cls, name) is getattr(SRM, name) for name in _PUBLISHED_METHODS)

    def __init__(
            self,
            channels: int,
            *,
            style_pooling: str = 'mean_std',
            eps: float = 1e-5,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
            **kwargs,
    ) -> None:
        super().__init__()
        if style_pooling not in STYLE_POOLINGS:
            raise ValueError(f'SRM: style_pooling must be one of {STYLE_POOLINGS}, got {style_pooling!r}')
        self.style_pooling = style_pooling
        self.eps = eps
        num_styles = 2 if style_pooling == 'mean_std' else 1
        self.cfc = nn.Parameter(torch.zeros(channels, num_styles, device=device, dtype=dtype))
        self.bn = nn.BatchNorm2d(channels, device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        """The initial state, as PyTorch's layers give it (e.g. after building on the meta device and
        ``to_empty``): ``cfc`` zero, so that every gate starts at one half, and a fresh BatchNorm."""
        with torch.no_grad():
            self.cfc.zero_()
        self.bn.reset_parameters()

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The (N, C, 1, 1) gate ``sigmoid(BN(z))`` in the dtype of SRM's parameters."""
        self._check_batch_size(x)
        styles = style_pool(x, self.style_pooling, self.eps)
        z = (styles * self.cfc.to(styles.dtype)).sum(dim=-1)
        z_hat = self.bn(z[:, :, None, None].to(self.cfc.dtype))
        return torch.sigmoid(z_hat)

    def uses_batch_statistics(self) -> bool:
        """Whether SRM's BatchNorm normalises with statistics of this batch alone, so that a batch of one sample
        has none: in training, for a BatchNorm2d (a SyncBatchNorm pools statistics across processes, a frozen
        BatchNorm has none)."""
        return self.training and self.bn.training and isinstance(self.bn, nn.BatchNorm2d)

    def forward(self, x: torch.Tensor, shortcut: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x * gate(x)``; given a residual ``shortcut``, ``relu(x * gate(x) + shortcut)``.

        The second form is a residual block's SRM, add and ReLU in one call, which the fast path
        fuses into a single pass; without autograd, and without hooks on this SRM, it may write the result
        into ``x`` (a dense tensor of the result's dtype that no other tensor or the shortcut shares), as
        timm's blocks add their shortcut in place.
        ``x`` must be (N, C, H, W) and ``shortcut`` of its shape.
        """
        if torch.jit.is_scripting():
            return self.forward_reference(x, shortcut)
        _check_inputs(x, shortcut, self.cfc.shape[0])
        if use_reference_path():
            return self.forward_reference(x, shortcut)
        return self._forward_fast(x, shortcut)

    def forward_reference(self, x: torch.Tensor, shortcut: Optional[torch.Tensor] = None) -> torch.Tensor:
        """:meth:`forward` in the published formulation, whatever the switch says."""
        out = x * self.gate(x).to(x.dtype)
        if shortcut is None:
            return out
        return torch.relu(out + shortcut)

    @torch.jit.unused
    def _forward_fast(self, x: torch.Tensor, shortcut: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not self.published_maths:
            return self.forward_reference(x, shortcut)
        if x.shape[0] == 1:  # the only batch size the check can refuse; it costs microseconds per call
            self._check_batch_size(x)
        gate = fast_gate(self, x)
        if shortcut is None:
            return x * gate.to(x.dtype)[:, :, None, None]
        return gate_residual_relu(x, gate, shortcut, overwrite=not has_hooks(self))  # hooks may hold x

    @torch.jit.unused
    def forward_after_norm(self, norm: nn.Module, y: torch.Tensor, shortcut: torch.Tensor,
                           shortcut_norm: Optional[nn.Module] = None) -> torch.Tensor:
        """``relu(self(norm(y)) + shortcut)`` on the fast path, with the BatchNorm ``norm`` folded into
        SRM's pass (see :func:`~srm_zoo.layers.srm_fast.norm_folds_into_srm` for which norms fold); given
        ``shortcut_norm``, the shortcut passes it first (:func:`~srm_zoo.layers.srm_fast.shortcut_norm_to_fold`)."""
        if y.shape[0] == 1:  # the only batch size the check can refuse; it costs microseconds per call
            self._check_batch_size(y)
        return norm_gate_residual_relu(norm, self, y, shortcut, shortcut_norm)

    def _check_batch_size(self, x: torch.Tensor) -> None:
        if torch.jit.is_scripting():
            _check_batch_statistics(x.shape[0], self.uses_batch_statistics())
        else:
            _check_batch_of(self, x.shape[0])

    def extra_repr(self) -> str:
        return f'{self.cfc.shape[0]}, style_pooling={self.style_pooling!r}, eps={self.eps}'
