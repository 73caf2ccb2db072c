"""Host side of SRM's Triton kernels: which tensors they take, tile sizes, grids and launches.

Plain functions, no autograd: :mod:`.ops` wraps them as ``torch.library`` custom ops and, for eager
training, as an autograd function.
"""
import functools
import os
from typing import NamedTuple, Optional, Tuple

import torch

try:
    import triton
except ImportError:  # pragma: no cover - triton ships with torch on x86_64 Linux
    triton = None
else:
    from . import _kernels

__all__ = ['CPU_TEST_ENV', 'GATE_TRAIN_MAX_BATCH', 'RunningUpdate', 'available', 'applies', 'same_layout']

CPU_TEST_ENV = 'SRM_ZOO_TRITON_ON_CPU'
# read once, as Triton reads TRITON_INTERPRET once for each kernel it defines (at import)
_ON_CPU_FOR_TESTS = os.environ.get(CPU_TEST_ENV) == '1' and os.environ.get('TRITON_INTERPRET') == '1'
GATE_TRAIN_MAX_BATCH = 2048  # the training gate kernel holds a channel's whole batch in one tile
_TILE = 2048  # elements per program tile
_TARGET_PROGRAMS = 1024  # reductions split the spatial axis until about this many programs run
_MAPS_PER_PROGRAM = 256  # (n, c) pairs per program of the per-map kernels
_ONE_PASS_MIN_PROGRAMS = 512  # fewer programs (one per sample and block of channels) leave SMs idle
_ONE_PASS_MIN_POSITIONS = 28 * 28  # on smaller maps (NCHW) three kernels measured faster
_SECTOR_CHANNELS = 16  # channels_last: channels a one-pass program reads per position (32 bytes in 16 bits)
_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def available() -> bool:
    """Whether triton can be imported."""
    return triton is not None


def _map_strides(shape: Tuple[int, ...], strides: Tuple[int, ...]) -> Tuple[int, int, int]:
    """(sample, channel, spatial) strides of a contiguous or channels_last tensor of ``shape`` and ``strides``,
    whose H and W flatten into one strided axis."""
    _, _, _, width = shape
    s_n, s_c, s_h, s_w = strides
    return s_n, s_c, (s_w if width > 1 else s_h)


def applies(x: torch.Tensor) -> bool:
    """Whether the kernels take ``x``: a 4-d floating tensor on CUDA (or on the CPU in interpreter tests),
    contiguous or channels_last (the kernels write their outputs, made with ``torch.empty_like``, at ``x``'s
    strides: a view with gaps between its values, such as a chunk of channels, or an expanded tensor would
    have them write outside those outputs)."""
    if triton is None or x.dim() != 4 or x.dtype not in _DTYPES or x.numel() == 0:
        return False
    if not x.is_cuda and not (_ON_CPU_FOR_TESTS and x.device.type == 'cpu'):
        return False
    return x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)


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


