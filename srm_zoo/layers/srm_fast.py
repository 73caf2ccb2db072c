"""SRM's fast path: the same maths as :mod:`srm_zoo.layers.srm` with fewer passes over memory.

* Statistics in one pass each (a sum and a Euclidean norm, accumulated in float32 or wider)
  instead of the two-pass (Welford) variance; ``var = (sum(x^2) - HW * mean^2) / (HW - 1)``. Their
  gradient is the exact one, taken around the mean.
* In eval mode SRM's BatchNorm is folded into the (C, S) channel-wise weights, so the gate is
  ``sigmoid(a0 * mean + a1 * std + b)``.
* Inside a residual block the gate multiply, the residual add and the ReLU are one operation,
  ``relu(x * gate + shortcut)`` (``torch.addcmul`` then an in-place ReLU on the CPU).
* In inference without autograd, outside the Triton kernels, the block's BatchNorm before SRM is
  folded into the convolution before it (its weight and bias take the norm's scale and shift) where
  the weight is smaller than the convolution's output: one pass over the block output fewer.
* In training, and wherever the Triton kernels run, the block's BatchNorm before SRM is folded
  into the same passes: SRM's statistics of ``x = a * y + b`` (per channel) follow from those of
  the convolution output ``y``, and so do BatchNorm's batch statistics in training (the mean and
  variance of N maps follow from each map's). The block tail reads ``y`` once for the statistics
  and once for ``relu(y * gate * a + gate * b + shortcut)`` (in inference on the Triton kernels on
  large NCHW maps, in one kernel whose second read comes from the caches where they still hold ``y``),
  and keeps only ``y`` and the output for the backward pass, as a plain ResNet block does.
  (``y * gate * a`` and ``gate * b`` nearly cancel where the norm's mean is large: in bf16 or fp16
  that sum stays in float32.)
* In inference on the Triton kernels a downsampling block's shortcut skips the downsample's last
  BatchNorm, which the tail's apply takes instead (:func:`shortcut_norm_to_fold`): one write and one
  read of the shortcut fewer.
* On CUDA with Triton the statistics, the fused apply and their backward passes are Triton
  kernels (:mod:`srm_zoo.layers.srm_kernels`), registered as ``torch.library`` custom ops; so is
  the (N, C) gate between them (both BatchNorms folded in), forward and backward, which keeps a
  block tail at a handful of kernel launches instead of dozens of small ones. Eager training calls
  the same kernels through a plain autograd function, which costs the host less per block.

The one-pass variance loses precision when a map's mean is large against its standard deviation
(relative error about ``1e-7 * (mean / std) ** 2`` in float32): the few maps where that matters are
gathered and summed again around their mean. The Triton kernels instead shift each map by its first
value before accumulating. Under ``torch.compile`` the two-pass formulation is left to the compiler.
Without autograd, the gate takes the maps' sums and sums of squared deviations as they are and folds
``1 / n`` and ``1 / sqrt(n - 1)`` into its multiply-adds: about thirty small ops per CPU block tail
instead of forty-six. At batch size 1 those small ops, not the passes over memory, are most of what
SRM costs.
"""
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.modules.module as _nn_module
from torchvision.ops.misc import FrozenBatchNorm2d

from . import srm_kernels
from .srm_kernels.differentiable import moments_input_grad

__all__ = ['style_moments', 'fast_gate', 'gate_residual_relu', 'norm_folds_into_srm', 'norm_gate_residual_relu',
           'conv_folds_norm', 'conv_norm', 'has_hooks', 'running_norm_state', 'shortcut_norm_to_fold']


