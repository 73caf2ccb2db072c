"""Host side of SRM's Triton kernels: which tensors they take, tile sizes, grids and launches.

Plain functions, no autograd: :mod:`.ops` wraps them as ``torch.library`` custom ops.
"""
import functools
import os
from typing import Optional, Tuple

import torch

try:
    import triton
except ImportError:  # pragma: no cover - triton ships with torch on x86_64 Linux
    triton = None
else:
    from . import _kernels

__all__ = ['CPU_TEST_ENV', 'GATE_TRAIN_MAX_BATCH', 'available', 'applies', 'same_layout']

CPU_TEST_ENV = 'SRM_ZOO_TRITON_ON_CPU'
GATE_TRAIN_MAX_BATCH = 2048  # the training gate kernel holds a channel's whole batch in one tile
_TILE = 2048  # elements per program tile
_TARGET_PROGRAMS = 1024  # reductions split the spatial axis until about this many programs run
_MAPS_PER_PROGRAM = 256  # (n, c) pairs per program of the per-map kernels
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


def acc_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype statistics of ``x`` accumulate in: float32, or float64 for float64 inputs."""
    return torch.promote_types(x.dtype, torch.float32)


def _constants(like: torch.Tensor, *values: float) -> torch.Tensor:
    """``values`` as a tensor of ``like``'s dtype and device (Triton passes Python floats as float32,
    which would round epsilons and momenta of float64 models)."""
    return _cached_constants(values, like.dtype, like.device)


@functools.lru_cache(maxsize=256)
def _cached_constants(values: Tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, device=device)


class _Grid:
    """Channels, spatial size, strides and the (channel, spatial) tile of an (N, C, H, W) tensor."""

    def __init__(self, x: torch.Tensor) -> None:
        batch, self.channels, height, width = x.shape
        self.hw = height * width
        self.strides = _map_strides(x)
        s_c, s_hw = self.strides[1:]
        if s_c == 1 and s_hw != 1:  # channels_last: channels are contiguous
            self.block_c = min(triton.next_power_of_2(self.channels), 128)
            self.block_hw = max(1, min(triton.next_power_of_2(self.hw), _TILE // self.block_c))
        else:
            self.block_hw = min(triton.next_power_of_2(self.hw), 512)
            self.block_c = max(1, min(triton.next_power_of_2(self.channels), _TILE // self.block_hw))
        self.programs = batch * triton.cdiv(self.channels, self.block_c)

    @property
    def num_cblocks(self) -> int:
        return triton.cdiv(self.channels, self.block_c)

    @property
    def elementwise(self) -> Tuple[int, int]:
        """One program per tile."""
        return self.programs, triton.cdiv(self.hw, self.block_hw)

    @property
    def reduction(self) -> Tuple[int, int]:
        """The spatial axis split until about ``_TARGET_PROGRAMS`` programs run (they add atomically)."""
        return self.programs, max(1, min(triton.cdiv(self.hw, self.block_hw), _TARGET_PROGRAMS // self.programs))

    def args(self) -> tuple:
        return (self.channels, self.hw, *self.strides, self.num_cblocks)

    def blocks(self) -> dict:
        return dict(BLOCK_C=self.block_c, BLOCK_HW=self.block_hw)


def _style_switches(style_pooling: str) -> dict:
    """The gate kernels' switches for SRM's style pooling: which statistics it uses."""
    return dict(USE_MEAN=style_pooling != 'std', USE_STD=style_pooling != 'mean')


def _per_map_grid(num_maps: int) -> Tuple[int]:
    return (triton.cdiv(num_maps, _MAPS_PER_PROGRAM),)


def map_sums(x: torch.Tensor) -> torch.Tensor:
    """(2, N, C) sums and sums of squares of ``x``'s maps, each map shifted by its first value."""
    grid = _Grid(x)
    batch = x.shape[0]
    sums = torch.zeros(2, batch, grid.channels, device=x.device, dtype=acc_dtype(x))
    programs, split = grid.reduction
    channels, hw, s_n, s_c, s_hw, num_cblocks = grid.args()
    _kernels.stats_kernel[(programs, split)](
        x, sums, channels, batch * channels, hw, s_n, s_c, s_hw, num_cblocks, split, **grid.blocks())
    return sums


