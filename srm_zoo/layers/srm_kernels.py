"""Triton kernels for SRM on CUDA, registered as ``torch.library`` custom ops.

Ops (each with a fake implementation, so ``torch.compile`` keeps them in its graph; the
differentiable ones with autograd formulas):

* ``srm_zoo::style_moments(x) -> (mean, var)``: per-(n, c) mean and unbiased variance in one pass,
  accumulated in float32 (float64 for float64 inputs) after shifting each map by its first value;
* ``srm_zoo::affine_residual_relu(x, scale, bias, shortcut) -> relu(x * scale + bias + shortcut)``
  with per-(n, c) ``scale`` and ``bias`` (SRM's gate, with the block's BatchNorm folded in);
* ``srm_zoo::style_moments_backward`` and ``srm_zoo::affine_residual_relu_backward``: their gradients;
* ``srm_zoo::folded_gate_train`` (with its backward): a block's training-mode gate from the moments
  of its convolution output, both BatchNorms on batch statistics, in one kernel per direction, and
  ``srm_zoo::update_running_stats`` for both BatchNorms' running statistics in one more;
* ``srm_zoo::folded_block_tail``: a block's inference tail, ``relu(SRM(BN(y)) + shortcut)``, as the
  statistics kernel, one kernel for every (n, c) gate with both BatchNorms folded in, and the
  fused apply.

The kernels read NCHW and channels_last tensors alike: a map is addressed by its sample, channel
and flattened spatial strides, and the tile shape follows the contiguous dimension.

The kernels run on CUDA tensors. For tests without a GPU, Triton's interpreter runs them on CPU
tensors when both ``TRITON_INTERPRET=1`` (set before triton is imported) and
``SRM_ZOO_TRITON_ON_CPU=1`` are set.
"""
import functools
import os
from typing import Optional, Tuple

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with torch on x86_64 Linux
    triton = None

__all__ = ['CPU_TEST_ENV', 'GATE_TRAIN_MAX_BATCH', 'available', 'applies', 'same_layout', 'style_moments',
           'affine_residual_relu', 'folded_block_tail', 'folded_gate_train', 'update_running_stats']

CPU_TEST_ENV = 'SRM_ZOO_TRITON_ON_CPU'
_TILE = 2048  # elements per program tile
_TARGET_PROGRAMS = 1024  # reductions split the spatial axis until about this many programs run
_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def available() -> bool:
    """Whether triton can be imported."""
    return triton is not None


def _map_strides(x: torch.Tensor) -> Optional[Tuple[int, int, int]]:
    """(sample, channel, spatial) strides where H and W flatten into one strided axis."""
    _, _, height, width = x.shape
    s_n, s_c, s_h, s_w = x.stride()
    if height > 1 and width > 1 and s_h != width * s_w:
        return None
    return s_n, s_c, (s_w if width > 1 else s_h)


def applies(x: torch.Tensor) -> bool:
    """Whether the kernels take ``x``: a 4-d floating tensor on CUDA (or on the CPU in interpreter tests)."""
    if triton is None or x.dim() != 4 or x.dtype not in _DTYPES or x.numel() == 0:
        return False
    if not x.is_cuda:
        if x.device.type != 'cpu' or os.environ.get(CPU_TEST_ENV) != '1' or os.environ.get('TRITON_INTERPRET') != '1':
            return False
    return _map_strides(x) is not None


def same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape and strides (the fused apply reads both with one set of offsets)."""
    return a.shape == b.shape and a.stride() == b.stride()


def _like(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``t`` with ``ref``'s strides (a copy only where they differ)."""
    if same_layout(t, ref):
        return t
    return torch.empty_like(ref, dtype=t.dtype).copy_(t)


