"""The kernel ops' gradients as PyTorch operations, for backward passes that record a graph.

The Triton backward kernels give the numbers of a gradient but no graph behind them, so a second
derivative through them (``create_graph=True``: gradient penalties, Hessian-vector products,
meta-learning) would silently miss SRM's part. Where a backward pass records (:func:`records_graph`),
the ops' autograd formulas take these functions instead: the same gradients, differentiable again.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ['records_graph', 'moments_input_grad', 'affine_residual_relu_grads', 'block_tail_grads']


def records_graph() -> bool:
    """Whether the backward pass running now records its operations (``create_graph=True``); never while
    ``torch.compile`` traces one."""
    return torch.is_grad_enabled() and not torch.compiler.is_compiling()


def _per_map(t: torch.Tensor) -> torch.Tensor:
    """An (N, C) tensor broadcast over maps."""
    return t[:, :, None, None]


def moments_input_grad(x: torch.Tensor, mean: torch.Tensor, grad_mean: torch.Tensor, grad_var: torch.Tensor
                       ) -> torch.Tensor:
    """Gradient for ``x`` of its per-map mean and unbiased variance (``mean``, from ``x``):
    ``grad_mean / n + grad_var * 2 (x - mean) / (n - 1)``; a single value's variance is constant."""
    num_values = x.shape[2] * x.shape[3]
    grad = _per_map(grad_mean / num_values).expand(x.shape)
    if num_values > 1:
        grad = torch.addcmul(grad, x.to(mean.dtype) - _per_map(mean), _per_map(grad_var * (2 / (num_values - 1))))
    return grad.to(x.dtype)


def _through_relu(grad: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``grad`` through a ReLU whose output is ``out``, as PyTorch differentiates ``relu`` (so ``out``
    stays in the graph, as it does there)."""
    return torch.ops.aten.threshold_backward(grad, out, 0)


def affine_residual_relu_grads(grad: torch.Tensor, out: torch.Tensor, x: torch.Tensor, scale: torch.Tensor
                               ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of ``out = relu(x * scale + bias + shortcut)`` for ``x``, ``scale``, ``bias`` (in ``scale``'s
    dtype) and ``shortcut`` (in ``grad``'s dtype)."""
    passed = _through_relu(grad, out)
    passed_wide = passed.to(scale.dtype)
    grad_x = (passed_wide * _per_map(scale)).to(x.dtype)
    return grad_x, (passed_wide * x.to(scale.dtype)).sum((2, 3)), passed_wide.sum((2, 3)), passed


def _tail_branch(y: torch.Tensor, params: Sequence[torch.Tensor], eps: Tuple[float, float, float],
                 style_pooling: str) -> torch.Tensor:
    """``SRM(norm(y))`` in training (both BatchNorms on batch statistics, running statistics untouched),
    differentiable, in float32 or wider: SRM's published style pooling (:func:`~srm_zoo.layers.srm.style_pool`)."""
    from ..srm import style_pool  # (that module imports this package)
    norm_weight, norm_bias, cfc, srm_weight, srm_bias = params
    norm_eps, srm_bn_eps, srm_eps = eps
    wide = torch.promote_types(y.dtype, torch.float32)
    x = F.batch_norm(y.to(wide), None, None, norm_weight.to(wide), norm_bias.to(wide), training=True, eps=norm_eps)
    z = (style_pool(x, style_pooling, srm_eps) * cfc.to(wide)).sum(-1)
    z_hat = F.batch_norm(z, None, None, srm_weight.to(wide), srm_bias.to(wide), training=True, eps=srm_bn_eps)
    return x * _per_map(torch.sigmoid(z_hat))


def block_tail_grads(grad: torch.Tensor, out: torch.Tensor, y: torch.Tensor, params: Sequence[torch.Tensor],
                     eps: Tuple[float, float, float], style_pooling: str, shortcut_dtype: torch.dtype
                     ) -> Tuple[Optional[torch.Tensor], ...]:
    """Gradients of the training tail ``out = relu(SRM(norm(y)) + shortcut)`` for ``y``, ``shortcut`` and
    ``params`` (the norm's weight and bias, ``cfc``, SRM's BatchNorm weight and bias; None for those that
    need none), from the tail's branch recomputed in PyTorch operations."""
    passed = _through_relu(grad, out)
    inputs = (y, *params)
    needed = [t for t in inputs if t.requires_grad]
    grads = iter(torch.autograd.grad(_tail_branch(y, params, eps, style_pooling), needed,
                                     passed.to(torch.promote_types(y.dtype, torch.float32)), create_graph=True)
                 if needed else ())  # (only the shortcut may need a gradient)
    grad_y, *grad_params = (next(grads) if t.requires_grad else None for t in inputs)
    return (grad_y, passed.to(shortcut_dtype), *grad_params)
