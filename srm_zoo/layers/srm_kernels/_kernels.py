"""SRM's Triton kernels (device code); :mod:`.launch` sizes and starts them.

A map is one (sample, channel) plane of an (N, C, H, W) tensor, addressed by the sample, channel and
flattened spatial strides, so NCHW and channels_last tensors take the same kernels. Statistics
accumulate in float32 (float64 for float64 inputs), whatever the input dtype. Epsilons and momenta
come as float64 arguments (:func:`_scalar`), not as tensors, so that a launch allocates nothing that
outlives it (CUDA graphs require that of what they capture).
"""
import triton
import triton.language as tl


@triton.jit
def _scalar(value, dtype: tl.constexpr):
    """A float64 argument (a Python float under the interpreter) rounded once to ``dtype``, as PyTorch
    rounds a Python float that it adds to a ``dtype`` tensor."""
    return tl.full((), value, dtype)


@triton.jit
def _epsilons(norm_eps, srm_bn_eps, srm_eps, dtype: tl.constexpr):
    """The norm's, SRM's BatchNorm's and SRM's epsilons as ``dtype`` scalars (:func:`_scalar`)."""
    return _scalar(norm_eps, dtype), _scalar(srm_bn_eps, dtype), _scalar(srm_eps, dtype)


@triton.jit
def _sample_channels(C, num_cblocks, BLOCK_C: tl.constexpr):
    """This program's sample and block of channels (the first grid axis runs over both), with the
    channels' mask."""
    pid = tl.program_id(0)
    c = (pid % num_cblocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    return (pid // num_cblocks).to(tl.int64), c, c < C


@triton.jit
def _shifted_sums(x_ptr, rows, c_mask, HW, s_hw, first, step, acc_dtype: tl.constexpr, eviction: tl.constexpr,
                  BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """Each map's first value (the shift) and the sums of its shifted values and of their squares over
    the spatial tiles that start at ``first``, ``first + step``, ..., for the maps of the channels
    starting at offsets ``rows``; the tiles read with cache eviction policy ``eviction``."""
    shift = tl.load(x_ptr + rows, mask=c_mask, other=0.).to(acc_dtype)
    acc = tl.zeros((BLOCK_C, BLOCK_HW), dtype=acc_dtype)
    acc_sq = tl.zeros((BLOCK_C, BLOCK_HW), dtype=acc_dtype)
    for start in range(first, HW, step):
        hw = start + tl.arange(0, BLOCK_HW)
        mask = c_mask[:, None] & (hw[None, :] < HW)
        v = tl.load(x_ptr + rows[:, None] + hw[None, :] * s_hw, mask=mask, other=0.,
                    eviction_policy=eviction).to(acc_dtype)
        v = tl.where(mask, v - shift[:, None], 0.)
        acc += v
        acc_sq += v * v
    return shift, tl.sum(acc, 1), tl.sum(acc_sq, 1)


@triton.jit
def stats_kernel(x_ptr, sums_ptr, C, NC, HW, s_n, s_c, s_hw, num_cblocks, split,
                 BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """Each map's sum and sum of squares, after subtracting its first value, into ``sums``
    (split, 2, N, C): the spatial axis may be split over ``split`` programs, each storing its part
    (no atomics: the sums come out the same on every run)."""
    n, c, c_mask = _sample_channels(C, num_cblocks, BLOCK_C)
    _, total, total_sq = _shifted_sums(x_ptr, n * s_n + c * s_c, c_mask, HW, s_hw, tl.program_id(1) * BLOCK_HW,
                                       split * BLOCK_HW, sums_ptr.dtype.element_ty, '', BLOCK_C, BLOCK_HW)
    part = sums_ptr + tl.program_id(1).to(tl.int64) * 2 * NC + n * C + c
    tl.store(part, total, mask=c_mask)
    tl.store(part + NC, total_sq, mask=c_mask)


@triton.jit
def _load_parts(ptr, index, mask, NC, split):
    """The rows ``index`` of the (split, 2, N, C) partial sums at ``ptr``, each pair of rows added
    over the ``split`` parts in order."""
    first = tl.load(ptr + index, mask=mask, other=0.)
    second = tl.load(ptr + NC + index, mask=mask, other=0.)
    for part in range(1, split):
        offset = part * 2 * NC
        first += tl.load(ptr + offset + index, mask=mask, other=0.)
        second += tl.load(ptr + offset + NC + index, mask=mask, other=0.)
    return first, second


@triton.jit
def _load_moments(x_ptr, sums_ptr, index, mask, C, NC, HW, s_n, s_c, split):
    """Mean and unbiased variance (0 for a single value) of the maps ``index`` (flat n * C + c)."""
    acc_dtype = sums_ptr.dtype.element_ty
    n = (index // C).to(tl.int64)
    shift = tl.load(x_ptr + n * s_n + (index % C) * s_c, mask=mask, other=0.).to(acc_dtype)
    total, total_sq = _load_parts(sums_ptr, index, mask, NC, split)
    return _shifted_moments(shift, total, total_sq, HW)


@triton.jit
def _shifted_moments(shift, total, total_sq, HW):
    """Mean and unbiased variance (0 for a single value) of maps of ``HW`` values from their first value
    ``shift`` and the sums of the shifted values and of their squares."""
    mean = shift + total / HW
    var = tl.maximum((total_sq - total * total / HW) / tl.maximum(HW - 1, 1), 0.)
    return mean, var


@triton.jit
def moments_kernel(x_ptr, sums_ptr, mean_ptr, var_ptr, C, NC, HW, s_n, s_c, split, BLOCK: tl.constexpr):
    index = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = index < NC
    mean, var = _load_moments(x_ptr, sums_ptr, index, mask, C, NC, HW, s_n, s_c, split)
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
def _folded_gate(mean_y, var_y, c, mask, norm_weight_ptr, norm_bias_ptr, norm_mean_ptr, norm_var_ptr, cfc_ptr,
                 srm_weight_ptr, srm_bias_ptr, srm_mean_ptr, srm_var_ptr, norm_eps, srm_bn_eps, srm_eps,
                 USE_MEAN: tl.constexpr, USE_STD: tl.constexpr):
    """``(k, b) = (gate * a, gate * d)`` for ``relu(y * k + b + shortcut)``, from the moments of maps of
    ``y`` in channels ``c``: ``a * y + d`` is the norm before SRM and ``gate`` SRM's, both normalising with
    running statistics (with the norm's epsilon, SRM's BatchNorm's and SRM's)."""
    acc_dtype = mean_y.dtype
    norm_eps, srm_bn_eps, srm_eps = _epsilons(norm_eps, srm_bn_eps, srm_eps, acc_dtype)
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
    return gate * a, gate * d


@triton.jit
def folded_gate_kernel(x_ptr, sums_ptr, norm_weight_ptr, norm_bias_ptr, norm_mean_ptr, norm_var_ptr,
                       cfc_ptr, srm_weight_ptr, srm_bias_ptr, srm_mean_ptr, srm_var_ptr, scale_ptr, bias_ptr,
                       C, NC, HW, s_n, s_c, split, norm_eps: tl.float64, srm_bn_eps: tl.float64,
                       srm_eps: tl.float64, USE_MEAN: tl.constexpr, USE_STD: tl.constexpr, BLOCK: tl.constexpr):
    """Per (n, c), from the map sums of ``x``: :func:`_folded_gate`'s ``k`` into ``scale``, ``b`` into ``bias``."""
    index = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = index < NC
    mean_y, var_y = _load_moments(x_ptr, sums_ptr, index, mask, C, NC, HW, s_n, s_c, split)
    k, b = _folded_gate(mean_y, var_y, index % C, mask, norm_weight_ptr, norm_bias_ptr, norm_mean_ptr, norm_var_ptr,
                        cfc_ptr, srm_weight_ptr, srm_bias_ptr, srm_mean_ptr, srm_var_ptr, norm_eps, srm_bn_eps, srm_eps,
                        USE_MEAN, USE_STD)
    tl.store(scale_ptr + index, k, mask=mask)
    tl.store(bias_ptr + index, b, mask=mask)


@triton.jit
def _elementwise_tile(C, HW, s_n, s_c, s_hw, num_cblocks, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """This program's (sample, channel block, spatial block) tile: sample, channels, mask, element offsets."""
    n, c, c_mask = _sample_channels(C, num_cblocks, BLOCK_C)
    hw = tl.program_id(1) * BLOCK_HW + tl.arange(0, BLOCK_HW)
    mask = c_mask[:, None] & (hw[None, :] < HW)
    return n, c, mask, n * s_n + c[:, None] * s_c + hw[None, :] * s_hw


@triton.jit
def _batch_tile(N, C, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    """This program's block of channels with the whole batch: channels, their mask, the (N, C-block)
    tile's mask and flat (n * C + c) indices."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    n = tl.arange(0, BLOCK_N)
    c_mask = c < C
    return c, c_mask, (n[:, None] < N) & c_mask[None, :], n[:, None] * C + c[None, :]


@triton.jit
def _gate_train_tile(m, v, c, c_mask, mask, norm_weight_ptr, norm_bias_ptr, cfc_ptr, srm_weight_ptr, srm_bias_ptr,
                     norm_eps, srm_bn_eps, srm_eps, N, HW, USE_MEAN: tl.constexpr, USE_STD: tl.constexpr):
    """Training-mode gate for the (N, C-block) tile of map moments ``m``, ``v``: the norm's batch
    statistics from the moments, SRM's statistics of the normalised maps, SRM's BatchNorm over N.
    Returns the parameters and intermediates."""
    acc_dtype = m.dtype
    norm_weight = tl.load(norm_weight_ptr + c, mask=c_mask, other=0.).to(acc_dtype)
    norm_bias = tl.load(norm_bias_ptr + c, mask=c_mask, other=0.).to(acc_dtype)
    srm_weight = tl.load(srm_weight_ptr + c, mask=c_mask, other=0.).to(acc_dtype)
    srm_bias = tl.load(srm_bias_ptr + c, mask=c_mask, other=0.).to(acc_dtype)
    num_styles = USE_MEAN + USE_STD
    cfc_mean = tl.load(cfc_ptr + c * num_styles, mask=c_mask & USE_MEAN, other=0.).to(acc_dtype)
    cfc_std = tl.load(cfc_ptr + c * num_styles + USE_MEAN, mask=c_mask & USE_STD, other=0.).to(acc_dtype)
    norm_eps, srm_bn_eps, srm_eps = _epsilons(norm_eps, srm_bn_eps, srm_eps, acc_dtype)

    mu = tl.sum(m, 0) / N
    centered = tl.where(mask, m - mu[None, :], 0.)
    var = tl.sum(v, 0) * (HW - 1) / HW / N + tl.sum(centered * centered, 0) / N
    r = 1 / tl.sqrt(var + norm_eps)
    a = norm_weight * r
    d = norm_bias - mu * a
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
    return (norm_weight, cfc_mean, cfc_std, srm_weight,
            mu, centered, var, r, a, d, mean_x, std_x, mu_z, var_z, r_z, z_hat, gate)


@triton.jit
def _move_running(running_ptr, batch_value, c, mask, factor):
    """A running statistic moved towards ``batch_value`` by ``factor``, in ``batch_value``'s float type (float32
    or wider) and rounded once to the statistic's own (bfloat16 and float16 in a model cast to them), as
    :class:`torch.nn.BatchNorm2d` does."""
    running = tl.load(running_ptr + c, mask=mask, other=0.)
    wide = running.to(batch_value.dtype)
    moved = wide + _scalar(factor, batch_value.dtype) * (batch_value - wide)
    tl.store(running_ptr + c, moved.to(running.dtype), mask=mask)


@triton.jit
def _update_running(c, mask, mu, var, mu_z, var_z, norm_mean_ptr, norm_var_ptr, srm_mean_ptr, srm_var_ptr,
                    norm_count, srm_count, norm_factor, srm_factor):
    """Both BatchNorms' running statistics moved towards their batch statistics (biased variances
    ``var`` over ``norm_count`` values, ``var_z`` over ``srm_count``) as :class:`torch.nn.BatchNorm2d`
    does, with the momenta ``norm_factor`` and ``srm_factor``."""
    _move_running(norm_mean_ptr, mu, c, mask, norm_factor)
    _move_running(norm_var_ptr, var * norm_count / (norm_count - 1), c, mask, norm_factor)
    _move_running(srm_mean_ptr, mu_z, c, mask, srm_factor)
    _move_running(srm_var_ptr, var_z * srm_count / (srm_count - 1), c, mask, srm_factor)


@triton.jit
def gate_train_kernel(x_ptr, sums_ptr, norm_weight_ptr, norm_bias_ptr, cfc_ptr, srm_weight_ptr, srm_bias_ptr,
                      mean_ptr, var_ptr, scale_ptr, bias_ptr, stats_ptr, norm_mean_ptr, norm_var_ptr, srm_mean_ptr,
                      srm_var_ptr, norm_batches_ptr, srm_batches_ptr, N, C, HW, s_n, s_c, split,
                      norm_eps: tl.float64, srm_bn_eps: tl.float64, srm_eps: tl.float64, norm_factor: tl.float64,
                      srm_factor: tl.float64, USE_MEAN: tl.constexpr, USE_STD: tl.constexpr,
                      UPDATE_RUNNING: tl.constexpr, COUNT_BATCHES: tl.constexpr, BLOCK_N: tl.constexpr,
                      BLOCK_C: tl.constexpr):
    """From the map sums of ``x`` (the convolution output; ``split`` parts): each map's mean and
    variance, ``k = gate * a`` and ``b = gate * d`` per (n, c) in training, the batch statistics of both
    BatchNorms as rows of ``stats`` (4, C): mean and biased variance of the norm, then of SRM's; with
    ``UPDATE_RUNNING`` also both BatchNorms' running statistics, and with ``COUNT_BATCHES`` their batch
    counters (``num_batches_tracked``, one each, added by the first program)."""
    c, c_mask, mask, index = _batch_tile(N, C, BLOCK_N, BLOCK_C)
    m, v = _load_moments(x_ptr, sums_ptr, index, mask, C, N * C, HW, s_n, s_c, split)
    (norm_weight, cfc_mean, cfc_std, srm_weight, mu, centered, var, r, a, d, mean_x, std_x, mu_z, var_z, r_z,
     z_hat, gate) = _gate_train_tile(m, v, c, c_mask, mask, norm_weight_ptr, norm_bias_ptr, cfc_ptr,
                                     srm_weight_ptr, srm_bias_ptr, norm_eps, srm_bn_eps, srm_eps, N, HW, USE_MEAN,
                                     USE_STD)
    tl.store(mean_ptr + index, m, mask=mask)
    tl.store(var_ptr + index, v, mask=mask)
    tl.store(scale_ptr + index, gate * a[None, :], mask=mask)
    tl.store(bias_ptr + index, gate * d[None, :], mask=mask)
    tl.store(stats_ptr + c, mu, mask=c_mask)
    tl.store(stats_ptr + C + c, var, mask=c_mask)
    tl.store(stats_ptr + 2 * C + c, mu_z, mask=c_mask)
    tl.store(stats_ptr + 3 * C + c, var_z, mask=c_mask)
    if UPDATE_RUNNING:
        _update_running(c, c_mask, mu, var, mu_z, var_z, norm_mean_ptr, norm_var_ptr, srm_mean_ptr, srm_var_ptr,
                        N * HW, N, norm_factor, srm_factor)
    if COUNT_BATCHES:
        first = tl.program_id(0) == 0
        tl.store(norm_batches_ptr, tl.load(norm_batches_ptr, mask=first) + 1, mask=first)
        tl.store(srm_batches_ptr, tl.load(srm_batches_ptr, mask=first) + 1, mask=first)


@triton.jit
def running_stats_kernel(stats_ptr, norm_mean_ptr, norm_var_ptr, srm_mean_ptr, srm_var_ptr, C, norm_count,
                         srm_count, norm_factor: tl.float64, srm_factor: tl.float64, BLOCK: tl.constexpr):
    """Both BatchNorms' running statistics moved towards the batch statistics ``stats`` of
    :func:`gate_train_kernel`."""
    c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = c < C
    mu = tl.load(stats_ptr + c, mask=mask, other=0.)
    var = tl.load(stats_ptr + C + c, mask=mask, other=0.)
    mu_z = tl.load(stats_ptr + 2 * C + c, mask=mask, other=0.)
    var_z = tl.load(stats_ptr + 3 * C + c, mask=mask, other=0.)
    _update_running(c, mask, mu, var, mu_z, var_z, norm_mean_ptr, norm_var_ptr, srm_mean_ptr, srm_var_ptr,
                    norm_count, srm_count, norm_factor, srm_factor)


@triton.jit
def gate_train_backward_kernel(mean_ptr, var_ptr, norm_weight_ptr, norm_bias_ptr, cfc_ptr, srm_weight_ptr,
                               srm_bias_ptr, grad_gate_ptr, grad_mean_ptr, grad_var_ptr,
                               grad_params_ptr, grad_cfc_ptr, N, C, HW, split, norm_eps: tl.float64,
                               srm_bn_eps: tl.float64, srm_eps: tl.float64, USE_MEAN: tl.constexpr,
                               USE_STD: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    """Gradients of ``gate_train_kernel``'s ``k`` and ``b`` (``grad_gate``: (split, 2, N, C) parts) for the
    moments and the parameters: rows of ``grad_params`` (4, C) for the norm's weight and bias and SRM's
    BatchNorm weight and bias, and ``grad_cfc`` in the (C, S) layout of ``cfc``."""
    c, c_mask, mask, index = _batch_tile(N, C, BLOCK_N, BLOCK_C)
    m = tl.load(mean_ptr + index, mask=mask, other=0.)
    v = tl.load(var_ptr + index, mask=mask, other=0.)
    (norm_weight, cfc_mean, cfc_std, srm_weight, mu, centered, var, r, a, d, mean_x, std_x, mu_z, var_z, r_z,
     z_hat, gate) = _gate_train_tile(m, v, c, c_mask, mask, norm_weight_ptr, norm_bias_ptr, cfc_ptr,
                                     srm_weight_ptr, srm_bias_ptr, norm_eps, srm_bn_eps, srm_eps, N, HW, USE_MEAN,
                                     USE_STD)
    grad_k, grad_b = _load_parts(grad_gate_ptr, index, mask, N * C, split)
    grad_k, grad_b = grad_k.to(m.dtype), grad_b.to(m.dtype)
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
    tl.store(grad_params_ptr + 2 * C + c, grad_srm_weight, mask=c_mask)
    tl.store(grad_params_ptr + 3 * C + c, grad_srm_bias, mask=c_mask)
    num_styles = USE_MEAN + USE_STD
    if USE_MEAN:
        tl.store(grad_cfc_ptr + c * num_styles, tl.sum(grad_z * mean_x, 0), mask=c_mask)
    if USE_STD:
        tl.store(grad_cfc_ptr + c * num_styles + USE_MEAN, tl.sum(tl.where(mask, grad_z * std_x, 0.), 0), mask=c_mask)


@triton.jit
def input_grad_kernel(x_ptr, mean_ptr, grad_mean_ptr, grad_var_ptr, grad_out_ptr, scale_ptr, out_ptr,
                      C, HW, s_n, s_c, s_hw, num_cblocks, HAS_GRAD_OUT: tl.constexpr,
                      BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """Gradient for ``x`` through its map moments, ``grad_mean / HW + grad_var * 2 (x - mean) / (HW - 1)``
    (no variance term for HW = 1), plus ``grad_out * scale`` where ``x`` was also scaled per (n, c)."""
    n, c, mask, offsets = _elementwise_tile(C, HW, s_n, s_c, s_hw, num_cblocks, BLOCK_C, BLOCK_HW)
    mean = tl.load(mean_ptr + n * C + c, mask=c < C, other=0.)
    grad_mean = tl.load(grad_mean_ptr + n * C + c, mask=c < C, other=0.).to(mean.dtype)
    grad_var = tl.load(grad_var_ptr + n * C + c, mask=c < C, other=0.).to(mean.dtype)
    var_scale = tl.where(HW > 1, grad_var * 2 / tl.maximum(HW - 1, 1), 0.)
    v = tl.load(x_ptr + offsets, mask=mask, other=0.).to(mean.dtype)
    out = (v - mean[:, None]) * var_scale[:, None] + grad_mean[:, None] / HW
    if HAS_GRAD_OUT:
        scale = tl.load(scale_ptr + n * C + c, mask=c < C, other=0.).to(mean.dtype)
        out += tl.load(grad_out_ptr + offsets, mask=mask, other=0.).to(mean.dtype) * scale[:, None]
    tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _with_shortcut_norm(bias, c, c_mask, sc_weight_ptr, sc_bias_ptr, sc_mean_ptr, sc_var_ptr, sc_eps,
                        SHORTCUT_NORM: tl.constexpr):
    """``(bias + shift, scale)`` for channels ``c`` with ``SHORTCUT_NORM``, where the shortcut still has to pass
    a BatchNorm that normalises with its running statistics, ``norm(s) = s * scale + shift``:
    ``relu(x * k + bias + norm(s))`` is then ``relu(x * k + (bias + shift) + s * scale)``. Without it
    ``bias`` unchanged, and ``bias`` again in place of the scale, which is then never read."""
    shortcut_scale = bias
    if SHORTCUT_NORM:
        shortcut_scale, shift = _running_affine(sc_weight_ptr, sc_bias_ptr, sc_mean_ptr, sc_var_ptr, c, c_mask,
                                                _scalar(sc_eps, bias.dtype), bias.dtype)
        bias = bias + shift
    return bias, shortcut_scale


@triton.jit
def _affine_residual_relu_tile(x_ptr, shortcut_ptr, out_ptr, offsets, mask, scale, bias, shortcut_scale,
                               SCALE_SHORTCUT: tl.constexpr):
    """``relu(x * scale + bias + shortcut)`` for one tile, ``scale`` and ``bias`` per channel (the tile's
    rows), the shortcut multiplied by ``shortcut_scale`` (per channel) first if ``SCALE_SHORTCUT``. Both
    inputs are read for the last time: the caches may drop them first."""
    v = tl.load(x_ptr + offsets, mask=mask, other=0., eviction_policy='evict_first').to(scale.dtype)
    s = tl.load(shortcut_ptr + offsets, mask=mask, other=0., eviction_policy='evict_first').to(scale.dtype)
    if SCALE_SHORTCUT:
        s = s * shortcut_scale[:, None]
    out = tl.maximum(v * scale[:, None] + bias[:, None] + s, 0.)
    tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def affine_residual_relu_kernel(x_ptr, scale_ptr, bias_ptr, shortcut_ptr, out_ptr, sc_weight_ptr, sc_bias_ptr,
                                sc_mean_ptr, sc_var_ptr, sc_eps: tl.float64, C, HW, s_n, s_c, s_hw, num_cblocks,
                                SHORTCUT_NORM: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """``relu(x * scale + bias + shortcut)`` with (N, C) ``scale`` and ``bias``; with ``SHORTCUT_NORM`` the
    shortcut first passes a BatchNorm with running statistics (:func:`_with_shortcut_norm`)."""
    n, c, mask, offsets = _elementwise_tile(C, HW, s_n, s_c, s_hw, num_cblocks, BLOCK_C, BLOCK_HW)
    scale = tl.load(scale_ptr + n * C + c, mask=c < C, other=0.)
    bias = tl.load(bias_ptr + n * C + c, mask=c < C, other=0.)
    bias, shortcut_scale = _with_shortcut_norm(bias, c, c < C, sc_weight_ptr, sc_bias_ptr, sc_mean_ptr, sc_var_ptr,
                                               sc_eps, SHORTCUT_NORM)
    _affine_residual_relu_tile(x_ptr, shortcut_ptr, out_ptr, offsets, mask, scale, bias, shortcut_scale,
                               SHORTCUT_NORM)


@triton.jit
def folded_tail_kernel(x_ptr, shortcut_ptr, out_ptr, gate_ptr, norm_weight_ptr, norm_bias_ptr, norm_mean_ptr,
                       norm_var_ptr, cfc_ptr, srm_weight_ptr, srm_bias_ptr, srm_mean_ptr, srm_var_ptr,
                       norm_eps: tl.float64, srm_bn_eps: tl.float64, srm_eps: tl.float64, sc_weight_ptr, sc_bias_ptr,
                       sc_mean_ptr, sc_var_ptr, sc_eps: tl.float64, C, HW, s_n, s_c, s_hw, num_cblocks,
                       USE_MEAN: tl.constexpr, USE_STD: tl.constexpr, SHORTCUT_NORM: tl.constexpr,
                       BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """The whole inference tail ``relu(x * k + b + shortcut)`` (:func:`_folded_gate`) in one kernel: each
    program sweeps the maps of one sample and ``BLOCK_C`` channels twice, first for their sums, then to
    apply their gate. The first sweep asks the caches to keep ``x``, and the second, which runs backwards,
    reads it from there rather than from memory wherever they still hold it. With ``SHORTCUT_NORM`` the
    shortcut first passes a BatchNorm with running statistics (:func:`_with_shortcut_norm`).

    The per-channel values pass through this sample's rows of ``gate`` (N, 3, C), in the float type of the
    sums: the moments, then ``k``, ``b`` and the shortcut's scale, which each tile of the second sweep loads
    again. In channels_last a tile holds several channels per thread, and so would every value of the gate
    computed in its layout, for the whole second sweep: through memory the gate takes one channel per
    thread, and the apply loop keeps no per-channel values between tiles (64 registers per thread instead
    of 108 in channels_last: ``python -m srm_zoo.benchmark.registers``)."""
    n, c, c_mask = _sample_channels(C, num_cblocks, BLOCK_C)
    rows = n * s_n + c * s_c
    acc_dtype = gate_ptr.dtype.element_ty
    shift, total, total_sq = _shifted_sums(x_ptr, rows, c_mask, HW, s_hw, 0, BLOCK_HW, acc_dtype, 'evict_last',
                                           BLOCK_C, BLOCK_HW)
    mean, var = _shifted_moments(shift, total, total_sq, HW)
    gate_ptr += n * 3 * C
    tl.store(gate_ptr + c, mean, mask=c_mask)
    tl.store(gate_ptr + C + c, var, mask=c_mask)
    tl.debug_barrier()
    _, channel, mask = _sample_channels(C, num_cblocks, BLOCK_C)  # loaded anew: a layout of its own
    k, b = _folded_gate(tl.load(gate_ptr + channel, mask=mask, other=0.),
                        tl.load(gate_ptr + C + channel, mask=mask, other=0.), channel, mask, norm_weight_ptr,
                        norm_bias_ptr, norm_mean_ptr, norm_var_ptr, cfc_ptr, srm_weight_ptr, srm_bias_ptr,
                        srm_mean_ptr, srm_var_ptr, norm_eps, srm_bn_eps, srm_eps, USE_MEAN, USE_STD)
    b, shortcut_scale = _with_shortcut_norm(b, channel, mask, sc_weight_ptr, sc_bias_ptr, sc_mean_ptr, sc_var_ptr,
                                            sc_eps, SHORTCUT_NORM)
    tl.debug_barrier()  # every thread has read the moments
    tl.store(gate_ptr + channel, k, mask=mask)
    tl.store(gate_ptr + C + channel, b, mask=mask)
    if SHORTCUT_NORM:
        tl.store(gate_ptr + 2 * C + channel, shortcut_scale, mask=mask)
    tl.debug_barrier()
    num_tiles = tl.cdiv(HW, BLOCK_HW)
    for tile in range(0, num_tiles):  # backwards: the tiles read last are likeliest still in the caches
        hw = (num_tiles - 1 - tile) * BLOCK_HW + tl.arange(0, BLOCK_HW)
        tile_k = tl.load(gate_ptr + c, mask=c_mask, other=0.)
        tile_b = tl.load(gate_ptr + C + c, mask=c_mask, other=0.)
        tile_shortcut_scale = tile_b  # read only with SHORTCUT_NORM
        if SHORTCUT_NORM:
            tile_shortcut_scale = tl.load(gate_ptr + 2 * C + c, mask=c_mask, other=0.)
        _affine_residual_relu_tile(x_ptr, shortcut_ptr, out_ptr, rows[:, None] + hw[None, :] * s_hw,
                                   c_mask[:, None] & (hw[None, :] < HW), tile_k, tile_b, tile_shortcut_scale,
                                   SHORTCUT_NORM)


@triton.jit
def affine_residual_relu_backward_kernel(grad_ptr, out_ptr, x_ptr, scale_ptr, grad_x_ptr, grad_shortcut_ptr,
                                         grad_gate_ptr, C, NC, HW, s_n, s_c, s_hw, num_cblocks,
                                         split, WRITE_GRAD_X: tl.constexpr,
                                         BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """Gradients of ``relu(x * scale + bias + shortcut)``: the shortcut's (the output gradient where the
    output is positive), ``x``'s unless ``WRITE_GRAD_X`` is off, and per-(n, c) sums for scale and bias
    into ``grad_gate`` (split, 2, N, C), a part from each of the ``split`` programs of a map."""
    n, c, c_mask = _sample_channels(C, num_cblocks, BLOCK_C)
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
        if WRITE_GRAD_X:
            tl.store(grad_x_ptr + offsets, (grad * scale[:, None]).to(grad_x_ptr.dtype.element_ty), mask=mask)
        acc_scale += grad * v
        acc_bias += grad
    part = grad_gate_ptr + tl.program_id(1).to(tl.int64) * 2 * NC + n * C + c
    tl.store(part, tl.sum(acc_scale, 1), mask=c_mask)
    tl.store(part + NC, tl.sum(acc_bias, 1), mask=c_mask)
