"""SRM's Triton kernels as ``torch.library`` custom ops: fake implementations for ``torch.compile``
and autograd formulas for the differentiable ones; and :func:`block_tail_train`, which runs the
training tail through the custom ops under ``torch.compile`` and through a plain autograd function
in eager mode."""
from typing import Sequence, Tuple

import torch

from . import launch
from .differentiable import affine_residual_relu_grads, block_tail_grads, moments_input_grad, records_graph

__all__ = ['style_moments', 'affine_residual_relu', 'folded_block_tail', 'folded_block_tail_train',
           'update_running_stats', 'block_tail_train']


@torch.library.custom_op('srm_zoo::style_moments', mutates_args=())
def style_moments(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-(n, c) mean and unbiased variance of ``x`` (N, C, H, W), float32 or float64; the variance
    of a single value is 0."""
    return launch.moments(x)


@style_moments.register_fake
def _(x):
    shape, dtype = x.shape[:2], launch.acc_dtype(x)
    return x.new_empty(shape, dtype=dtype), x.new_empty(shape, dtype=dtype)


@torch.library.custom_op('srm_zoo::style_moments_backward', mutates_args=())
def style_moments_backward(x: torch.Tensor, mean: torch.Tensor, grad_mean: torch.Tensor,
                           grad_var: torch.Tensor) -> torch.Tensor:
    """Gradient of :func:`style_moments` with respect to ``x``."""
    return launch.input_grad(x, mean, grad_mean, grad_var)


@style_moments_backward.register_fake
def _(x, mean, grad_mean, grad_var):
    return torch.empty_like(x)


def _style_moments_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[0], output[0])


def _style_moments_grad(ctx, grad_mean, grad_var):
    x, mean = ctx.saved_tensors
    grad_mean = torch.zeros_like(mean) if grad_mean is None else grad_mean
    grad_var = torch.zeros_like(mean) if grad_var is None else grad_var
    if records_graph():
        return moments_input_grad(x, mean, grad_mean, grad_var)
    return style_moments_backward(x, mean, grad_mean, grad_var)


style_moments.register_autograd(_style_moments_grad, setup_context=_style_moments_setup)


@torch.library.custom_op('srm_zoo::affine_residual_relu', mutates_args=())
def affine_residual_relu(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                         shortcut: torch.Tensor) -> torch.Tensor:
    """``relu(x * scale + bias + shortcut)`` in ``x``'s dtype, with (N, C) ``scale`` and ``bias``."""
    return launch.affine_residual_relu(x, scale, bias, shortcut)


@affine_residual_relu.register_fake
def _(x, scale, bias, shortcut):
    return torch.empty_like(x)


@torch.library.custom_op('srm_zoo::affine_residual_relu_backward', mutates_args=())
def affine_residual_relu_backward(grad: torch.Tensor, out: torch.Tensor, x: torch.Tensor, scale: torch.Tensor,
                                  shortcut_dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of :func:`affine_residual_relu` for ``x``, for ``scale`` and ``bias`` (the rows of one
    (2, N, C) tensor) and for ``shortcut``."""
    grad_x, grad_gate_parts, grad_shortcut = launch.affine_residual_relu_backward(grad, out, x, scale, shortcut_dtype)
    return grad_x, grad_gate_parts.sum(0), grad_shortcut


@affine_residual_relu_backward.register_fake
def _(grad, out, x, scale, shortcut_dtype):
    return torch.empty_like(x), scale.new_empty(2, *scale.shape), torch.empty_like(x, dtype=shortcut_dtype)


def _affine_residual_relu_setup(ctx, inputs, output) -> None:
    x, scale, bias, shortcut = inputs
    ctx.bias_dtype = bias.dtype
    ctx.shortcut_dtype = shortcut.dtype
    ctx.save_for_backward(x, scale, output)


def _affine_residual_relu_grad(ctx, grad):
    x, scale, out = ctx.saved_tensors
    if records_graph():
        grad_x, grad_scale, grad_bias, grad_shortcut = affine_residual_relu_grads(grad, out, x, scale)
        return grad_x, grad_scale, grad_bias.to(ctx.bias_dtype), grad_shortcut.to(ctx.shortcut_dtype)
    grad_x, grad_gate, grad_shortcut = affine_residual_relu_backward(grad, out, x, scale, ctx.shortcut_dtype)
    return grad_x, grad_gate[0], grad_gate[1].to(ctx.bias_dtype), grad_shortcut


affine_residual_relu.register_autograd(_affine_residual_relu_grad, setup_context=_affine_residual_relu_setup)


@torch.library.custom_op('srm_zoo::folded_block_tail', mutates_args=())
def folded_block_tail(y: torch.Tensor, shortcut: torch.Tensor, norm_weight: torch.Tensor, norm_bias: torch.Tensor,
                      norm_mean: torch.Tensor, norm_var: torch.Tensor, norm_eps: float, cfc: torch.Tensor,
                      srm_weight: torch.Tensor, srm_bias: torch.Tensor, srm_mean: torch.Tensor, srm_var: torch.Tensor,
                      srm_bn_eps: float, srm_eps: float, style_pooling: str, shortcut_norm: Sequence[torch.Tensor],
                      shortcut_norm_eps: float) -> torch.Tensor:
    """Inference tail of an SRM block, ``relu(SRM(norm(y)) + shortcut)``, for a BatchNorm ``norm`` and an
    SRM whose BatchNorm both normalise with running statistics: the statistics of ``y``, the (n, c)
    gate with both BatchNorms folded in, the fused apply; in one kernel where that is the faster
    (:func:`.launch.takes_one_pass`). Where ``shortcut_norm`` gives a BatchNorm's weight, bias, running
    mean and running var (``[]``: none), the shortcut passes that norm first. Forward only."""
    return launch.folded_block_tail(y, shortcut, (norm_weight, norm_bias, norm_mean, norm_var), norm_eps, cfc,
                                    (srm_weight, srm_bias, srm_mean, srm_var), srm_bn_eps, srm_eps, style_pooling,
                                    tuple(shortcut_norm), shortcut_norm_eps)


@folded_block_tail.register_fake
def _(y, shortcut, norm_weight, norm_bias, norm_mean, norm_var, norm_eps, cfc, srm_weight, srm_bias, srm_mean,
      srm_var, srm_bn_eps, srm_eps, style_pooling, shortcut_norm, shortcut_norm_eps):
    return torch.empty_like(y)


@torch.library.custom_op('srm_zoo::folded_block_tail_train', mutates_args=())
def folded_block_tail_train(y: torch.Tensor, shortcut: torch.Tensor, norm_weight: torch.Tensor,
                            norm_bias: torch.Tensor, cfc: torch.Tensor, srm_weight: torch.Tensor,
                            srm_bias: torch.Tensor, norm_eps: float, srm_bn_eps: float, srm_eps: float,
                            style_pooling: str
                            ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training tail of an SRM block, ``relu(SRM(norm(y)) + shortcut)`` with both BatchNorms on batch
    statistics (:func:`.launch.block_tail_train`).

    Returns the output, the batch statistics (4, C) for :func:`update_running_stats`, and the moments
    and ``k`` its backward pass reuses.
    """
    out, mean, var, scale, stats = launch.block_tail_train(
        y, shortcut, (norm_weight, norm_bias, cfc, srm_weight, srm_bias), (norm_eps, srm_bn_eps, srm_eps),
        style_pooling)
    return out, stats, mean, var, scale


@folded_block_tail_train.register_fake
def _(y, shortcut, norm_weight, norm_bias, cfc, srm_weight, srm_bias, norm_eps, srm_bn_eps, srm_eps, style_pooling):
    per_map = y.new_empty(y.shape[:2], dtype=launch.acc_dtype(y))
    return (torch.empty_like(y), per_map.new_empty(4, y.shape[1]), per_map, torch.empty_like(per_map),
            torch.empty_like(per_map))


@torch.library.custom_op('srm_zoo::folded_block_tail_train_backward', mutates_args=())
def folded_block_tail_train_backward(grad: torch.Tensor, out: torch.Tensor, y: torch.Tensor, mean: torch.Tensor,
                                     var: torch.Tensor, scale: torch.Tensor, norm_weight: torch.Tensor,
                                     norm_bias: torch.Tensor, cfc: torch.Tensor, srm_weight: torch.Tensor,
                                     srm_bias: torch.Tensor, norm_eps: float, srm_bn_eps: float, srm_eps: float,
                                     style_pooling: str, shortcut_dtype: torch.dtype
                                     ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of :func:`folded_block_tail_train` (:func:`.launch.block_tail_train_backward`)."""
    return launch.block_tail_train_backward(
        grad, out, y, mean, var, scale, (norm_weight, norm_bias, cfc, srm_weight, srm_bias),
        (norm_eps, srm_bn_eps, srm_eps), style_pooling, shortcut_dtype)


@folded_block_tail_train_backward.register_fake
def _(grad, out, y, mean, var, scale, norm_weight, norm_bias, cfc, srm_weight, srm_bias, norm_eps, srm_bn_eps,
      srm_eps, style_pooling, shortcut_dtype):
    return (torch.empty_like(y), torch.empty_like(y, dtype=shortcut_dtype), mean.new_empty(4, y.shape[1]),
            mean.new_empty(cfc.shape))


def _param_grads(grad_params: torch.Tensor, grad_cfc: torch.Tensor, params: Sequence[torch.Tensor]
                 ) -> Tuple[torch.Tensor, ...]:
    """The gradients of ``params`` (the norm's weight and bias, ``cfc``, SRM's BatchNorm weight and bias)
    from :func:`.launch.block_tail_train_backward`'s (4, C) rows and ``cfc`` gradient, in their dtypes."""
    norm_weight, norm_bias, srm_weight, srm_bias = grad_params.unbind()
    grads = (norm_weight, norm_bias, grad_cfc, srm_weight, srm_bias)
    if all(param.dtype == grad_cfc.dtype for param in params):
        return grads
    return tuple(grad.to(param.dtype) for grad, param in zip(grads, params))


def _folded_block_tail_train_setup(ctx, inputs, output) -> None:
    y, shortcut, *params = inputs[:7]
    out, stats, mean, var, scale = output
    ctx.constants = inputs[7:]
    ctx.shortcut_dtype = shortcut.dtype
    ctx.mark_non_differentiable(stats, mean, var, scale)
    ctx.save_for_backward(out, y, mean, var, scale, *params)


def _folded_block_tail_train_grad(ctx, grad, *unused_grads):
    out, y, mean, var, scale, *params = ctx.saved_tensors
    grad_y, grad_shortcut, grad_params, grad_cfc = folded_block_tail_train_backward(
        grad, out, y, mean, var, scale, *params, *ctx.constants, ctx.shortcut_dtype)
    return (grad_y, grad_shortcut, *_param_grads(grad_params, grad_cfc, params), None, None, None, None)


folded_block_tail_train.register_autograd(_folded_block_tail_train_grad, setup_context=_folded_block_tail_train_setup)


@torch.library.custom_op('srm_zoo::update_running_stats', mutates_args=(
    'norm_running_mean', 'norm_running_var', 'srm_running_mean', 'srm_running_var'))
def update_running_stats(stats: torch.Tensor, norm_running_mean: torch.Tensor, norm_running_var: torch.Tensor,
                         srm_running_mean: torch.Tensor, srm_running_var: torch.Tensor, norm_count: int,
                         srm_count: int, norm_factor: float, srm_factor: float) -> None:
    """Moves both BatchNorms' running statistics towards the batch statistics of
    :func:`folded_block_tail_train` (momentum ``norm_factor``, ``srm_factor``; variances made unbiased
    over ``norm_count``, ``srm_count`` values) in one kernel."""
    launch.update_running_stats(stats, (norm_running_mean, norm_running_var, srm_running_mean, srm_running_var),
                                (norm_count, srm_count), (norm_factor, srm_factor))


class _BlockTailTrain(torch.autograd.Function):
    """Eager twin of :func:`folded_block_tail_train` and :func:`update_running_stats`: the same kernels
    (the gate kernel also moving the running statistics) without the custom ops' dispatch, which costs
    the host more time per call than the GPU spends in a block tail's kernels."""

    @staticmethod
    def forward(ctx, y, shortcut, norm_weight, norm_bias, cfc, srm_weight, srm_bias, running, eps, style_pooling):
        params = (norm_weight, norm_bias, cfc, srm_weight, srm_bias)
        out, mean, var, scale, _ = launch.block_tail_train(y, shortcut, params, eps, style_pooling, running=running)
        ctx.constants = (eps, style_pooling)
        ctx.shortcut_dtype = shortcut.dtype
        ctx.save_for_backward(out, y, mean, var, scale, *params)
        return out

    @staticmethod
    def backward(ctx, grad):
        out, y, mean, var, scale, *params = ctx.saved_tensors
        eps, style_pooling = ctx.constants
        if records_graph():
            return (*block_tail_grads(grad, out, y, params, eps, style_pooling, ctx.shortcut_dtype), None, None, None)
        grad_y, grad_shortcut, grad_params, grad_cfc = launch.block_tail_train_backward(
            grad, out, y, mean, var, scale, params, eps, style_pooling, ctx.shortcut_dtype)
        return (grad_y, grad_shortcut, *_param_grads(grad_params, grad_cfc, params), None, None, None)


def block_tail_train(y: torch.Tensor, shortcut: torch.Tensor, params: Sequence[torch.Tensor],
                     running: launch.RunningUpdate, eps: Tuple[float, float, float], style_pooling: str
                     ) -> torch.Tensor:
    """``relu(SRM(norm(y)) + shortcut)`` in training, both BatchNorms on batch statistics, their running
    statistics (and batch counters, where given) moved as ``running`` says. ``params``: the norm's weight
    and bias, ``cfc``, SRM's BatchNorm weight and bias; ``eps``: the norm's, SRM's BatchNorm's and SRM's.

    Under ``torch.compile`` the custom ops (which the compiler keeps in its graph); in eager mode
    :class:`_BlockTailTrain`.
    """
    if torch.compiler.is_compiling():
        out, stats, *_ = folded_block_tail_train(y, shortcut, *params, *eps, style_pooling)
        update_running_stats(stats, *running.buffers, y.numel() // y.shape[1], y.shape[0], *running.factors)
        for counter in running.counters or ():
            counter.add_(1)
        return out
    return _BlockTailTrain.apply(y, shortcut, *params, running, eps, style_pooling)