def moments(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-(n, c) mean and unbiased variance of ``x``."""
    sums = map_sums(x)
    batch, channels, height, width = x.shape
    mean, var = torch.empty_like(sums[0]), torch.empty_like(sums[1])  # custom-op outputs may not alias
    _kernels.moments_kernel[_per_map_grid(batch * channels)](
        x, sums, mean, var, channels, batch * channels, height * width, x.stride(0), x.stride(1),
        BLOCK=_MAPS_PER_PROGRAM)
    return mean, var


def input_grad(x: torch.Tensor, mean: torch.Tensor, grad_mean: torch.Tensor, grad_var: torch.Tensor,
               grad_out: Optional[torch.Tensor] = None, scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Gradient for ``x`` through its moments, plus ``grad_out * scale`` when given."""
    grid = _Grid(x)
    grad_x = torch.empty_like(x)
    has_grad_out = grad_out is not None
    _kernels.input_grad_kernel[grid.elementwise](
        x, mean.contiguous(), grad_mean.contiguous(), grad_var.contiguous(),
        _like(grad_out, x) if has_grad_out else x, scale.contiguous() if has_grad_out else mean, grad_x,
        *grid.args(), HAS_GRAD_OUT=has_grad_out, **grid.blocks())
    return grad_x


def affine_residual_relu(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                         shortcut: torch.Tensor) -> torch.Tensor:
    """``relu(x * scale + bias + shortcut)`` with (N, C) ``scale`` and ``bias``."""
    grid = _Grid(x)
    out = torch.empty_like(x)
    _kernels.affine_residual_relu_kernel[grid.elementwise](
        x, scale.contiguous(), bias.to(scale.dtype).contiguous(), _like(shortcut, x), out,
        *grid.args(), **grid.blocks())
    return out


def affine_residual_relu_backward(grad: torch.Tensor, out: torch.Tensor, x: torch.Tensor, scale: torch.Tensor,
                                  shortcut_dtype: torch.dtype, write_grad_x: bool = True
                                  ) -> Tuple[Optional[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of :func:`affine_residual_relu` for ``x`` (None unless ``write_grad_x``), ``scale``,
    ``bias`` and ``shortcut``."""
    grid = _Grid(x)
    grad_x = torch.empty_like(x) if write_grad_x else None
    grad_shortcut = torch.empty_like(x, dtype=shortcut_dtype)
    grad_scale = torch.zeros(scale.shape, device=x.device, dtype=scale.dtype)
    grad_bias = torch.zeros_like(grad_scale)  # custom-op outputs may not alias
    programs, split = grid.reduction
    channels, hw, s_n, s_c, s_hw, num_cblocks = grid.args()
    _kernels.affine_residual_relu_backward_kernel[(programs, split)](
        _like(grad, x), out, x, scale.contiguous(), grad_x if write_grad_x else grad_shortcut, grad_shortcut,
        grad_scale, grad_bias, channels, hw, s_n, s_c, s_hw, num_cblocks, split, WRITE_GRAD_X=write_grad_x,
        **grid.blocks())
    return grad_x, grad_scale, grad_bias, grad_shortcut


def folded_gate(y: torch.Tensor, sums: torch.Tensor, norm: Tuple[torch.Tensor, ...], norm_eps: float,
                cfc: torch.Tensor, srm_norm: Tuple[torch.Tensor, ...], srm_bn_eps: float, srm_eps: float,
                style_pooling: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Inference ``(k, b)`` per (n, c) from the map sums of ``y``, with the norm before SRM and SRM's
    BatchNorm, each given as (weight, bias, running mean, running var), folded in."""
    batch, channels, height, width = y.shape
    scale, bias = torch.empty_like(sums[0]), torch.empty_like(sums[1])
    _kernels.folded_gate_kernel[_per_map_grid(batch * channels)](
        y, sums, *norm, cfc.contiguous(), *srm_norm, scale, bias, channels, batch * channels, height * width,
        y.stride(0), y.stride(1), _constants(sums, norm_eps, srm_bn_eps, srm_eps),
        BLOCK=_MAPS_PER_PROGRAM, **_style_switches(style_pooling))
    return scale, bias


def _launch_gate_train(kernel, mean: torch.Tensor, var: torch.Tensor, params: Tuple[torch.Tensor, ...],
                       tensors: Tuple[torch.Tensor, ...], num_values: int, eps: Tuple[float, float, float],
                       style_pooling: str) -> None:
    """``kernel(moments, params, tensors, sizes, eps)`` with one program per block of channels, each
    holding the whole batch."""
    batch, channels = mean.shape
    block_n = triton.next_power_of_2(batch)
    block_c = max(1, min(triton.next_power_of_2(channels), 2048 // block_n))
    norm_weight, norm_bias, cfc, srm_weight, srm_bias = params
    kernel[(triton.cdiv(channels, block_c),)](
        mean, var, norm_weight, norm_bias, cfc.contiguous(), srm_weight, srm_bias, *tensors,
        batch, channels, num_values, _constants(mean, *eps), BLOCK_N=block_n, BLOCK_C=block_c,
        **_style_switches(style_pooling))


def gate_train(mean: torch.Tensor, var: torch.Tensor, params: Tuple[torch.Tensor, ...], num_values: int,
               eps: Tuple[float, float, float], style_pooling: str
               ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training ``(k, b)`` per (n, c) from the map moments (N, C) of the convolution output, and the
    batch statistics (4, C) of both BatchNorms. ``params``: the norm's weight and bias, ``cfc``,
    SRM's BatchNorm weight and bias; ``eps``: the norm's, SRM's BatchNorm's and SRM's."""
    scale, bias = torch.empty_like(mean), torch.empty_like(mean)
    stats = mean.new_empty(4, mean.shape[1])
    _launch_gate_train(_kernels.gate_train_kernel, mean, var, params, (scale, bias, stats), num_values, eps,
                       style_pooling)
    return scale, bias, stats


def gate_train_backward(grad_scale: torch.Tensor, grad_bias: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
                        params: Tuple[torch.Tensor, ...], num_values: int, eps: Tuple[float, float, float],
                        style_pooling: str) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of :func:`gate_train` for ``mean``, ``var`` and, as rows of a (6, C) tensor, the norm's
    weight and bias, the mean and std columns of ``cfc`` and SRM's BatchNorm weight and bias."""
    grad_mean, grad_var = torch.empty_like(mean), torch.empty_like(mean)
    grad_params = mean.new_empty(6, mean.shape[1])
    tensors = (grad_scale.contiguous(), grad_bias.contiguous(), grad_mean, grad_var, grad_params)
    _launch_gate_train(_kernels.gate_train_backward_kernel, mean, var, params, tensors, num_values, eps,
                       style_pooling)
    return grad_mean, grad_var, grad_params


def update_running_stats(stats: torch.Tensor, running: Tuple[torch.Tensor, ...], counts: Tuple[int, int],
                         factors: Tuple[float, float]) -> None:
    """Moves ``running`` (norm mean, norm var, SRM BatchNorm mean, var) towards the batch ``stats`` of
    :func:`gate_train` by ``factors``; variances made unbiased over ``counts`` values."""
    channels = stats.shape[1]
    _kernels.running_stats_kernel[_per_map_grid(channels)](
        stats, *running, channels, *counts, _constants(running[0], *factors), BLOCK=_MAPS_PER_PROGRAM)