def _cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` (host code: ``triton.cdiv`` is a constexpr function, slow to call from Python)."""
    return -(-a // b)


def _next_power_of_2(n: int) -> int:
    """The smallest power of two at least ``n`` (1 for ``n <= 1``)."""
    return 1 << max(n - 1, 0).bit_length()


def _channels_last(strides: Tuple[int, int, int]) -> bool:
    """Whether (sample, channel, spatial) ``strides`` make channels the contiguous dimension."""
    return strides[1] == 1 and strides[2] != 1


def _positions(hw: int, block_c: int) -> int:
    """Positions of a tile of ``block_c`` channels over maps of ``hw`` values: up to _TILE elements."""
    return max(1, min(_next_power_of_2(hw), _TILE // block_c))


def _tile(shape: Tuple[int, ...], strides: Tuple[int, int, int], one_pass: bool) -> Tuple[int, int]:
    """(channels, positions) of a program's tile over an (N, C, H, W) tensor with (sample, channel, spatial)
    ``strides``: _TILE elements, along the contiguous dimension first (at most 128 channels in channels_last).
    For the one-pass tail (``one_pass``), channels_last takes fewer channels on large maps, so that the maps a
    program sweeps twice stay small in the caches, but enough to read whole 32-byte sectors."""
    channels, hw = shape[1], shape[2] * shape[3]
    if _channels_last(strides):
        block_c = min(_next_power_of_2(channels), 128)
        if one_pass:
            block_c = min(block_c, max(_SECTOR_CHANNELS, _TILE // _next_power_of_2(hw)))
        return block_c, _positions(hw, block_c)
    block_hw = min(_next_power_of_2(hw), 512)
    return max(1, min(_next_power_of_2(channels), _TILE // block_hw)), block_hw


class _Grid:
    """Channels, spatial size, strides and a (channel, spatial) tile of an (N, C, H, W) tensor, with the
    launch grids of the kernels: one program for each sample and block of channels, and the elementwise
    and reducing kernels' splits of the spatial axis. Made once per shape, strides and kind of tile
    (:func:`_grid`, :func:`_one_pass_grid`): a block tail launches several kernels over the same layout."""

    ARG_NAMES = ('C', 'HW', 's_n', 's_c', 's_hw', 'num_cblocks')
    """The kernels' names of :attr:`args`, which the elementwise kernels and the one-kernel tail take in this
    order."""

    def __init__(self, shape: Tuple[int, ...], strides: Tuple[int, int, int], tile: Tuple[int, int]) -> None:
        batch, channels, height, width = shape
        hw = height * width
        block_c, block_hw = tile
        num_cblocks = _cdiv(channels, block_c)
        self.programs = batch * num_cblocks
        self.channels, self.positions = channels, hw
        self.channels_last = _channels_last(strides)
        self.args = (channels, hw, *strides, num_cblocks)  # in the order of ARG_NAMES
        self.blocks = dict(BLOCK_C=block_c, BLOCK_HW=block_hw)
        # elementwise kernels: one program per tile; reductions: the spatial axis split until about
        # _TARGET_PROGRAMS programs run (each writes its part of the sums)
        self.elementwise = (self.programs, _cdiv(hw, block_hw))
        self.reduction = (self.programs, max(1, min(_cdiv(hw, block_hw), _TARGET_PROGRAMS // self.programs)))


@functools.lru_cache(maxsize=512)
def _grid_for(shape: Tuple[int, ...], strides: Tuple[int, ...], one_pass: bool) -> _Grid:
    map_strides = _map_strides(shape, strides)
    return _Grid(shape, map_strides, _tile(shape, map_strides, one_pass))


def _grid(x: torch.Tensor) -> _Grid:
    """The :class:`_Grid` of ``x``'s shape and strides for the elementwise and reducing kernels."""
    return _grid_for(x.shape, x.stride(), False)


def _one_pass_grid(y: torch.Tensor, channels_per_program: Optional[int] = None) -> _Grid:
    """The :class:`_Grid` of ``y``'s shape and strides for :func:`folded_tail_one_pass`: its tile (:func:`_tile`),
    or one of ``channels_per_program`` channels and up to _TILE elements."""
    if channels_per_program is None:
        return _grid_for(y.shape, y.stride(), True)
    if channels_per_program < 1 or channels_per_program & (channels_per_program - 1):
        raise ValueError(f'channels_per_program must be a power of two, not {channels_per_program}')
    tile = channels_per_program, _positions(y.shape[2] * y.shape[3], channels_per_program)
    return _Grid(y.shape, _map_strides(y.shape, y.stride()), tile)


def one_pass_tile(y: torch.Tensor) -> Tuple[int, int]:
    """(channels, positions) of a program's tile in :func:`folded_tail_one_pass` of ``y``."""
    blocks = _one_pass_grid(y).blocks
    return blocks['BLOCK_C'], blocks['BLOCK_HW']


class RunningUpdate(NamedTuple):
    """What the training gate kernel moves besides computing the gate: both BatchNorms' running
    statistics (the norm's mean and var, then SRM's BatchNorm's) by the momenta ``factors`` and, given
    ``counters`` (their ``num_batches_tracked``), each batch counter by one."""
    buffers: Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
    factors: Tuple[float, float]
    counters: Optional[Tuple[torch.Tensor, torch.Tensor]] = None


def _style_switches(style_pooling: str) -> dict:
    """The gate kernels' switches for SRM's style pooling: which statistics it uses."""
    return dict(USE_MEAN=style_pooling != 'std', USE_STD=style_pooling != 'mean')


def _per_map_grid(num_maps: int) -> Tuple[int]:
    return (_cdiv(num_maps, _MAPS_PER_PROGRAM),)


def map_sums(x: torch.Tensor) -> torch.Tensor:
    """Sums and sums of squares of ``x``'s maps, each map shifted by its first value, in parts:
    (split, 2, N, C), one part from each program sharing a map's spatial axis. The kernels that read
    them add the parts in order, so the sums are the same on every run."""
    grid = _grid(x)
    programs, split = grid.reduction
    batch = x.shape[0]
    sums = x.new_empty((split, 2, batch, grid.channels), dtype=acc_dtype(x))
    channels, hw, s_n, s_c, s_hw, num_cblocks = grid.args
    _kernels.stats_kernel[(programs, split)](
        x, sums, channels, batch * channels, hw, s_n, s_c, s_hw, num_cblocks, split, **grid.blocks)
    return sums


def moments(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-(n, c) mean and unbiased variance of ``x``."""
    sums = map_sums(x)
    batch, channels, height, width = x.shape
    mean, var = sums.new_empty(batch, channels), sums.new_empty(batch, channels)  # outputs may not alias
    _kernels.moments_kernel[_per_map_grid(batch * channels)](
        x, sums, mean, var, channels, batch * channels, height * width, x.stride(0), x.stride(1), sums.shape[0],
        BLOCK=_MAPS_PER_PROGRAM)
    return mean, var


def input_grad(x: torch.Tensor, mean: torch.Tensor, grad_mean: torch.Tensor, grad_var: torch.Tensor,
               grad_out: Optional[torch.Tensor] = None, scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Gradient for ``x`` through its moments, plus ``grad_out * scale`` when given."""
    grid = _grid(x)
    grad_x = torch.empty_like(x)
    has_grad_out = grad_out is not None
    _kernels.input_grad_kernel[grid.elementwise](
        x, mean.contiguous(), grad_mean.contiguous(), grad_var.contiguous(),
        _like(grad_out, x) if has_grad_out else x, scale.contiguous() if has_grad_out else mean, grad_x,
        *grid.args, HAS_GRAD_OUT=has_grad_out, **grid.blocks)
    return grad_x


def affine_residual_relu(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                         shortcut: torch.Tensor) -> torch.Tensor:
    """``relu(x * scale + bias + shortcut)`` with (N, C) ``scale`` and ``bias``."""
    return gate_apply(x, scale.contiguous(), bias.to(scale.dtype).contiguous(), shortcut)


def _shortcut_norm_args(shortcut_norm: Tuple[torch.Tensor, ...], eps: float, stand_in: torch.Tensor
                        ) -> Tuple[tuple, dict]:
    """The kernels' arguments for a BatchNorm that the shortcut still has to pass, given as ``shortcut_norm``
    (weight, bias, running mean, running var) and ``eps``: those tensors and the epsilon, and the
    ``SHORTCUT_NORM`` switch. Without one (``()``), ``stand_in`` takes the tensors' places, never read."""
    if not shortcut_norm:
        return (stand_in,) * 4 + (0.0,), dict(SHORTCUT_NORM=False)
    return (*shortcut_norm, eps), dict(SHORTCUT_NORM=True)


def gate_apply(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, shortcut: torch.Tensor,
               shortcut_norm: Tuple[torch.Tensor, ...] = (), shortcut_norm_eps: float = 0.0) -> torch.Tensor:
    """:func:`affine_residual_relu` for contiguous ``scale`` and ``bias`` of one dtype, as the gate
    kernels write them; the shortcut first passes ``shortcut_norm`` where given (:func:`_shortcut_norm_args`)."""
    grid = _grid(x)
    out = torch.empty_like(x)
    norm_args, switch = _shortcut_norm_args(shortcut_norm, shortcut_norm_eps, scale)
    _kernels.affine_residual_relu_kernel[grid.elementwise](
        x, scale, bias, _like(shortcut, x), out, *norm_args, *grid.args, **switch, **grid.blocks)
    return out


def affine_residual_relu_backward(grad: torch.Tensor, out: torch.Tensor, x: torch.Tensor, scale: torch.Tensor,
                                  shortcut_dtype: torch.dtype, write_grad_x: bool = True
                                  ) -> Tuple[Optional[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Gradients of :func:`affine_residual_relu` for ``x`` (None unless ``write_grad_x``), for ``scale``
    and ``bias`` in parts as :func:`map_sums` gives sums, (split, 2, N, C), and for ``shortcut``."""
    grid = _grid(x)
    grad_x = torch.empty_like(x) if write_grad_x else None
    grad_shortcut = torch.empty_like(x, dtype=shortcut_dtype)
    programs, split = grid.reduction
    grad_gate = x.new_empty((split, 2, *scale.shape), dtype=scale.dtype)
    channels, hw, s_n, s_c, s_hw, num_cblocks = grid.args
    _kernels.affine_residual_relu_backward_kernel[(programs, split)](
        _like(grad, x), out, x, scale.contiguous(), grad_x if write_grad_x else grad_shortcut, grad_shortcut,
        grad_gate, channels, scale.numel(), hw, s_n, s_c, s_hw, num_cblocks, split, WRITE_GRAD_X=write_grad_x,
        **grid.blocks)
    return grad_x, grad_gate, grad_shortcut


def folded_gate(y: torch.Tensor, sums: torch.Tensor, norm: Tuple[torch.Tensor, ...], norm_eps: float,
                cfc: torch.Tensor, srm_norm: Tuple[torch.Tensor, ...], srm_bn_eps: float, srm_eps: float,
                style_pooling: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Inference ``(k, b)`` per (n, c) from the map sums of ``y``, with the norm before SRM and SRM's
    BatchNorm, each given as (weight, bias, running mean, running var), folded in."""
    batch, channels, height, width = y.shape
    scale, bias = sums.new_empty(batch, channels), sums.new_empty(batch, channels)
    _kernels.folded_gate_kernel[_per_map_grid(batch * channels)](
        y, sums, *norm, cfc.contiguous(), *srm_norm, scale, bias, channels, batch * channels, height * width,
        y.stride(0), y.stride(1), sums.shape[0], norm_eps, srm_bn_eps, srm_eps, BLOCK=_MAPS_PER_PROGRAM,
        **_style_switches(style_pooling))
    return scale, bias


def takes_one_pass(y: torch.Tensor) -> bool:
    """Whether :func:`folded_block_tail` runs as :func:`folded_tail_one_pass` for ``y``: where it measured
    faster than three kernels, on NCHW maps of 28 x 28 or more (two runs on an H200, bf16, batch 256:
    0.71-0.75x their time at 56 x 56 and 28 x 28, 1.15-1.18x at 14 x 14, 1.75-1.77x at 7 x 7; in
    channels_last 1.18-1.40x from 56 x 56 to 14 x 14, and at 7 x 7 1.29x in one run, 0.82x in the other,
    where the three kernels took 59% longer), and where its programs, one for each sample and block of
    channels, are enough to fill the GPU. Elsewhere the three kernels' statistics split each map's
    spatial axis over programs."""
    grid = _one_pass_grid(y)
    return (not grid.channels_last and grid.positions >= _ONE_PASS_MIN_POSITIONS
            and grid.programs >= _ONE_PASS_MIN_PROGRAMS)


def folded_tail_one_pass(y: torch.Tensor, shortcut: torch.Tensor, norm: Tuple[torch.Tensor, ...], norm_eps: float,
                         cfc: torch.Tensor, srm_norm: Tuple[torch.Tensor, ...], srm_bn_eps: float, srm_eps: float,
                         style_pooling: str, shortcut_norm: Tuple[torch.Tensor, ...] = (),
                         shortcut_norm_eps: float = 0.0, channels_per_program: Optional[int] = None) -> torch.Tensor:
    """:func:`folded_block_tail` as one kernel, one program for each sample and block of channels, whose
    second sweep over ``y`` reads it from the caches where they still hold it. ``channels_per_program`` (a
    power of two) overrides the tile's channels (:func:`one_pass_tile`), for tile experiments."""
    grid = _one_pass_grid(y, channels_per_program)
    out = torch.empty_like(y)
    gate = y.new_empty((y.shape[0], 3, grid.channels), dtype=acc_dtype(y))
    norm_args, switch = _shortcut_norm_args(shortcut_norm, shortcut_norm_eps, out)
    _kernels.folded_tail_kernel[(grid.programs,)](
        y, _like(shortcut, y), out, gate, *norm, cfc.contiguous(), *srm_norm, norm_eps, srm_bn_eps, srm_eps,
        *norm_args, *grid.args, **_style_switches(style_pooling), **switch, **grid.blocks)
    return out


def folded_tail_three_kernels(y: torch.Tensor, shortcut: torch.Tensor, norm: Tuple[torch.Tensor, ...],
                              norm_eps: float, cfc: torch.Tensor, srm_norm: Tuple[torch.Tensor, ...],
                              srm_bn_eps: float, srm_eps: float, style_pooling: str,
                              shortcut_norm: Tuple[torch.Tensor, ...] = (), shortcut_norm_eps: float = 0.0
                              ) -> torch.Tensor:
    """:func:`folded_block_tail` as three kernels: the map sums of ``y`` (each map's spatial axis split over
    programs where that fills the GPU), the (n, c) gate, the fused apply."""
    sums = map_sums(y)
    scale, bias = folded_gate(y, sums, norm, norm_eps, cfc, srm_norm, srm_bn_eps, srm_eps, style_pooling)
    return gate_apply(y, scale, bias, shortcut, shortcut_norm, shortcut_norm_eps)


def folded_block_tail(y: torch.Tensor, shortcut: torch.Tensor, norm: Tuple[torch.Tensor, ...], norm_eps: float,
                      cfc: torch.Tensor, srm_norm: Tuple[torch.Tensor, ...], srm_bn_eps: float, srm_eps: float,
                      style_pooling: str, shortcut_norm: Tuple[torch.Tensor, ...] = (),
                      shortcut_norm_eps: float = 0.0) -> torch.Tensor:
    """Inference ``relu(SRM(norm(y)) + shortcut_norm(shortcut))``, the norm before SRM and SRM's BatchNorm (each
    given as weight, bias, running mean, running var) folded into the gate, and ``shortcut_norm`` (a
    downsample's BatchNorm, given the same way; ``()`` for none) into the apply: :func:`folded_tail_one_pass`
    where that is the faster (:func:`takes_one_pass`), else :func:`folded_tail_three_kernels`."""
    tail = folded_tail_one_pass if takes_one_pass(y) else folded_tail_three_kernels
    return tail(y, shortcut, norm, norm_eps, cfc, srm_norm, srm_bn_eps, srm_eps, style_pooling, shortcut_norm,
                shortcut_norm_eps)


@functools.lru_cache(maxsize=256)
def _gate_train_blocks(batch: int, channels: int) -> Tuple[Tuple[int], dict]:
    """Grid and tile of the training gate kernels: one program per block of channels, each holding
    the whole batch."""
    block_n = _next_power_of_2(batch)
    block_c = max(1, min(_next_power_of_2(channels), GATE_TRAIN_MAX_BATCH // block_n))
    return (_cdiv(channels, block_c),), dict(BLOCK_N=block_n, BLOCK_C=block_c)


def block_tail_train(y: torch.Tensor, shortcut: torch.Tensor, params: Tuple[torch.Tensor, ...],
                     eps: Tuple[float, float, float], style_pooling: str, running: Optional[RunningUpdate] = None
                     ) -> Tuple[torch.Tensor, ...]:
    """Training tail of an SRM block, ``relu(SRM(norm(y)) + shortcut)`` with both BatchNorms on batch
    statistics, in three kernels: the map sums of ``y``; each map's moments, the (n, c) gate ``k``,
    ``b`` and the batch statistics (4, C) of both BatchNorms; the fused apply.

    ``params``: the norm's weight and bias, ``cfc``, SRM's BatchNorm weight and bias; ``eps``: the norm's,
    SRM's BatchNorm's and SRM's. Given ``running`` the gate kernel also updates the running statistics
    (and the batch counters). Returns the output, the moments (N, C) and ``k`` that the backward pass
    reuses, and the batch statistics.
    """
    sums = map_sums(y)
    batch, channels, height, width = y.shape
    mean, var, scale, bias = (sums.new_empty(batch, channels) for _ in range(4))  # outputs may not alias
    stats = sums.new_empty(4, channels)
    update = running or RunningUpdate((stats,) * 4, (0.0, 0.0))  # without it the kernel ignores these
    norm_weight, norm_bias, cfc, srm_weight, srm_bias = params
    grid, blocks = _gate_train_blocks(batch, channels)
    _kernels.gate_train_kernel[grid](
        y, sums, norm_weight, norm_bias, cfc.contiguous(), srm_weight, srm_bias, mean, var, scale, bias, stats,
        *update.buffers, *(update.counters or (stats, stats)), batch, channels, height * width, y.stride(0),
        y.stride(1), sums.shape[0], *eps, *update.factors,
        UPDATE_RUNNING=running is not None, COUNT_BATCHES=update.counters is not None, **blocks,
        **_style_switches(style_pooling))
    return gate_apply(y, scale, bias, shortcut), mean, var, scale, stats


def block_tail_train_backward(grad: torch.Tensor, out: torch.Tensor, y: torch.Tensor, mean: torch.Tensor,
                              var: torch.Tensor, scale: torch.Tensor, params: Tuple[torch.Tensor, ...],
                              eps: Tuple[float, float, float], style_pooling: str, shortcut_dtype: torch.dtype
                              ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of :func:`block_tail_train` for ``y``, ``shortcut``, as rows of a (4, C) tensor the
    norm's weight and bias and SRM's BatchNorm weight and bias, and ``cfc`` (in its own layout, so
    that autograd keeps it as the parameter's gradient without a copy).

    Reads the output gradient once for the shortcut's gradient and the gate's, and ``y`` once more for
    ``y``'s whole gradient."""
    _, grad_gate, grad_shortcut = affine_residual_relu_backward(
        grad, out, y, scale, shortcut_dtype, write_grad_x=False)
    grad_mean, grad_var = torch.empty_like(mean), torch.empty_like(mean)
    norm_weight, norm_bias, cfc, srm_weight, srm_bias = params
    grad_params = mean.new_empty(4, mean.shape[1])
    grad_cfc = mean.new_empty(cfc.shape)
    grid, blocks = _gate_train_blocks(*mean.shape)
    _kernels.gate_train_backward_kernel[grid](
        mean, var, norm_weight, norm_bias, cfc.contiguous(), srm_weight, srm_bias, grad_gate, grad_mean, grad_var,
        grad_params, grad_cfc, *mean.shape, y.shape[2] * y.shape[3], grad_gate.shape[0], *eps,
        **blocks, **_style_switches(style_pooling))
    grad_y = input_grad(y, mean, grad_mean, grad_var, grad_out=grad_shortcut, scale=scale)
    return grad_y, grad_shortcut, grad_params, grad_cfc


def update_running_stats(stats: torch.Tensor, running: Tuple[torch.Tensor, ...], counts: Tuple[int, int],
                         factors: Tuple[float, float]) -> None:
    """Moves ``running`` (norm mean, norm var, SRM BatchNorm mean, var) towards the batch ``stats`` of
    :func:`block_tail_train` by ``factors``; variances made unbiased over ``counts`` values."""
    channels = stats.shape[1]
    _kernels.running_stats_kernel[_per_map_grid(channels)](
        stats, *running, channels, *counts, *factors, BLOCK=_MAPS_PER_PROGRAM)