def _tiles(x: torch.Tensor) -> Tuple[int, int, int, int, int, int, int]:
    """Channels, spatial size, strides and the (channel, spatial) tile for ``x``."""
    _, channels, height, width = x.shape
    s_n, s_c, s_hw = _map_strides(x)
    hw = height * width
    if s_c == 1 and s_hw != 1:  # channels_last: channels are contiguous
        block_c = min(triton.next_power_of_2(channels), 128)
        block_hw = max(1, min(triton.next_power_of_2(hw), _TILE // block_c))
    else:
        block_hw = min(triton.next_power_of_2(hw), 512)
        block_c = max(1, min(triton.next_power_of_2(channels), _TILE // block_hw))
    return channels, hw, s_n, s_c, s_hw, block_c, block_hw


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def _constants(like: torch.Tensor, *values: float) -> torch.Tensor:
    """``values`` as a tensor of ``like``'s dtype and device (Triton passes Python floats as float32,
    which would round epsilons and momenta of float64 models)."""
    return _cached_constants(values, like.dtype, like.device)


@functools.lru_cache(maxsize=256)
def _cached_constants(values: Tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, device=device)


if triton is not None:
    @triton.jit
    def _stats_kernel(x_ptr, sums_ptr, C, NC, HW, s_n, s_c, s_hw, num_cblocks, split,
                      BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
        """Adds each map's sum and sum of squares, after subtracting its first value, into ``sums``
        (2, N, C); the spatial axis may be split over ``split`` programs."""
        pid = tl.program_id(0)
        n = (pid // num_cblocks).to(tl.int64)
        c = (pid % num_cblocks) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_mask = c < C
        acc_dtype = sums_ptr.dtype.element_ty
        starts = x_ptr + n * s_n + c * s_c
        shift = tl.load(starts, mask=c_mask, other=0.).to(acc_dtype)
        acc = tl.zeros((BLOCK_C, BLOCK_HW), dtype=acc_dtype)
        acc_sq = tl.zeros((BLOCK_C, BLOCK_HW), dtype=acc_dtype)
        for start in range(tl.program_id(1) * BLOCK_HW, HW, split * BLOCK_HW):
            hw = start + tl.arange(0, BLOCK_HW)
            mask = c_mask[:, None] & (hw[None, :] < HW)
            v = tl.load(starts[:, None] + hw[None, :] * s_hw, mask=mask, other=0.).to(acc_dtype)
            v = tl.where(mask, v - shift[:, None], 0.)
            acc += v
            acc_sq += v * v
        tl.atomic_add(sums_ptr + n * C + c, tl.sum(acc, 1), mask=c_mask)
        tl.atomic_add(sums_ptr + NC + n * C + c, tl.sum(acc_sq, 1), mask=c_mask)

    @triton.jit
    def _load_moments(x_ptr, sums_ptr, index, mask, C, NC, HW, s_n, s_c):
        """Mean and unbiased variance (0 for a single value) of the maps ``index`` (flat n * C + c)."""
        acc_dtype = sums_ptr.dtype.element_ty
        n = (index // C).to(tl.int64)
        shift = tl.load(x_ptr + n * s_n + (index % C) * s_c, mask=mask, other=0.).to(acc_dtype)
        total = tl.load(sums_ptr + index, mask=mask, other=0.)
        total_sq = tl.load(sums_ptr + NC + index, mask=mask, other=0.)
        mean = shift + total / HW
        var = tl.maximum((total_sq - total * total / HW) / tl.maximum(HW - 1, 1), 0.)
        return mean, var

    @triton.jit
    def _moments_kernel(x_ptr, sums_ptr, mean_ptr, var_ptr, C, NC, HW, s_n, s_c, BLOCK: tl.constexpr):
        index = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = index < NC
        mean, var = _load_moments(x_ptr, sums_ptr, index, mask, C, NC, HW, s_n, s_c)
        tl.store(mean_ptr + index, mean, mask=mask)
        tl.store(var_ptr + index, var, mask=mask)

    @triton.jit
    def _running_affine(weight_ptr, bias_ptr, mean_ptr, var_ptr, c, mask, eps, acc_dtype: tl.constexpr):
        """``(scale, shift)`` of a BatchNorm that normalises with its running statistics."""
        weight = tl.load(weight_ptr + c, mask=mask, other=0.).to(acc_dtype)
        bias = tl.load(bias_ptr + c, mask=mask, other=0.).to(acc_dtype)
        mean = tl.load(mean_ptr + c, mask=mask, other=0.).to(acc_dtype)
        var = tl.load(var_ptr + c, mask=mask, other=1.).to(acc_dtype)
        scale = weight / tl.sqrt(var + eps)
        return scale, bias - mean * scale

    @triton.jit
    def _folded_gate_kernel(x_ptr, sums_ptr, norm_weight_ptr, norm_bias_ptr, norm_mean_ptr, norm_var_ptr,
                            cfc_ptr, srm_weight_ptr, srm_bias_ptr, srm_mean_ptr, srm_var_ptr, scale_ptr, bias_ptr,
                            C, NC, HW, s_n, s_c, eps_ptr,
                            USE_MEAN: tl.constexpr, USE_STD: tl.constexpr, BLOCK: tl.constexpr):
        """Per (n, c): ``k = gate * a`` and ``b = gate * d`` for ``relu(y * k + b + shortcut)``, where
        ``a * y + d`` is the norm before SRM and ``gate`` SRM's (both normalising with running statistics)."""
        norm_eps = tl.load(eps_ptr)
        srm_bn_eps = tl.load(eps_ptr + 1)
        srm_eps = tl.load(eps_ptr + 2)
        acc_dtype = sums_ptr.dtype.element_ty
        index = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = index < NC
        c = index % C
        mean_y, var_y = _load_moments(x_ptr, sums_ptr, index, mask, C, NC, HW, s_n, s_c)
        a, d = _running_affine(norm_weight_ptr, norm_bias_ptr, norm_mean_ptr, norm_var_ptr, c, mask, norm_eps, acc_dtype)
        z = tl.zeros_like(mean_y)
        if USE_MEAN:  # the first channel-wise weight belongs to the mean
            z += tl.load(cfc_ptr + c * (USE_MEAN + USE_STD), mask=mask, other=0.).to(acc_dtype) * (mean_y * a + d)
        if USE_STD:
            weight = tl.load(cfc_ptr + c * (USE_MEAN + USE_STD) + USE_MEAN, mask=mask, other=0.).to(acc_dtype)
            z += weight * tl.sqrt(var_y * a * a + srm_eps)
        srm_scale, srm_shift = _running_affine(srm_weight_ptr, srm_bias_ptr, srm_mean_ptr, srm_var_ptr, c, mask,
                                               srm_bn_eps, acc_dtype)
        gate = tl.sigmoid(z * srm_scale + srm_shift)
        tl.store(scale_ptr + index, gate * a, mask=mask)
        tl.store(bias_ptr + index, gate * d, mask=mask)

    @triton.jit
    def _elementwise_tile(C, HW, s_n, s_c, s_hw, num_cblocks, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
        """This program's (sample, channel block, spatial block) tile: sample, channels, mask, element offsets."""
        pid = tl.program_id(0)
        n = (pid // num_cblocks).to(tl.int64)
        c = (pid % num_cblocks) * BLOCK_C + tl.arange(0, BLOCK_C)
        hw = tl.program_id(1) * BLOCK_HW + tl.arange(0, BLOCK_HW)
        mask = (c[:, None] < C) & (hw[None, :] < HW)
        return n, c, mask, n * s_n + c[:, None] * s_c + hw[None, :] * s_hw

    @triton.jit
    def _gate_train_forward(m, v, mask, norm_weight, norm_bias, cfc_mean, cfc_std, srm_weight, srm_bias,
                            N, HW, norm_eps, srm_bn_eps, srm_eps, USE_MEAN: tl.constexpr, USE_STD: tl.constexpr):
        """Training-mode gate for a (N, C-block) tile of map moments ``m``, ``v``: the norm's batch
        statistics from the moments, SRM's statistics of the normalised maps, SRM's BatchNorm over N."""
        mu = tl.sum(m, 0) / N
        centered = tl.where(mask, m - mu[None, :], 0.)
        var = tl.sum(v, 0) * (HW - 1) / HW / N + tl.sum(centered * centered, 0) / N
        r = 1 / tl.sqrt(var + norm_eps)
        a = norm_weight * r
        mean_x = a[None, :] * centered + norm_bias[None, :]
        std_x = tl.sqrt(a[None, :] * a[None, :] * v + srm_eps)
        z = tl.zeros_like(m)
        if USE_MEAN:
            z += cfc_mean[None, :] * mean_x
        if USE_STD:
            z += cfc_std[None, :] * std_x
        z = tl.where(mask, z, 0.)
        mu_z = tl.sum(z, 0) / N
        z_centered = tl.where(mask, z - mu_z[None, :], 0.)
        var_z = tl.sum(z_centered * z_centered, 0) / N
        r_z = 1 / tl.sqrt(var_z + srm_bn_eps)
        z_hat = z_centered * r_z[None, :]
        gate = tl.sigmoid(z_hat * srm_weight[None, :] + srm_bias[None, :])
        return mu, centered, var, r, a, mean_x, std_x, mu_z, var_z, r_z, z_hat, gate

    @triton.jit
    def _gate_train_tile(mean_ptr, var_ptr, norm_weight_ptr, norm_bias_ptr, cfc_ptr, srm_weight_ptr, srm_bias_ptr,
                         N, C, USE_MEAN: tl.constexpr, USE_STD: tl.constexpr,
                         BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
        """This program's channels and its (N, C-block) tile of moments and per-channel parameters."""
        c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
        n = tl.arange(0, BLOCK_N)
        c_mask = c < C
        mask = (n[:, None] < N) & c_mask[None, :]
        index = n[:, None] * C + c[None, :]
        m = tl.load(mean_ptr + index, mask=mask, other=0.)
        v = tl.load(var_ptr + index, mask=mask, other=0.)
        acc_dtype = m.dtype
        norm_weight = tl.load(norm_weight_ptr + c, mask=c_mask, other=0.).to(acc_dtype)
        norm_bias = tl.load(norm_bias_ptr + c, mask=c_mask, other=0.).to(acc_dtype)
        srm_weight = tl.load(srm_weight_ptr + c, mask=c_mask, other=0.).to(acc_dtype)
        srm_bias = tl.load(srm_bias_ptr + c, mask=c_mask, other=0.).to(acc_dtype)
        num_styles = USE_MEAN + USE_STD
        cfc_mean = tl.load(cfc_ptr + c * num_styles, mask=c_mask & USE_MEAN, other=0.).to(acc_dtype)
        cfc_std = tl.load(cfc_ptr + c * num_styles + USE_MEAN, mask=c_mask & USE_STD, other=0.).to(acc_dtype)
        return c, c_mask, mask, index, m, v, norm_weight, norm_bias, cfc_mean, cfc_std, srm_weight, srm_bias

    @triton.jit
    def _gate_train_kernel(mean_ptr, var_ptr, norm_weight_ptr, norm_bias_ptr, cfc_ptr, srm_weight_ptr, srm_bias_ptr,
                           scale_ptr, bias_ptr, stats_ptr, N, C, HW, eps_ptr,
                           USE_MEAN: tl.constexpr, USE_STD: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
        """``k = gate * a`` and ``b = gate * d`` per (n, c) in training, and the batch statistics of both
        BatchNorms as rows of ``stats`` (4, C): mean and biased variance of the norm, then of SRM's."""
        norm_eps = tl.load(eps_ptr)
        srm_bn_eps = tl.load(eps_ptr + 1)
        srm_eps = tl.load(eps_ptr + 2)
        c, c_mask, mask, index, m, v, norm_weight, norm_bias, cfc_mean, cfc_std, srm_weight, srm_bias = \
            _gate_train_tile(mean_ptr, var_ptr, norm_weight_ptr, norm_bias_ptr, cfc_ptr, srm_weight_ptr,
                             srm_bias_ptr, N, C, USE_MEAN, USE_STD, BLOCK_N, BLOCK_C)
        mu, centered, var, r, a, mean_x, std_x, mu_z, var_z, r_z, z_hat, gate = _gate_train_forward(
            m, v, mask, norm_weight, norm_bias, cfc_mean, cfc_std, srm_weight, srm_bias,
            N, HW, norm_eps, srm_bn_eps, srm_eps, USE_MEAN, USE_STD)
        d = norm_bias - mu * a
        tl.store(scale_ptr + index, gate * a[None, :], mask=mask)
        tl.store(bias_ptr + index, gate * d[None, :], mask=mask)
        tl.store(stats_ptr + c, mu, mask=c_mask)
        tl.store(stats_ptr + C + c, var, mask=c_mask)
        tl.store(stats_ptr + 2 * C + c, mu_z, mask=c_mask)
        tl.store(stats_ptr + 3 * C + c, var_z, mask=c_mask)

    @triton.jit
    def _running_stats_kernel(stats_ptr, norm_mean_ptr, norm_var_ptr, srm_mean_ptr, srm_var_ptr, C, norm_count,
                              srm_count, factors_ptr, BLOCK: tl.constexpr):
        """Both BatchNorms' running statistics moved towards the batch statistics as
        :class:`torch.nn.BatchNorm2d` does (with unbiased variances)."""
        c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = c < C
        targets = (norm_mean_ptr, norm_var_ptr, srm_mean_ptr, srm_var_ptr)
        for row in tl.static_range(4):
            running_ptr = targets[row]
            batch_value = tl.load(stats_ptr + row * C + c, mask=mask, other=0.)
            if row == 1:
                batch_value = batch_value * norm_count / (norm_count - 1)
            if row == 3:
                batch_value = batch_value * srm_count / (srm_count - 1)
            factor = tl.load(factors_ptr + row // 2)
            running = tl.load(running_ptr + c, mask=mask, other=0.)
            tl.store(running_ptr + c, running + factor * (batch_value.to(running.dtype) - running), mask=mask)

    @triton.jit
    def _gate_train_backward_kernel(grad_scale_ptr, grad_bias_ptr, mean_ptr, var_ptr, norm_weight_ptr, norm_bias_ptr,
                                    cfc_ptr, srm_weight_ptr, srm_bias_ptr, grad_mean_ptr, grad_var_ptr,
                                    grad_params_ptr, N, C, HW, eps_ptr,
                                    USE_MEAN: tl.constexpr, USE_STD: tl.constexpr,
                                    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
        """Gradients of ``_gate_train_kernel``'s ``k`` and ``b`` for the moments and the parameters; the
        parameter gradients go to rows of ``grad_params`` (6, C): norm weight, norm bias, cfc mean, cfc std,
        SRM BatchNorm weight and bias."""
        norm_eps = tl.load(eps_ptr)
        srm_bn_eps = tl.load(eps_ptr + 1)
        srm_eps = tl.load(eps_ptr + 2)
        c, c_mask, mask, index, m, v, norm_weight, norm_bias, cfc_mean, cfc_std, srm_weight, srm_bias = \
            _gate_train_tile(mean_ptr, var_ptr, norm_weight_ptr, norm_bias_ptr, cfc_ptr, srm_weight_ptr,
                             srm_bias_ptr, N, C, USE_MEAN, USE_STD, BLOCK_N, BLOCK_C)
        mu, centered, var, r, a, mean_x, std_x, mu_z, var_z, r_z, z_hat, gate = _gate_train_forward(
            m, v, mask, norm_weight, norm_bias, cfc_mean, cfc_std, srm_weight, srm_bias,
            N, HW, norm_eps, srm_bn_eps, srm_eps, USE_MEAN, USE_STD)
        d = norm_bias - mu * a
        grad_k = tl.load(grad_scale_ptr + index, mask=mask, other=0.).to(m.dtype)
        grad_b = tl.load(grad_bias_ptr + index, mask=mask, other=0.).to(m.dtype)
        # k = gate * a, b = gate * d
        grad_gate = grad_k * a[None, :] + grad_b * d[None, :]
        grad_a = tl.sum(grad_k * gate, 0)
        grad_d = tl.sum(grad_b * gate, 0)
        # gate = sigmoid(z_hat * w + b_srm), z_hat = (z - mu_z) * r_z
        grad_pre = tl.where(mask, grad_gate * gate * (1 - gate), 0.)
        grad_srm_weight = tl.sum(grad_pre * z_hat, 0)
        grad_srm_bias = tl.sum(grad_pre, 0)
        grad_z_hat = grad_pre * srm_weight[None, :]
        grad_z = r_z[None, :] * (grad_z_hat - tl.sum(grad_z_hat, 0)[None, :] / N
                                 - z_hat * (tl.sum(grad_z_hat * z_hat, 0) / N)[None, :])
        grad_z = tl.where(mask, grad_z, 0.)
        # z = cfc_mean * mean_x + cfc_std * std_x
        grad_mean_x = grad_z * cfc_mean[None, :]
        grad_std_x = grad_z * cfc_std[None, :]
        # mean_x = a * (m - mu) + norm_bias; std_x = sqrt(a^2 v + eps); d = norm_bias - mu * a
        grad_norm_bias = tl.sum(grad_mean_x, 0) + grad_d
        grad_mu = -a * (tl.sum(grad_mean_x, 0) + grad_d)
        grad_a += tl.sum(grad_mean_x * centered, 0) - mu * grad_d
        grad_a += tl.sum(tl.where(mask, grad_std_x * a[None, :] * v / std_x, 0.), 0)
        grad_m = grad_mean_x * a[None, :]
        grad_v = grad_std_x * (a * a)[None, :] / (2 * std_x)
        # a = norm_weight * r, r = (var + eps)^(-1/2)
        grad_norm_weight = grad_a * r
        grad_var = -0.5 * grad_a * norm_weight * r * r * r
        # var = mean(v) (HW - 1) / HW + mean((m - mu)^2), mu = mean(m)
        grad_v += (grad_var * (HW - 1) / HW / N)[None, :]
        grad_m += centered * (2 * grad_var / N)[None, :] + (grad_mu / N)[None, :]
        tl.store(grad_mean_ptr + index, grad_m, mask=mask)
        tl.store(grad_var_ptr + index, grad_v, mask=mask)
        tl.store(grad_params_ptr + c, grad_norm_weight, mask=c_mask)
        tl.store(grad_params_ptr + C + c, grad_norm_bias, mask=c_mask)
        tl.store(grad_params_ptr + 2 * C + c, tl.sum(grad_z * mean_x, 0), mask=c_mask)
        tl.store(grad_params_ptr + 3 * C + c, tl.sum(tl.where(mask, grad_z * std_x, 0.), 0), mask=c_mask)
        tl.store(grad_params_ptr + 4 * C + c, grad_srm_weight, mask=c_mask)
        tl.store(grad_params_ptr + 5 * C + c, grad_srm_bias, mask=c_mask)

    @triton.jit
    def _moments_backward_kernel(x_ptr, mean_ptr, grad_mean_ptr, grad_var_ptr, out_ptr, C, HW, s_n, s_c, s_hw,
                                 num_cblocks, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
        """``d/dx = grad_mean / HW + grad_var * 2 (x - mean) / (HW - 1)`` (no variance term for HW = 1)."""
        n, c, mask, offsets = _elementwise_tile(C, HW, s_n, s_c, s_hw, num_cblocks, BLOCK_C, BLOCK_HW)
        mean = tl.load(mean_ptr + n * C + c, mask=c < C, other=0.)
        grad_mean = tl.load(grad_mean_ptr + n * C + c, mask=c < C, other=0.).to(mean.dtype)
        grad_var = tl.load(grad_var_ptr + n * C + c, mask=c < C, other=0.).to(mean.dtype)
        scale = tl.where(HW > 1, grad_var * 2 / tl.maximum(HW - 1, 1), 0.)
        v = tl.load(x_ptr + offsets, mask=mask, other=0.).to(mean.dtype)
        out = (v - mean[:, None]) * scale[:, None] + grad_mean[:, None] / HW
        tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _affine_residual_relu_kernel(x_ptr, scale_ptr, bias_ptr, shortcut_ptr, out_ptr, C, HW, s_n, s_c, s_hw,
                                     num_cblocks, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
        n, c, mask, offsets = _elementwise_tile(C, HW, s_n, s_c, s_hw, num_cblocks, BLOCK_C, BLOCK_HW)
        scale = tl.load(scale_ptr + n * C + c, mask=c < C, other=0.)
        bias = tl.load(bias_ptr + n * C + c, mask=c < C, other=0.)
        v = tl.load(x_ptr + offsets, mask=mask, other=0.).to(scale.dtype)
        s = tl.load(shortcut_ptr + offsets, mask=mask, other=0.).to(scale.dtype)
        out = tl.maximum(v * scale[:, None] + bias[:, None] + s, 0.)
        tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _affine_residual_relu_backward_kernel(grad_ptr, out_ptr, x_ptr, scale_ptr, grad_x_ptr, grad_shortcut_ptr,
                                              grad_scale_ptr, grad_bias_ptr, C, HW, s_n, s_c, s_hw, num_cblocks,
                                              split, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
        pid = tl.program_id(0)
        n = (pid // num_cblocks).to(tl.int64)
        c = (pid % num_cblocks) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_mask = c < C
        scale = tl.load(scale_ptr + n * C + c, mask=c_mask, other=0.)
        rows = n * s_n + c[:, None] * s_c
        acc_scale = tl.zeros((BLOCK_C, BLOCK_HW), dtype=scale.dtype)
        acc_bias = tl.zeros((BLOCK_C, BLOCK_HW), dtype=scale.dtype)
        for start in range(tl.program_id(1) * BLOCK_HW, HW, split * BLOCK_HW):
            hw = start + tl.arange(0, BLOCK_HW)
            mask = c_mask[:, None] & (hw[None, :] < HW)
            offsets = rows + hw[None, :] * s_hw
            grad = tl.load(grad_ptr + offsets, mask=mask, other=0.).to(scale.dtype)
            out = tl.load(out_ptr + offsets, mask=mask, other=0.)
            v = tl.load(x_ptr + offsets, mask=mask, other=0.).to(scale.dtype)
            grad = tl.where(out > 0, grad, 0.)
            tl.store(grad_shortcut_ptr + offsets, grad.to(grad_shortcut_ptr.dtype.element_ty), mask=mask)
            tl.store(grad_x_ptr + offsets, (grad * scale[:, None]).to(grad_x_ptr.dtype.element_ty), mask=mask)
            acc_scale += grad * v
            acc_bias += grad
        tl.atomic_add(grad_scale_ptr + n * C + c, tl.sum(acc_scale, 1), mask=c_mask)
        tl.atomic_add(grad_bias_ptr + n * C + c, tl.sum(acc_bias, 1), mask=c_mask)


def _split(num_programs: int, hw: int, block_hw: int) -> int:
    return max(1, min(triton.cdiv(hw, block_hw), _TARGET_PROGRAMS // max(num_programs, 1)))


def _sums(x: torch.Tensor) -> torch.Tensor:
    """(2, N, C) shifted sums and sums of squares of ``x``'s maps (see ``_stats_kernel``)."""
    channels, hw, s_n, s_c, s_hw, block_c, block_hw = _tiles(x)
    batch = x.shape[0]
    sums = torch.zeros(2, batch, channels, device=x.device, dtype=_acc_dtype(x))
    num_cblocks = triton.cdiv(channels, block_c)
    split = _split(batch * num_cblocks, hw, block_hw)
    _stats_kernel[(batch * num_cblocks, split)](
        x, sums, channels, batch * channels, hw, s_n, s_c, s_hw, num_cblocks, split,
        BLOCK_C=block_c, BLOCK_HW=block_hw)
    return sums


_FINALIZE_BLOCK = 256  # (n, c) pairs per program of the per-map kernels


@torch.library.custom_op('srm_zoo::style_moments', mutates_args=())
def style_moments(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-(n, c) mean and unbiased variance of ``x`` (N, C, H, W), float32 or float64; the variance
    of a single value is 0."""
    sums = _sums(x)
    batch, channels, height, width = x.shape
    mean, var = torch.empty_like(sums[0]), torch.empty_like(sums[1])  # outputs may not alias each other
    num_maps = batch * channels
    _moments_kernel[(triton.cdiv(num_maps, _FINALIZE_BLOCK),)](
        x, sums, mean, var, channels, num_maps, height * width, x.stride(0), x.stride(1), BLOCK=_FINALIZE_BLOCK)
    return mean, var


@style_moments.register_fake
def _(x):
    shape = x.shape[:2]
    dtype = _acc_dtype(x)
    return x.new_empty(shape, dtype=dtype), x.new_empty(shape, dtype=dtype)


@torch.library.custom_op('srm_zoo::style_moments_backward', mutates_args=())
def style_moments_backward(x: torch.Tensor, mean: torch.Tensor, grad_mean: torch.Tensor,
                           grad_var: torch.Tensor) -> torch.Tensor:
    """Gradient of :func:`style_moments` with respect to ``x``."""
    channels, hw, s_n, s_c, s_hw, block_c, block_hw = _tiles(x)
    grad_x = torch.empty_like(x)
    num_cblocks = triton.cdiv(channels, block_c)
    _moments_backward_kernel[(x.shape[0] * num_cblocks, triton.cdiv(hw, block_hw))](
        x, mean.contiguous(), grad_mean.contiguous(), grad_var.contiguous(), grad_x, channels, hw, s_n, s_c, s_hw, num_cblocks,
        BLOCK_C=block_c, BLOCK_HW=block_hw)
    return grad_x


@style_moments_backward.register_fake
def _(x, mean, grad_mean, grad_var):
    return torch.empty_like(x)


def _style_moments_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[0], output[0])


def _style_moments_grad(ctx, grad_mean, grad_var):
    x, mean = ctx.saved_tensors
    grad_mean = torch.zeros_like(mean) if grad_mean is None else grad_mean
    grad_var = torch.zeros_like(mean) if grad_var is None else grad_var
    return style_moments_backward(x, mean, grad_mean, grad_var)


style_moments.register_autograd(_style_moments_grad, setup_context=_style_moments_setup)


def _launch_affine_residual_relu(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                                 shortcut: torch.Tensor) -> torch.Tensor:
    channels, hw, s_n, s_c, s_hw, block_c, block_hw = _tiles(x)
    out = torch.empty_like(x)
    num_cblocks = triton.cdiv(channels, block_c)
    _affine_residual_relu_kernel[(x.shape[0] * num_cblocks, triton.cdiv(hw, block_hw))](
        x, scale.contiguous(), bias.to(scale.dtype).contiguous(), _like(shortcut, x), out,
        channels, hw, s_n, s_c, s_hw, num_cblocks, BLOCK_C=block_c, BLOCK_HW=block_hw)
    return out


@torch.library.custom_op('srm_zoo::affine_residual_relu', mutates_args=())
def affine_residual_relu(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                         shortcut: torch.Tensor) -> torch.Tensor:
    """``relu(x * scale + bias + shortcut)`` in ``x``'s dtype, with (N, C) ``scale`` and ``bias``."""
    return _launch_affine_residual_relu(x, scale, bias, shortcut)


@affine_residual_relu.register_fake
def _(x, scale, bias, shortcut):
    return torch.empty_like(x)


@torch.library.custom_op('srm_zoo::affine_residual_relu_backward', mutates_args=())
def affine_residual_relu_backward(grad: torch.Tensor, out: torch.Tensor, x: torch.Tensor, scale: torch.Tensor,
                                  shortcut_dtype: torch.dtype
                                  ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of :func:`affine_residual_relu` for ``x``, ``scale``, ``bias`` and ``shortcut``."""
    channels, hw, s_n, s_c, s_hw, block_c, block_hw = _tiles(x)
    grad_x = torch.empty_like(x)
    grad_shortcut = torch.empty_like(x, dtype=shortcut_dtype)
    grad_scale = torch.zeros(scale.shape, device=x.device, dtype=scale.dtype)
    grad_bias = torch.zeros_like(grad_scale)
    num_cblocks = triton.cdiv(channels, block_c)
    split = _split(x.shape[0] * num_cblocks, hw, block_hw)
    _affine_residual_relu_backward_kernel[(x.shape[0] * num_cblocks, split)](
        _like(grad, x), out, x, scale.contiguous(), grad_x, grad_shortcut, grad_scale, grad_bias,
        channels, hw, s_n, s_c, s_hw, num_cblocks, split, BLOCK_C=block_c, BLOCK_HW=block_hw)
    return grad_x, grad_scale, grad_bias, grad_shortcut


@affine_residual_relu_backward.register_fake
def _(grad, out, x, scale, shortcut_dtype):
    return (torch.empty_like(x), torch.empty_like(scale), torch.empty_like(scale),
            torch.empty_like(x, dtype=shortcut_dtype))


def _affine_residual_relu_setup(ctx, inputs, output) -> None:
    x, scale, bias, shortcut = inputs
    ctx.bias_dtype = bias.dtype
    ctx.shortcut_dtype = shortcut.dtype
    ctx.save_for_backward(x, scale, output)


def _affine_residual_relu_grad(ctx, grad):
    x, scale, out = ctx.saved_tensors
    grad_x, grad_scale, grad_bias, grad_shortcut = affine_residual_relu_backward(
        grad, out, x, scale, ctx.shortcut_dtype)
    return grad_x, grad_scale, grad_bias.to(ctx.bias_dtype), grad_shortcut


affine_residual_relu.register_autograd(_affine_residual_relu_grad, setup_context=_affine_residual_relu_setup)


@torch.library.custom_op('srm_zoo::folded_block_tail', mutates_args=())
def folded_block_tail(y: torch.Tensor, shortcut: torch.Tensor, norm_weight: torch.Tensor, norm_bias: torch.Tensor,
                      norm_mean: torch.Tensor, norm_var: torch.Tensor, norm_eps: float, cfc: torch.Tensor,
                      srm_weight: torch.Tensor, srm_bias: torch.Tensor, srm_mean: torch.Tensor, srm_var: torch.Tensor,
                      srm_bn_eps: float, srm_eps: float, style_pooling: str) -> torch.Tensor:
    """Inference tail of an SRM block in three kernels: ``relu(SRM(norm(y)) + shortcut)`` for a
    BatchNorm ``norm`` and an SRM whose BatchNorm both normalise with running statistics.

    The statistics of ``y``; then, per (n, c), the gate with both BatchNorms folded in; then the
    fused apply. Forward only: training takes the differentiable ops.
    """
    sums = _sums(y)
    batch, channels, height, width = y.shape
    scale, bias = torch.empty_like(sums[0]), torch.empty_like(sums[1])
    num_maps = batch * channels
    _folded_gate_kernel[(triton.cdiv(num_maps, _FINALIZE_BLOCK),)](
        y, sums, norm_weight, norm_bias, norm_mean, norm_var, cfc.contiguous(), srm_weight, srm_bias, srm_mean, srm_var,
        scale, bias, channels, num_maps, height * width, y.stride(0), y.stride(1),
        _constants(sums, norm_eps, srm_bn_eps, srm_eps), USE_MEAN=style_pooling != 'std', USE_STD=style_pooling != 'mean', BLOCK=_FINALIZE_BLOCK)
    return _launch_affine_residual_relu(y, scale, bias, shortcut)


@folded_block_tail.register_fake
def _(y, shortcut, norm_weight, norm_bias, norm_mean, norm_var, norm_eps, cfc, srm_weight, srm_bias, srm_mean,
      srm_var, srm_bn_eps, srm_eps, style_pooling):
    return torch.empty_like(y)


GATE_TRAIN_MAX_BATCH = 2048  # the training gate kernel holds a channel's whole batch in one tile


def _gate_train_blocks(batch: int, channels: int) -> Tuple[int, int]:
    block_n = triton.next_power_of_2(batch)
    return block_n, max(1, min(triton.next_power_of_2(channels), 2048 // block_n))


@torch.library.custom_op('srm_zoo::folded_gate_train', mutates_args=())
def folded_gate_train(mean: torch.Tensor, var: torch.Tensor, norm_weight: torch.Tensor, norm_bias: torch.Tensor,
                      cfc: torch.Tensor, srm_weight: torch.Tensor, srm_bias: torch.Tensor, num_values: int,
                      norm_eps: float, srm_bn_eps: float, srm_eps: float, style_pooling: str
                      ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training-mode ``(k, b)`` per (n, c) for ``relu(y * k + b + shortcut)`` from the moments of ``y``
    (N, C), with the norm before SRM and SRM's BatchNorm both on batch statistics, in one kernel; and
    those batch statistics (4, C) for :func:`update_running_stats`."""
    batch, channels = mean.shape
    scale, bias = torch.empty_like(mean), torch.empty_like(mean)
    stats = mean.new_empty(4, channels)
    block_n, block_c = _gate_train_blocks(batch, channels)
    _gate_train_kernel[(triton.cdiv(channels, block_c),)](
        mean, var, norm_weight, norm_bias, cfc.contiguous(), srm_weight, srm_bias, scale, bias, stats,
        batch, channels, num_values, _constants(mean, norm_eps, srm_bn_eps, srm_eps), USE_MEAN=style_pooling != 'std',
        USE_STD=style_pooling != 'mean', BLOCK_N=block_n, BLOCK_C=block_c)
    return scale, bias, stats


@folded_gate_train.register_fake
def _(mean, var, norm_weight, norm_bias, cfc, srm_weight, srm_bias, num_values, norm_eps, srm_bn_eps, srm_eps,
      style_pooling):
    return torch.empty_like(mean), torch.empty_like(mean), mean.new_empty(4, mean.shape[1])


@torch.library.custom_op('srm_zoo::update_running_stats', mutates_args=(
    'norm_running_mean', 'norm_running_var', 'srm_running_mean', 'srm_running_var'))
def update_running_stats(stats: torch.Tensor, norm_running_mean: torch.Tensor, norm_running_var: torch.Tensor,
                         srm_running_mean: torch.Tensor, srm_running_var: torch.Tensor, norm_count: int,
                         srm_count: int, norm_factor: float, srm_factor: float) -> None:
    """Moves both BatchNorms' running statistics towards the batch statistics of :func:`folded_gate_train`
    (momentum ``norm_factor``, ``srm_factor``; variances made unbiased over ``norm_count``, ``srm_count`` values)."""
    channels = stats.shape[1]
    _running_stats_kernel[(triton.cdiv(channels, _FINALIZE_BLOCK),)](
        stats, norm_running_mean, norm_running_var, srm_running_mean, srm_running_var, channels, norm_count,
        srm_count, _constants(norm_running_mean, norm_factor, srm_factor), BLOCK=_FINALIZE_BLOCK)


@torch.library.custom_op('srm_zoo::folded_gate_train_backward', mutates_args=())
def folded_gate_train_backward(grad_scale: torch.Tensor, grad_bias: torch.Tensor, mean: torch.Tensor,
                               var: torch.Tensor, norm_weight: torch.Tensor, norm_bias: torch.Tensor,
                               cfc: torch.Tensor, srm_weight: torch.Tensor, srm_bias: torch.Tensor, num_values: int,
                               norm_eps: float, srm_bn_eps: float, srm_eps: float, style_pooling: str
                               ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of :func:`folded_gate_train` for ``mean``, ``var`` and, as rows of a (6, C) tensor, the norm's
    weight and bias, the mean and std columns of ``cfc`` and SRM's BatchNorm weight and bias."""
    batch, channels = mean.shape
    grad_mean, grad_var = torch.empty_like(mean), torch.empty_like(mean)
    grad_params = mean.new_empty(6, channels)
    block_n, block_c = _gate_train_blocks(batch, channels)
    _gate_train_backward_kernel[(triton.cdiv(channels, block_c),)](
        grad_scale.contiguous(), grad_bias.contiguous(), mean, var, norm_weight, norm_bias, cfc.contiguous(),
        srm_weight, srm_bias, grad_mean, grad_var, grad_params, batch, channels, num_values,
        _constants(mean, norm_eps, srm_bn_eps, srm_eps), USE_MEAN=style_pooling != 'std', USE_STD=style_pooling != 'mean', BLOCK_N=block_n, BLOCK_C=block_c)
    return grad_mean, grad_var, grad_params


@folded_gate_train_backward.register_fake
def _(grad_scale, grad_bias, mean, var, norm_weight, norm_bias, cfc, srm_weight, srm_bias, num_values, norm_eps,
      srm_bn_eps, srm_eps, style_pooling):
    return torch.empty_like(mean), torch.empty_like(mean), mean.new_empty(6, mean.shape[1])


def _folded_gate_train_setup(ctx, inputs, output) -> None:
    mean, var, norm_weight, norm_bias, cfc, srm_weight, srm_bias = inputs[:7]
    ctx.constants = inputs[7:]
    ctx.mark_non_differentiable(output[2])
    ctx.save_for_backward(mean, var, norm_weight, norm_bias, cfc, srm_weight, srm_bias)


def _folded_gate_train_grad(ctx, grad_scale, grad_bias, grad_stats):
    mean, var, norm_weight, norm_bias, cfc, srm_weight, srm_bias = ctx.saved_tensors
    style_pooling = ctx.constants[-1]
    grad_scale = torch.zeros_like(mean) if grad_scale is None else grad_scale
    grad_bias = torch.zeros_like(mean) if grad_bias is None else grad_bias
    grad_mean, grad_var, grad_params = folded_gate_train_backward(
        grad_scale, grad_bias, mean, var, norm_weight, norm_bias, cfc, srm_weight, srm_bias, *ctx.constants)
    cfc_rows = {'mean_std': slice(2, 4), 'mean': slice(2, 3), 'std': slice(3, 4)}[style_pooling]
    grad_cfc = grad_params[cfc_rows].t().to(cfc.dtype)
    return (grad_mean, grad_var, grad_params[0].to(norm_weight.dtype), grad_params[1].to(norm_bias.dtype), grad_cfc,
            grad_params[4].to(srm_weight.dtype), grad_params[5].to(srm_bias.dtype)) + (None,) * 5


folded_gate_train.register_autograd(_folded_gate_train_grad, setup_context=_folded_gate_train_setup)