def has_hooks(*modules: nn.Module) -> bool:
    """Whether hooks expect any of ``modules`` to run as a module: their own forward, forward-pre,
    backward or backward-pre hooks (a module's backward hooks are set up when it is called), or global
    ones (``torch.nn.modules.module.register_module_forward_hook`` and the like). Dict lookups only:
    block tails ask it on every call."""
    if (_nn_module._global_forward_hooks or _nn_module._global_forward_pre_hooks
            or _nn_module._global_backward_hooks or _nn_module._global_backward_pre_hooks):
        return True
    for module in modules:
        if (module._forward_hooks or module._forward_pre_hooks
                or module._backward_hooks or module._backward_pre_hooks):
            return True
    return False


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _takes_one_pass(x: torch.Tensor) -> bool:
    """Whether PyTorch's one-pass sums take ``x``: maps of more than one value, outside ``torch.compile``
    and where the Triton kernels do not."""
    return x.shape[2] * x.shape[3] > 1 and not torch.compiler.is_compiling() and not srm_kernels.applies(x)


def style_moments(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-(sample, channel) mean and unbiased variance of ``x`` (N, C, H, W) as (N, C) tensors in
    float32 (float64 for float64 inputs); the variance of a single value is 0."""
    if _takes_one_pass(x):
        return _OnePassMoments.apply(x) if _needs_grad(x) else _one_pass_moments(x)
    if srm_kernels.applies(x):
        return srm_kernels.style_moments(x)
    if x.shape[2] * x.shape[3] == 1:
        mean = x.flatten(1).to(torch.promote_types(x.dtype, torch.float32))
        return mean, torch.zeros_like(mean)
    # under torch.compile: the compiler fuses the two-pass variance into one loop
    maps = x.to(torch.promote_types(x.dtype, torch.float32))
    return maps.mean(dim=(2, 3)), maps.var(dim=(2, 3))


def _one_pass_moments(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`style_moments` of maps of more than one value, without autograd."""
    num_values = x.shape[2] * x.shape[3]
    sums, deviations = _sums_and_deviations(x)
    return sums / num_values, deviations / (num_values - 1)


class _OnePassMoments(torch.autograd.Function):
    """Moments from a sum and a Euclidean norm, with the exact gradient
    ``grad_mean / n + grad_var * 2 (x - mean) / (n - 1)``, taken around the mean in float32 or wider
    (differentiating the one-pass formula would subtract two terms of the size of the mean)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        mean, var = _one_pass_moments(x)
        ctx.save_for_backward(x, mean)
        return mean, var

    @staticmethod
    def backward(ctx, grad_mean: torch.Tensor, grad_var: torch.Tensor) -> torch.Tensor:
        x, mean = ctx.saved_tensors
        return moments_input_grad(x, mean, grad_mean, grad_var)


def _sums_and_deviations(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Each map's sum and sum of squared deviations from its mean, ``(N, C)`` each in float32 or wider:
    one pass for the sum and one for the Euclidean norm, then ``sum(x^2) - sum(x)^2 / n``. Maps where
    that difference lost its precision to cancellation, or overflowed, are recomputed around their
    mean (:func:`_refine_cancelled`)."""
    num_values = x.shape[2] * x.shape[3]
    # a contiguous map reduces fastest as one flat row
    maps, dims = (x.view(x.shape[0], x.shape[1], num_values), -1) if x.is_contiguous() else (x, (2, 3))
    sums, squares, deviations = _row_sums(maps, dims, num_values)
    return sums, _refine_cancelled(x, sums, squares, deviations)


def _row_sums(maps: torch.Tensor, dims: Union[int, Tuple[int, int]], num_values: int
              ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(sum(x), sum(x^2), sum(x^2) - sum(x)^2 / n)`` over ``dims`` of ``maps``, accumulated in float32
    or wider."""
    dtype = torch.promote_types(maps.dtype, torch.float32)
    sums = maps.sum(dim=dims, dtype=dtype)
    squares = torch.linalg.vector_norm(maps, dim=dims, dtype=dtype).square_()
    return sums, squares, torch.addcmul(squares, sums, sums, value=-1 / num_values)


def _sqrt(t: torch.Tensor) -> torch.Tensor:
    """``sqrt(t)`` for positive ``t`` (inf included) as ``1 / rsqrt(t)``: on the CPU, ``torch.sqrt``
    goes through MKL's vector maths, whose threads cost milliseconds per call on a busy machine,
    while ``rsqrt`` and ``reciprocal`` stay in PyTorch's own kernels."""
    return torch.rsqrt(t).reciprocal()


def _refine_cancelled(x: torch.Tensor, sums: torch.Tensor, squares: torch.Tensor, deviations: torch.Tensor
                      ) -> torch.Tensor:
    """``deviations`` (each map's ``sum(x^2) - sum(x)^2 / n``, clamped at 0), recomputed around the map's
    mean where the difference lost precision to cancellation or overflowed.

    The difference has a relative error of about ``eps(dtype) * sum(x^2) / deviations``; maps where
    that exceeds about 8 ``eps`` of the dtype (1e-6 in float32, 2e-15 in float64: a mean above ~3 standard
    deviations) are recomputed from ``x - mean``, whose sums no longer cancel. So are maps whose sum of
    squares overflowed while their deviations do not (a large mean): the check is written so that it also
    flags the NaN of ``inf - inf``, and passes maps of zeros.
    """
    if deviations.device.type == 'meta':  # shapes only (model statistics): nothing to refine
        return deviations
    limit = 1e-6 / torch.finfo(torch.float32).eps  # sum(x^2) / deviations above 1 + limit: refined
    flagged = torch.add(squares, deviations, alpha=-(1 + limit)).le(0).logical_not_().nonzero()
    if flagged.shape[0]:
        samples, channels = flagged.unbind(1)
        num_values = x.shape[2] * x.shape[3]
        rows = x[samples, channels].flatten(1).to(deviations.dtype)
        centered = rows - (sums[samples, channels] / num_values)[:, None]
        deviations = deviations.index_put_((samples, channels), _row_sums(centered, -1, num_values)[2])
    return deviations.clamp_min_(0)


def _uses_running_statistics(bn: nn.Module) -> bool:
    """Whether a BatchNorm normalises with its running statistics (eval mode, or frozen)."""
    if type(bn) is FrozenBatchNorm2d:
        return True
    return not bn.training and bn.running_mean is not None and bn.running_var is not None


def _affine(bn: nn.Module, mean: torch.Tensor, var: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` with ``bn(x) = x * scale + shift`` when ``bn`` normalises with ``mean``, ``var``."""
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    if bn.bias is None:
        return scale, -(mean * scale)
    return scale, torch.addcmul(bn.bias, mean, scale, value=-1)


def fast_gate(srm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The (N, C) gate ``sigmoid(BN(z))`` of SRM module ``srm`` in float32 (or float64)."""
    if _needs_grad(x) or not _takes_one_pass(x):
        mean, var = style_moments(x)
        return _gate_from_styles(srm, mean, _sqrt(var + srm.eps))
    num_values = x.shape[2] * x.shape[3]
    # without autograd the moments stay unscaled: std = sqrt(deviations + eps (n - 1)) / sqrt(n - 1), and
    # the gate's multiply-adds take the 1 / n and 1 / sqrt(n - 1)
    sums, deviations = _sums_and_deviations(x)
    spreads = _sqrt(deviations.add_(srm.eps * (num_values - 1)))
    return _gate_from_styles(srm, sums, spreads, (1 / num_values, (num_values - 1) ** -0.5))


_POOLED_STYLES = {'mean_std': (0, 1), 'mean': (0,), 'std': (1,)}
"""Which of (mean, std) each style pooling takes, in the order of the columns of SRM's ``cfc``."""


def _gate_from_styles(srm: nn.Module, mean: torch.Tensor, std: torch.Tensor,
                      factors: Tuple[float, float] = (1.0, 1.0)) -> torch.Tensor:
    """SRM's gate from the (N, C) style statistics of its input, ``mean * factors[0]`` and
    ``std * factors[1]``, in their dtype or the wider one of SRM's parameters (as the reference runs SRM's
    BatchNorm). With running statistics SRM's BatchNorm is folded into the weights, unless hooks expect it
    to run or another norm took its place (:func:`_folds_with_running_statistics`)."""
    dtype = torch.promote_types(mean.dtype, srm.cfc.dtype)
    if dtype != mean.dtype:
        mean, std = mean.to(dtype), std.to(dtype)
    styles = (mean, std)
    weights = srm.cfc.to(dtype)
    bn = srm.bn
    running = _folds_with_running_statistics(bn)  # else (hooks, another norm) it runs as a module
    if running:
        scale, z = (t.to(dtype) for t in _affine(bn, bn.running_mean, bn.running_var))
        weights = weights * scale[:, None]
    else:
        z = mean.new_zeros(())
    for style, weight in zip(_POOLED_STYLES[srm.style_pooling], weights.unbind(1)):
        z = torch.addcmul(z, styles[style], weight, value=factors[style])
    if running:
        return torch.sigmoid(z)
    return torch.sigmoid(bn(z[:, :, None, None].to(srm.cfc.dtype)).flatten(1))


def _writable(x: torch.Tensor, shortcut: torch.Tensor, overwrite: bool) -> bool:
    """Whether ``relu(x * gate + shortcut)`` may be written into ``x``: asked to (``overwrite``), of the result's
    dtype, dense, not a view (it would write into another tensor), not an inference tensor outside inference
    mode, and not sharing memory with ``shortcut`` (which the write would change while reading it). Never under
    ``torch.compile``, whose compiler plans the buffers itself."""
    if torch.compiler.is_compiling() or not (overwrite and x.dtype == shortcut.dtype and x._base is None):
        return False
    if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
        return False
    if x.is_inference() and not torch.is_inference_mode_enabled():
        return False
    return x.untyped_storage().data_ptr() != shortcut.untyped_storage().data_ptr()


def gate_residual_relu(x: torch.Tensor, gate: torch.Tensor, shortcut: torch.Tensor,
                       bias: Optional[torch.Tensor] = None, overwrite: bool = True) -> torch.Tensor:
    """``relu(x * gate + bias + shortcut)`` with (N, C) ``gate`` and ``bias``, in the dtype PyTorch promotes
    ``x`` and ``shortcut`` to.

    Without autograd, and with ``overwrite``, the result may be written into ``x`` (as the residual add of
    timm's blocks does), where :func:`_writable` allows it.
    """
    same_dtype = x.dtype == shortcut.dtype
    if same_dtype and srm_kernels.applies(x) and srm_kernels.same_layout(x, shortcut):
        return srm_kernels.affine_residual_relu(x, gate, torch.zeros_like(gate) if bias is None else bias, shortcut)
    if bias is not None and x.element_size() < 4:
        # with a norm folded in, x * gate * a and gate * b nearly cancel: keep float32 until the sum, then
        # round (the ReLU after rounding gives the same values, and autograd keeps its output in x's dtype)
        out = torch.addcmul(bias[:, :, None, None], x, gate[:, :, None, None]).add_(shortcut)
        return out.to(torch.result_type(x, shortcut)).relu_()
    scale = gate.to(x.dtype)[:, :, None, None]
    if not _writable(x, shortcut, overwrite) or _needs_grad(x, gate, shortcut) or (
            bias is not None and bias.requires_grad):
        out = torch.addcmul(shortcut, x, scale)
        return torch.relu(out if bias is None else out + bias.to(x.dtype)[:, :, None, None])
    out = torch.addcmul(shortcut, x, scale, out=x)
    if bias is not None:
        out += bias.to(x.dtype)[:, :, None, None]
    return out.relu_()


def norm_folds_into_srm(norm: nn.Module, y: torch.Tensor) -> bool:
    """Whether ``norm`` (the layer before SRM) folds into SRM's pass over its input ``y``.

    ``norm`` must be a plain BatchNorm2d, a SyncBatchNorm in eval mode or a frozen BatchNorm,
    without hooks that expect it to run. Folding pays where the Triton kernels take ``y`` (their
    shifted one-pass statistics stay exact on the raw convolution output) and where autograd
    records (the norm's output is then not kept). Elsewhere, in inference, the norm folds into the
    convolution before it where that pays (:func:`conv_folds_norm`); where it does not, a separate
    BatchNorm costs the same passes as the folded apply, while the one-pass statistics of the raw
    convolution output need the two-pass refinement far more often than those of its normalised
    output.
    """
    # (listing the norm's parameters costs microseconds: only where autograd records)
    if not (srm_kernels.applies(y) or (torch.is_grad_enabled() and _needs_grad(y, *norm.parameters()))):
        return False
    return _foldable_norm(norm)


def _foldable_norm(norm: nn.Module) -> bool:
    """Whether the fast path may fold ``norm`` away: a plain BatchNorm2d, a frozen BatchNorm or a
    SyncBatchNorm in eval mode, without hooks that expect it to run. Their exact types: a subclass may do
    more than normalise (timm's ``SyncBatchNormAct``, which ``convert_sync_batchnorm`` makes of a
    ``BatchNormAct2d``, applies its activation too)."""
    if has_hooks(norm):
        return False
    if type(norm) in (nn.BatchNorm2d, FrozenBatchNorm2d):
        return True
    return type(norm) is nn.SyncBatchNorm and _uses_running_statistics(norm)


def _folds_with_running_statistics(norm: nn.Module) -> bool:
    """Whether ``norm`` folds (:func:`_foldable_norm`) as the affine map of its running statistics."""
    return _foldable_norm(norm) and _uses_running_statistics(norm)


def conv_folds_norm(conv: nn.Module, norm: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``norm(conv(x))`` runs as one convolution with ``norm`` folded into its weight and bias
    (:func:`conv_norm`): inference without autograd, outside ``torch.compile`` and where the Triton
    kernels do not take ``x`` (they fold the norm into SRM's passes); a plain Conv2d and a BatchNorm
    that normalises with its running statistics, neither with hooks; and a weight smaller than the
    convolution's output, since folding costs a pass over the weight and saves the norm's pass over
    the output."""
    if torch.is_grad_enabled() or torch.compiler.is_compiling() or srm_kernels.applies(x):
        return False
    if type(conv) is not nn.Conv2d or has_hooks(conv):
        return False
    if not _folds_with_running_statistics(norm):
        return False
    output_size = x.shape[0] * conv.out_channels * x.shape[2] * x.shape[3] // (conv.stride[0] * conv.stride[1])
    return conv.weight.numel() < output_size


def conv_norm(conv: nn.Conv2d, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``norm(conv(x))`` for a BatchNorm with running statistics, as one convolution whose weight and
    bias carry the norm's per-channel scale and shift."""
    scale, shift = _affine(norm, norm.running_mean, norm.running_var)
    if conv.bias is not None:
        shift = torch.addcmul(shift, conv.bias, scale)
    weight = conv.weight * scale[:, None, None, None]
    return conv._conv_forward(x, weight.to(conv.weight.dtype), shift.to(conv.weight.dtype))


def _batch_statistics(bn: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor, num_values: int
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
    """BatchNorm's per-channel batch mean and (biased) variance from the per-map moments of N maps
    of ``num_values`` values; updates the running statistics as :class:`~torch.nn.BatchNorm2d` does: in
    training where it tracks them, counting an empty batch but leaving the statistics as they are."""
    count = mean.shape[0] * num_values
    if count == 1:
        raise ValueError(f'Expected more than 1 value per channel when training, got {count}')
    batch_mean = mean.mean(dim=0)
    # the variance of the union of equally sized maps: within-map plus between-map variance
    batch_var = (var * ((num_values - 1) / num_values)).mean(dim=0) + (mean - batch_mean).square().mean(dim=0)
    if bn.training and bn.track_running_stats and bn.running_mean is not None:
        factor = _momentum_step(bn)
        if count:
            with torch.no_grad():
                bn.running_mean.lerp_(batch_mean.to(bn.running_mean.dtype), factor)
                bn.running_var.lerp_((batch_var * (count / (count - 1))).to(bn.running_var.dtype), factor)
    return batch_mean, batch_var


def _takes_folded_kernel(norm: nn.Module, srm: nn.Module, y: torch.Tensor, shortcut: torch.Tensor,
                         shortcut_norm: Optional[nn.Module] = None) -> bool:
    """Whether the tail runs as :func:`~srm_zoo.layers.srm_kernels.folded_block_tail`: nothing needs
    gradients and the BatchNorms (``shortcut_norm`` too, where given) fold (:func:`_foldable_norm`) and are
    affine with running statistics."""
    norms = (norm, srm.bn) if shortcut_norm is None else (norm, srm.bn, shortcut_norm)
    if not all(_folds_with_running_statistics(bn) and bn.weight is not None and bn.bias is not None for bn in norms):
        return False
    return not _needs_grad(y, shortcut, srm.cfc, *(t for bn in norms for t in (bn.weight, bn.bias)))


def _kernel_train_state(bn: nn.Module) -> Optional[Tuple[Optional[torch.Tensor], ...]]:
    """``(weight, bias, running_mean, running_var, num_batches_tracked)`` of a BatchNorm that the training
    kernels take (a plain BatchNorm2d in training, affine, tracking running statistics); None for any
    other norm. Read from the module's own dicts: through ``Module.__getattr__`` each tensor would
    cost a Python call, about a microsecond, and a block tail reads ten."""
    if type(bn) is not nn.BatchNorm2d or not (bn.training and bn.affine and bn.track_running_stats):
        return None
    params, buffers = bn._parameters, bn._buffers
    if buffers['running_mean'] is None:
        return None
    return (params['weight'], params['bias'], buffers['running_mean'], buffers['running_var'],
            buffers.get('num_batches_tracked'))


def _momentum_step(bn: nn.BatchNorm2d) -> float:
    """Counts a training batch of ``bn`` (where it counts them) and returns its running-statistics
    momentum for it, as :class:`~torch.nn.BatchNorm2d` does."""
    if bn.num_batches_tracked is None:
        return 0.0 if bn.momentum is None else bn.momentum
    bn.num_batches_tracked.add_(1)
    if bn.momentum is None:  # cumulative moving average
        return 1.0 / bn.num_batches_tracked.item()
    return bn.momentum


def _kernel_tail_train(norm: nn.Module, srm: nn.Module, y: torch.Tensor, shortcut: torch.Tensor
                       ) -> Optional[torch.Tensor]:
    """The training tail as :func:`~srm_zoo.layers.srm_kernels.block_tail_train`, or None where the gate
    kernel cannot hold the batch or either BatchNorm is not one the kernels take
    (:func:`_kernel_train_state`). The kernels also count the batch where both momenta are fixed (a
    cumulative average needs the new count first: counted here)."""
    if y.shape[0] > srm_kernels.GATE_TRAIN_MAX_BATCH:
        return None
    norm_state = _kernel_train_state(norm)  # None in eval mode: SRM's BatchNorm is then not looked up
    if norm_state is None:
        return None
    srm_bn = srm.bn
    srm_state = _kernel_train_state(srm_bn)
    if srm_state is None:
        return None
    norm_weight, norm_bias, norm_mean, norm_var, norm_batches = norm_state
    srm_weight, srm_bias, srm_mean, srm_var, srm_batches = srm_state
    buffers = (norm_mean, norm_var, srm_mean, srm_var)
    momenta = (norm.momentum, srm_bn.momentum)
    if None in momenta or norm_batches is None or srm_batches is None:
        running = srm_kernels.RunningUpdate(buffers, (_momentum_step(norm), _momentum_step(srm_bn)))
    else:
        running = srm_kernels.RunningUpdate(buffers, momenta, (norm_batches, srm_batches))
    return srm_kernels.block_tail_train(y, shortcut, (norm_weight, norm_bias, srm.cfc, srm_weight, srm_bias), running,
                                        (norm.eps, srm_bn.eps, srm.eps), srm.style_pooling)


def shortcut_norm_to_fold(downsample: Optional[nn.Module], y: torch.Tensor) -> Optional[nn.Module]:
    """The last module of a block's ``downsample`` where the inference tail on the Triton kernels can take
    it (so that the shortcut need not pass it as a module, a write and a read of the shortcut fewer):
    ``downsample`` an ``nn.Sequential`` ending in a foldable BatchNorm with running statistics
    (:func:`_foldable_norm`), neither with hooks, no autograd, and ``y`` (the last convolution's output)
    on the kernels. Else None."""
    if downsample is None or torch.is_grad_enabled() or not srm_kernels.applies(y):
        return None
    if type(downsample) is not nn.Sequential or len(downsample) < 2 or has_hooks(downsample):
        return None
    norm = downsample[-1]
    if not _folds_with_running_statistics(norm) or norm.weight is None or norm.bias is None:
        return None
    return norm


def running_norm_state(bn: nn.Module) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(weight, bias, running_mean, running_var)`` of a BatchNorm, as the inference kernels take it."""
    return bn.weight, bn.bias, bn.running_mean, bn.running_var


def _folded_kernel_tail(norm: nn.Module, srm: nn.Module, y: torch.Tensor, shortcut: torch.Tensor,
                        shortcut_norm: Optional[nn.Module] = None) -> torch.Tensor:
    """The tail as :func:`~srm_zoo.layers.srm_kernels.folded_block_tail` (see :func:`_takes_folded_kernel`),
    the shortcut passing ``shortcut_norm`` in its apply where given."""
    srm_bn = srm.bn
    shortcut_bn = () if shortcut_norm is None else running_norm_state(shortcut_norm)
    return srm_kernels.folded_block_tail(
        y, shortcut, *running_norm_state(norm), norm.eps, srm.cfc, *running_norm_state(srm_bn), srm_bn.eps, srm.eps,
        srm.style_pooling, shortcut_bn, 0.0 if shortcut_norm is None else shortcut_norm.eps)


def norm_gate_residual_relu(norm: nn.Module, srm: nn.Module, y: torch.Tensor, shortcut: torch.Tensor,
                            shortcut_norm: Optional[nn.Module] = None) -> torch.Tensor:
    """``relu(srm(norm(y)) + shortcut_norm(shortcut))`` in two passes over ``y``, for a ``norm`` that
    :func:`norm_folds_into_srm`: the statistics of ``y``, then the fused apply. ``shortcut_norm`` (from
    :func:`shortcut_norm_to_fold`, or None where the shortcut is final) folds into the apply where the
    tail runs as the inference kernel, and runs as a module elsewhere.

    On CUDA the whole tail is one call (inference, or training with plain BatchNorms) whose (N, C)
    gate is one Triton kernel; elsewhere the gate is differentiable PyTorch ops over (N, C) tensors
    between the two passes.
    """
    # the kernels write in y's dtype: a shortcut of another dtype takes PyTorch's promotion below
    on_triton = srm_kernels.applies(y) and y.shape == shortcut.shape and y.dtype == shortcut.dtype
    if shortcut_norm is not None:
        if on_triton and _takes_folded_kernel(norm, srm, y, shortcut, shortcut_norm):
            return _folded_kernel_tail(norm, srm, y, shortcut, shortcut_norm)
        shortcut = shortcut_norm(shortcut)  # no kernel here takes it
    if on_triton:
        out = _kernel_tail_train(norm, srm, y, shortcut)
        if out is not None:
            return out
        if _takes_folded_kernel(norm, srm, y, shortcut):
            return _folded_kernel_tail(norm, srm, y, shortcut)
    mean_y, var_y = style_moments(y)
    if _uses_running_statistics(norm):
        center, variance = norm.running_mean, norm.running_var
    else:
        center, variance = _batch_statistics(norm, mean_y, var_y, y.shape[2] * y.shape[3])
    scale, shift = (t.to(mean_y.dtype) for t in _affine(norm, center, variance))
    # SRM's statistics of x = y * scale + shift
    mean = mean_y * scale + shift
    std = _sqrt(var_y * scale.square() + srm.eps)
    gate = _gate_from_styles(srm, mean, std)
    return gate_residual_relu(y, gate * scale, shortcut, bias=gate * shift)
