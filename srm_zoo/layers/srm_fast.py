"""SRM's fast path: the same maths as :mod:`srm_zoo.layers.srm` with fewer passes over memory.

* Statistics in one pass each (a sum and a Euclidean norm, accumulated in float32 or wider)
  instead of the two-pass (Welford) variance; ``var = (sum(x^2) - HW * mean^2) / (HW - 1)``.
* In eval mode the BatchNorm is folded into the (C, S) channel-wise weights, so the gate is
  ``sigmoid(a0 * mean + a1 * std + b)``.
* Inside a residual block the gate multiply, the residual add and the ReLU are one operation,
  ``relu(x * gate + shortcut)`` (``torch.addcmul`` then an in-place ReLU on the CPU).
* On CUDA with Triton the statistics, the fused apply and their backward passes are Triton
  kernels (:mod:`srm_zoo.layers.srm_kernels`), registered as ``torch.library`` custom ops.

The one-pass variance loses precision when a map's mean is large against its standard deviation
(relative error about ``1e-7 * (mean / std) ** 2`` in float32): the few maps where that matters are
recomputed with the two-pass variance. The Triton kernels instead shift each map by its first
value before accumulating. Under ``torch.compile`` the two-pass formulation is left to the compiler.
"""
from typing import Tuple

import torch
import torch.nn as nn
from torchvision.ops.misc import FrozenBatchNorm2d

from . import srm_kernels

__all__ = ['style_moments', 'fast_gate', 'gate_residual_relu']


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def style_moments(x: torch.Tensor, eps: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-(sample, channel) mean and ``sqrt(unbiased var + eps)`` of ``x`` (N, C, H, W) as (N, C)
    tensors in float32 (float64 for float64 inputs); the variance of a single value is 0."""
    if srm_kernels.applies(x):
        return srm_kernels.style_stats(x, eps)
    dtype = torch.promote_types(x.dtype, torch.float32)
    batch, channels, height, width = x.shape
    num_values = height * width
    # a contiguous map reduces fastest as one flat row
    maps, dims = (x.view(batch, channels, num_values), -1) if x.is_contiguous() else (x, (2, 3))
    total = maps.sum(dim=dims, dtype=dtype)
    mean = total / num_values
    if num_values == 1:
        return mean, torch.full_like(mean, eps ** 0.5)
    if torch.compiler.is_compiling():  # the compiler fuses the two-pass variance into one loop
        return mean, _sqrt(maps.to(dtype).var(dim=dims) + eps)
    # var = (sum(x^2) - n * mean^2) / (n - 1) = (a - b) * (a + b), which does not overflow where
    # the sum of squares would: a = ||x|| / sqrt(n - 1), b = mean * sqrt(n / (n - 1))
    a = torch.linalg.vector_norm(maps, dim=dims, dtype=dtype) / (num_values - 1) ** 0.5
    b = mean * (num_values / (num_values - 1)) ** 0.5
    var = ((a - b) * (a + b)).clamp_min(0)
    return mean, _sqrt(_refine_cancelled(x, var, b * b) + eps)


def _sqrt(t: torch.Tensor) -> torch.Tensor:
    """``sqrt(t)`` for positive ``t`` (inf included) as ``1 / rsqrt(t)``: on the CPU, ``torch.sqrt``
    goes through MKL's vector maths, whose threads cost milliseconds per call on a busy machine,
    while ``rsqrt`` and ``reciprocal`` stay in PyTorch's own kernels."""
    return torch.rsqrt(t).reciprocal()


def _refine_cancelled(x: torch.Tensor, var: torch.Tensor, mean_sq: torch.Tensor) -> torch.Tensor:
    """``var`` with the two-pass variance where the one-pass one lost precision to cancellation
    or overflowed.

    The one-pass variance has a relative error of about ``eps(dtype) * mean^2 / var``; maps where
    that exceeds 1e-6 (in float32: mean above ~3 standard deviations) are recomputed exactly.
    """
    if var.device.type == 'meta':  # shapes only (model statistics): nothing to refine
        return var
    # also maps whose sum of squares overflowed (the two-pass variance stays finite longer)
    cancelled = (mean_sq > var * (1e-6 / torch.finfo(var.dtype).eps)) | ~torch.isfinite(var)
    index = cancelled.view(-1).nonzero().squeeze(1)
    if index.numel() == 0:
        return var
    channels = x.shape[1]
    rows = x[index // channels, index % channels].flatten(1).to(var.dtype)
    return var.reshape(-1).index_put((index,), rows.var(dim=-1)).view_as(var)


def _folded_batchnorm(bn: nn.Module):
    """``(scale, shift)`` of a BatchNorm that normalises with fixed statistics, else None."""
    if isinstance(bn, nn.modules.batchnorm._BatchNorm):
        if bn.training or bn.running_mean is None or bn.running_var is None:
            return None
    elif not isinstance(bn, FrozenBatchNorm2d):
        return None
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def fast_gate(srm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The (N, C) gate ``sigmoid(BN(z))`` of SRM module ``srm`` in float32 (or float64)."""
    mean, std = style_moments(x, srm.eps)
    styles = {'mean_std': (mean, std), 'mean': (mean,), 'std': (std,)}[srm.style_pooling]
    cfc = srm.cfc.to(mean.dtype)
    folded = _folded_batchnorm(srm.bn)
    if folded is not None:
        scale, shift = (t.to(mean.dtype) for t in folded)
        weights = cfc * scale[:, None]
        z = shift + styles[0] * weights[:, 0]
        if len(styles) == 2:
            z = torch.addcmul(z, styles[1], weights[:, 1])
        return torch.sigmoid(z)
    z = styles[0] * cfc[:, 0]
    if len(styles) == 2:
        z = torch.addcmul(z, styles[1], cfc[:, 1])
    return torch.sigmoid(srm.bn(z[:, :, None, None]).flatten(1))


def gate_residual_relu(x: torch.Tensor, gate: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    """``relu(x * gate + shortcut)`` with an (N, C) ``gate``, in ``x``'s dtype.

    Without autograd the result overwrites ``x`` (as the residual add of timm's blocks does).
    """
    if srm_kernels.applies(x) and srm_kernels.same_layout(x, shortcut):
        return srm_kernels.gate_residual_relu(x, gate, shortcut)
    scale = gate.to(x.dtype)[:, :, None, None]
    if _needs_grad(x, gate, shortcut):
        return torch.relu(torch.addcmul(shortcut, x, scale))
    return torch.addcmul(shortcut, x, scale, out=x).relu_()
