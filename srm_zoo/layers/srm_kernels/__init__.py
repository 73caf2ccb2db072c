"""Triton kernels for SRM on CUDA, registered as ``torch.library`` custom ops.

Ops (each with a fake implementation, so ``torch.compile`` keeps them in its graph; the
differentiable ones with autograd formulas):

* ``srm_zoo::style_moments(x) -> (mean, var)``: per-(n, c) mean and unbiased variance in one pass,
  accumulated in float32 (float64 for float64 inputs) after shifting each map by its first value;
* ``srm_zoo::affine_residual_relu(x, scale, bias, shortcut) -> relu(x * scale + bias + shortcut)``
  with per-(n, c) ``scale`` and ``bias`` (SRM's gate, with the block's BatchNorm folded in);
* ``srm_zoo::style_moments_backward`` and ``srm_zoo::affine_residual_relu_backward``: their gradients;
* ``srm_zoo::folded_block_tail``: a block's inference tail, ``relu(SRM(BN(y)) + shortcut)``, as the
  statistics kernel, one kernel for every (n, c) gate with both BatchNorms folded in, and the
  fused apply; or, on NCHW maps of 28 x 28 or more where one program for each sample and block of
  channels fills the GPU (where that measured faster), as one kernel that sweeps each program's maps
  twice, the second time from the caches where they hold them.
  Given a BatchNorm for the shortcut (a downsample's), the apply passes the shortcut through it;
* ``srm_zoo::folded_block_tail_train`` (and its backward): the same tail in training, both
  BatchNorms on batch statistics (the gate and its gradient one kernel each way), with
  ``srm_zoo::update_running_stats`` for both BatchNorms' running statistics. ``block_tail_train``
  calls them under ``torch.compile``; in eager mode it runs the same kernels through a plain
  autograd function (the gate kernel moving the running statistics and batch counters too), since
  the custom ops' dispatch costs the host more time than the GPU spends in the tail.

A backward pass that records a graph (``create_graph=True``) takes the gradients of
``style_moments``, ``affine_residual_relu`` and the eager training tail in PyTorch operations
(:mod:`.differentiable`), so that second derivatives through them are exact; under ``torch.compile``
the backward kernels always run. ``folded_block_tail_train``'s backward runs once only.

The kernels (:mod:`._kernels`) read NCHW and channels_last tensors alike: a map is addressed by its
sample, channel and flattened spatial strides, and the tile shape (:mod:`.launch`) follows the
contiguous dimension. Their reductions use no atomics: programs that share a map each write a part,
and the kernels that read the sums add the parts in order, so results repeat bit for bit.

The kernels run on CUDA tensors. For tests without a GPU, Triton's interpreter runs them on CPU
tensors when both ``TRITON_INTERPRET=1`` (set before triton is imported) and
``SRM_ZOO_TRITON_ON_CPU=1`` are set.
"""
from .launch import CPU_TEST_ENV, GATE_TRAIN_MAX_BATCH, RunningUpdate, applies, available, same_layout
from .ops import (affine_residual_relu, block_tail_train, folded_block_tail, folded_block_tail_train, style_moments,
                  update_running_stats)

__all__ = ['CPU_TEST_ENV', 'GATE_TRAIN_MAX_BATCH', 'RunningUpdate', 'available', 'applies', 'same_layout',
           'style_moments', 'affine_residual_relu', 'block_tail_train', 'folded_block_tail', 'folded_block_tail_train',
           'update_running_stats']
