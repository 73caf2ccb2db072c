"""Triton kernel cases, run by tests/test_srm_kernels in a subprocess under Triton's interpreter.

Needs ``TRITON_INTERPRET=1`` and ``SRM_ZOO_TRITON_ON_CPU=1`` in the environment before triton is
imported; the kernels then run on CPU tensors. Sizes are tiny: the interpreter is slow.
"""
import copy
import gc
import os
import warnings
from functools import partial

import pytest
import timm
import torch
import torch.nn as nn
from timm.models.resnet import Bottleneck, downsample_avg, downsample_conv

from conftest import randomize_
from srm_zoo.benchmark.gpu_check import (BF16_CHECKED, INFERENCE_TAILS, block_tail_errors, folded_tail_args,
                                         inference_tail_errors, kernel_errors, randomize_srm_,
                                         second_derivative_errors, transform_errors)
from srm_zoo.benchmark.memory import saved_activation_bytes
from srm_zoo.layers import SRM, srm_kernels, use_reference
from srm_zoo.layers.srm_kernels import launch
from srm_zoo.models.srm_blocks import SRMBasicBlock, SRMBottleneck

pytestmark = pytest.mark.skipif(
    os.environ.get('TRITON_INTERPRET') != '1' or not srm_kernels.available(),
    reason='needs triton and TRITON_INTERPRET=1 (run through tests/test_srm_kernels)')

SHAPES = [(2, 5, 3, 7), (3, 4, 1, 1), (2, 3, 1, 5), (1, 130, 2, 3), (1, 2, 30, 30)]
TOLERANCES = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-5}  # relative to the largest value


def _input(shape, dtype, channels_last, offset=1.0):
    x = (torch.randn(shape, dtype=torch.float64) * 3 + offset).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _counting(monkeypatch, module, name):
    """Calls of ``module.name`` from now on, by the shape of their first argument."""
    calls, function = [], getattr(module, name)
    monkeypatch.setattr(module, name, lambda *args, **kwargs: calls.append(args[0].shape) or function(*args, **kwargs))
    return calls


def test_kernels_take_cpu_tensors_here():
    assert srm_kernels.applies(torch.zeros(1, 2, 3, 3))
    assert srm_kernels.applies(torch.zeros(1, 2, 3, 3).contiguous(memory_format=torch.channels_last))
    assert not srm_kernels.applies(torch.zeros(1, 2, 4, 4)[:, :, ::2])  # H and W do not flatten


def _views_with_gaps_or_overlaps():
    """Inputs whose H and W flatten into one axis but whose memory has gaps or overlaps: the kernels write
    their outputs at the input's strides, so they must not take them."""
    generator = torch.Generator().manual_seed(0)
    full = torch.randn(2, 8, 3, 5, dtype=torch.float64, generator=generator)
    single = torch.randn(1, 4, 3, 5, dtype=torch.float64, generator=generator)
    return {'channel chunk': full.chunk(2, dim=1)[0], 'expanded batch': single.expand(2, 4, 3, 5),
            'channels_last chunk': full.contiguous(memory_format=torch.channels_last)[:, 4:]}


@pytest.mark.parametrize('kind', ['channel chunk', 'expanded batch', 'channels_last chunk'])
@pytest.mark.parametrize('training', [False, True])
def test_views_with_gaps_or_overlaps_match_the_reference(kind, training):
    x = _views_with_gaps_or_overlaps()[kind]
    assert not srm_kernels.applies(x)
    shortcut = _views_with_gaps_or_overlaps()[kind].flip(0)  # the same layout, other values
    srm = randomize_srm_(SRM(4).double(), torch.Generator().manual_seed(1)).train(training)
    results = []
    for reference in (True, False):
        leaf = x.detach().requires_grad_(True)
        module = copy.deepcopy(srm)
        with use_reference(reference):
            out, gated = module(leaf, shortcut), module(leaf)
        (out.square().sum() + gated.sum()).backward()
        results.append((out, gated, leaf.grad, module.cfc.grad, *module.buffers()))
    for actual, expected in zip(results[1], results[0]):
        torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('training', [False, True])
def test_block_tail_of_mixed_dtypes_takes_the_promoted_dtype(training):
    """A float32 convolution output with a float64 shortcut gives a float64 tail, as the reference's
    ``relu(srm(bn(y)) + shortcut)`` does (the kernels, which write in ``y``'s dtype, do not take it)."""
    block = randomize_(SRMBottleneck(8, 2, attn_layer=SRM)).train(training)
    y = torch.randn(2, 8, 3, 3) * 2 + 1
    shortcut = torch.randn(2, 8, 3, 3, dtype=torch.float64)
    fresh = copy.deepcopy(block)
    with torch.no_grad():
        out = block.se.forward_after_norm(block.bn3, y, shortcut)
        with use_reference(True):
            expected = fresh.se(fresh.bn3(y), shortcut)
    assert out.dtype == expected.dtype == torch.float64
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for actual, reference in zip(block.buffers(), fresh.buffers()):
        torch.testing.assert_close(actual, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('norm', ['group norm', 'batch norm with an activation'])
@pytest.mark.parametrize('training', [False, True])
@pytest.mark.parametrize('grad', [False, True])
def test_another_norm_in_srm_leaves_the_kernel_tails(norm, training, grad):
    """SRM's BatchNorm replaced by another norm: neither block tail kernel folds it (the inference kernel
    folded a BatchNormAct2d without its activation, and read ``running_mean`` of any norm)."""
    block = randomize_(SRMBottleneck(8, 2, attn_layer=SRM)).double().train(training)
    block.se.bn = randomize_(nn.GroupNorm(2, 8) if norm == 'group norm'
                             else timm.layers.BatchNormAct2d(8, act_layer=nn.ReLU)).double().train(training)
    fresh = copy.deepcopy(block)
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64)
    with torch.set_grad_enabled(grad):
        out = block(x)
        with use_reference(True):
            expected = fresh(x)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    for actual, reference in zip(block.buffers(), fresh.buffers()):
        torch.testing.assert_close(actual, reference, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32, torch.bfloat16])
def test_kernels_forward_and_gradients(shape, channels_last, dtype):
    generator = torch.Generator().manual_seed(0)
    x = _input(shape, dtype, channels_last, offset=50.0)
    shortcut = _input(shape, dtype, channels_last, offset=0.0)
    errors = kernel_errors(x, shortcut, generator)
    tolerance = TOLERANCES[dtype]
    for name, error in errors.items():
        # bfloat16 gradients and outputs are rounded to 8 bits; the statistics accumulate in float32
        assert error <= (tolerance if dtype != torch.bfloat16 or name == 'stats' else 1e-2), (name, error)


def test_model_matches_reference_float64():
    model = randomize_(timm.create_model('srm_resnet20_cifar', depth=8)).double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        with use_reference(True):
            expected = model.eval()(x)
        torch.testing.assert_close(model(x), expected, rtol=1e-10, atol=1e-10)
    model.train()
    with use_reference(True):
        expected = model(x)
        expected.square().sum().backward()
    expected_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    out = model(x)
    out.square().sum().backward()
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    for p, grad_expected in zip(model.parameters(), expected_grads):
        torch.testing.assert_close(p.grad, grad_expected, rtol=1e-9, atol=1e-9)


def test_compiled_block_keeps_kernels_in_one_graph():
    block = SRMBasicBlock(4, 4, attn_layer=SRM)
    block = randomize_(block).double().eval()
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    compiled = torch.compile(block, backend='aot_eager', fullgraph=True)
    with torch.no_grad(), use_reference(True):
        expected = block(x)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), expected, rtol=1e-10, atol=1e-10)


def test_compiled_training_block_folds_its_norm_in_one_graph():
    block = randomize_(SRMBasicBlock(4, 4, attn_layer=SRM)).double().train()
    plain = copy.deepcopy(block)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    compiled = torch.compile(block, backend='aot_eager', fullgraph=True)
    results = []
    for module, reference in ((compiled, False), (plain, True)):
        inputs = x.clone().requires_grad_(True)
        with use_reference(reference):
            out = module(inputs)
        out.square().sum().backward()
        results.append((out, inputs.grad, [p.grad for p in module.parameters()], list(module.buffers())))
    for actual, expected in zip(*results):
        torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('training, one_pass', [(False, False), (False, True), (True, False)])
def test_inductor_compiled_block_runs_the_kernels(monkeypatch, training, one_pass):
    """Under torch.compile's default backend (Inductor, as in the GPU benchmark) the block tail's
    kernels run inside the compiled graph, with the reference's outputs, gradients and running statistics:
    in inference as one kernel or as three, whichever ``takes_one_pass`` picks."""
    launched = []
    for name in ('map_sums', 'gate_apply', 'folded_tail_one_pass'):
        monkeypatch.setattr(launch, name, partial(lambda fn, *args: launched.append(fn.__name__) or fn(*args),
                                                  getattr(launch, name)))
    monkeypatch.setattr(launch, 'takes_one_pass', lambda y: one_pass)
    block = randomize_(SRMBottleneck(16, 4, attn_layer=SRM)).double().train(training)
    reference = copy.deepcopy(block)
    compiled = torch.compile(block, fullgraph=True)
    x = torch.randn(2, 16, 5, 5, dtype=torch.float64)
    results = []
    for module, use_ref in ((compiled, False), (reference, True)):
        inputs = x.clone().requires_grad_(training)
        with use_reference(use_ref), torch.set_grad_enabled(training):
            out = module(inputs)
            if training:
                out.square().sum().backward()
        results.append([out] + ([inputs.grad] + [p.grad for p in module.parameters()] if training else [])
                       + list(module.buffers()))
    assert launched == (['folded_tail_one_pass'] if one_pass else ['map_sums', 'gate_apply'])
    for actual, expected in zip(*results):
        torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('shape', [(2, 20, 3, 7), (3, 132, 1, 1), (1, 36, 30, 30), (2, 8, 1, 5)])
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('dtype, tolerance', [(torch.float64, 1e-12), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize('with_shortcut_norm', [False, True])
def test_inference_tails_match_reference(shape, channels_last, dtype, tolerance, with_shortcut_norm):
    """Both inference tails (one kernel, and three) against the block's tail on the reference path in
    float64: over several channel blocks and spatial tiles (30 x 30), H*W = 1, and a large mean; and
    with a downsample's BatchNorm on the shortcut (a shortcut of mean 3)."""
    channels = shape[1]
    block = randomize_(SRMBottleneck(channels, channels // 4, attn_layer=SRM)).to(dtype)
    shortcut_norm = randomize_(torch.nn.BatchNorm2d(channels)).to(dtype).eval() if with_shortcut_norm else None
    y, shortcut = (_input(shape, dtype, channels_last, offset) for offset in (40.0, 3.0))
    errors = inference_tail_errors(block, y, shortcut, shortcut_norm)
    assert set(errors) == set(INFERENCE_TAILS)
    assert max(errors.values()) <= tolerance, errors


@pytest.mark.parametrize('downsample', [downsample_conv, downsample_avg])
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('one_pass', [False, True])
def test_downsampling_block_folds_its_shortcut_norm(monkeypatch, downsample, channels_last, one_pass):
    """In inference a downsampling block's shortcut skips the downsample's BatchNorm: the block tail's
    kernel takes it (in both tails, eager and compiled), with the reference's outputs. Where a hook
    observes that BatchNorm it runs as a module, and the hook sees its output."""
    tails = []
    folded = srm_kernels.folded_block_tail
    monkeypatch.setattr(srm_kernels, 'folded_block_tail', lambda *args: tails.append(len(args[15])) or folded(*args))
    monkeypatch.setattr(launch, 'takes_one_pass', lambda y: one_pass)
    block = SRMBottleneck(16, 8, stride=2, downsample=downsample(16, 32, 1, stride=2), attn_layer=SRM)
    block = randomize_(block).double().eval()
    x = torch.randn(2, 16, 6, 6, dtype=torch.float64) * 2 + 1
    if channels_last:
        x, block = x.contiguous(memory_format=torch.channels_last), block.to(memory_format=torch.channels_last)
    with torch.no_grad():
        with use_reference(True):
            expected = block(x)
        outputs = [block(x), torch.compile(block, fullgraph=True)(x)]
        shortcut_norm_outputs = []
        block.downsample[-1].register_forward_hook(lambda module, args, out: shortcut_norm_outputs.append(out))
        outputs.append(block(x))
    assert tails == [4, 4, 0]  # the shortcut norm's four tensors, then none: the hooked norm ran as a module
    assert len(shortcut_norm_outputs) == 1
    for out in outputs:
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('channels_last', [False, True])
def test_one_pass_tail_with_any_channels_per_program(channels_last):
    """The one-kernel tail with the channel blocks the tails benchmark tries, over 20 channels (partly masked
    blocks) and 3 x 7 maps, against the three kernels' tail in float64."""
    block = randomize_(SRMBottleneck(20, 5, attn_layer=SRM)).double().eval()
    y, shortcut = (_input((2, 20, 3, 7), torch.float64, channels_last, offset) for offset in (7.0, 1.0))
    args = folded_tail_args(block)
    expected = launch.folded_tail_three_kernels(y, shortcut, *args)
    for channels_per_program in (1, 4, 8, 32):
        actual = launch.folded_tail_one_pass(y, shortcut, *args, channels_per_program=channels_per_program)
        torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('style_pooling', ['mean', 'std'])
def test_one_pass_tail_follows_style_pooling(style_pooling):
    """Both inference tails with SRM's one-statistic poolings (one channel-wise weight each)."""
    block = randomize_(SRMBottleneck(16, 4, attn_layer=partial(SRM, style_pooling=style_pooling))).double()
    y, shortcut = (_input((3, 16, 4, 5), torch.float64, False, offset) for offset in (5.0, 0.0))
    assert max(inference_tail_errors(block, y, shortcut).values()) <= 1e-12


@pytest.mark.parametrize('style_pooling', ['mean_std', 'mean', 'std'])
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('dtype, size', [(torch.float64, 5), (torch.float32, 1)])
def test_inference_block_tail_is_one_folded_op(monkeypatch, style_pooling, channels_last, dtype, size):
    """In eval mode without autograd a block's BatchNorm, SRM, add and ReLU run as ``folded_block_tail``."""
    calls = _counting(monkeypatch, srm_kernels, 'folded_block_tail')
    block = SRMBottleneck(132, 33, attn_layer=partial(SRM, style_pooling=style_pooling))
    block = randomize_(block).to(dtype).eval()
    x = torch.randn(2, 132, size, size, dtype=dtype)
    if channels_last:
        x, block = x.contiguous(memory_format=torch.channels_last), block.to(memory_format=torch.channels_last)
    with torch.no_grad():
        out = block(x)
        with use_reference(True):
            expected = block(x)
    assert len(calls) == 1
    scale = expected.abs().max()
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(out / scale, expected / scale, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize('channels_last', [False, True])
def test_training_kernel_tail_keeps_what_a_plain_bottleneck_keeps(monkeypatch, channels_last):
    """On the kernel path (the GPU's) a training SRM bottleneck saves for backward what timm's plain
    bottleneck saves, plus SRM's per-(n, c) and per-channel tensors: the peak-memory target's basis."""
    calls = _counting(monkeypatch, srm_kernels, 'block_tail_train')
    plain, block = Bottleneck(64, 16).train(), SRMBottleneck(64, 16, attn_layer=SRM).train()
    x = torch.randn(4, 64, 16, 16)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        plain, block = (m.to(memory_format=torch.channels_last) for m in (plain, block))
    plain_bytes = saved_activation_bytes(plain, x)
    srm_bytes = saved_activation_bytes(block, x)
    assert len(calls) == 1
    srm_extra_bytes = (2 * 4 * 64 + 4 * 64 + 64 * 2) * 4  # gates, batch statistics, cfc (float32)
    assert plain_bytes < srm_bytes <= plain_bytes + 2 * srm_extra_bytes


@pytest.mark.parametrize('style_pooling', ['mean_std', 'mean', 'std'])
@pytest.mark.parametrize('channels, size, momentum', [(16, 5, 0.1), (16, 24, 0.1), (600, 1, 0.1), (600, 1, None),
                                                      (16, 3, None)])
def test_training_gate_kernel_matches_reference_float64(monkeypatch, style_pooling, channels, size, momentum):
    """The training gate (both BatchNorms on batch statistics, one kernel each way): outputs, gradients,
    running statistics and batch counters against timm's block on the reference path, over several
    channel blocks (600 channels: two programs, one of which counts the batch) and, at 24 x 24, with
    each map's sums in two parts."""
    calls = _counting(monkeypatch, srm_kernels, 'block_tail_train')
    block = SRMBottleneck(channels, channels // 4, attn_layer=partial(SRM, style_pooling=style_pooling))
    block = randomize_(block).double().train()
    for bn in (block.bn3, block.se.bn):
        bn.momentum = momentum
    plain = copy.deepcopy(block)
    x = torch.randn(3, channels, size, size, dtype=torch.float64)
    results = []
    for module, reference in ((block, False), (plain, True)):
        inputs = x.clone().requires_grad_(True)
        with use_reference(reference):
            out = module(inputs)
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
        (out * grad_out).sum().backward()
        results.append((out, inputs.grad, *[p.grad for p in module.parameters()], *module.buffers()))
    assert len(calls) == 1
    for actual, expected in zip(*results):
        # with H*W = 1 and std pooling SRM's input is constant over the batch: cfc's gradient is 0 up to rounding
        scale = expected.abs().max().clamp_min(1e-4)
        torch.testing.assert_close(actual / scale, expected / scale, rtol=1e-10, atol=1e-10)


def test_training_kernel_tail_gives_gradients_in_the_parameters_layout():
    """The training tail's parameter gradients come in the layout of their parameters (cfc's (C, 2)
    included), so that autograd keeps them as ``.grad`` without copying them every step."""
    block = randomize_(SRMBottleneck(16, 4, attn_layer=SRM)).train()
    block(torch.randn(3, 16, 4, 4)).square().sum().backward()
    for module in (block.bn3, block.se, block.se.bn):
        for param in module.parameters(recurse=False):
            assert param.grad.stride() == param.stride() and param.grad.dtype == param.dtype


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('style_pooling, size', [('mean_std', 3), ('mean', 3), ('std', 1), ('mean_std', 1)])
def test_second_derivatives_through_the_kernels_match_reference(monkeypatch, channels_last, style_pooling, size):
    """A gradient penalty (input gradients with ``create_graph=True``, then the gradients of their squared norm)
    through a training SRM bottleneck on the kernels' training tail, and through SRM alone with and without a
    shortcut on the statistics and apply kernels: the reference path's values in float64
    (gpu_check.second_derivative_errors). The kernels give the first derivatives; the backward passes
    that record a graph take PyTorch operations."""
    tails = _counting(monkeypatch, launch, 'block_tail_train')
    moments = _counting(monkeypatch, launch, 'moments')
    applies = _counting(monkeypatch, launch, 'affine_residual_relu')
    srm_layer = partial(SRM, style_pooling=style_pooling)
    block = randomize_(SRMBottleneck(16, 4, attn_layer=srm_layer)).double().train()
    srm = randomize_(srm_layer(16)).double().train()
    x, shortcut = (_input((3, 16, size, size), torch.float64, channels_last) for _ in range(2))
    errors = {'block': second_derivative_errors(block, (x,)), 'srm': second_derivative_errors(srm, (x,)),
              'srm with shortcut': second_derivative_errors(srm, (x, shortcut))}
    assert (len(tails), len(moments), len(applies)) == (1, 2, 1)
    for name, module_errors in errors.items():
        assert max(module_errors.values()) <= 1e-10, (name, module_errors)


@pytest.mark.parametrize('channels_last', [False, True])
def test_torch_func_transforms_and_forward_ad_match_reference(channels_last):
    """``jvp``, per-sample gradients (``vmap`` of ``grad``) and forward-mode AD through an eval-mode SRM bottleneck
    where the kernels would take its tail: the reference path's values (gpu_check.transform_errors). The
    folded inference kernel knows no tangents: it would drop them."""
    block = randomize_(SRMBottleneck(16, 4, attn_layer=SRM)).double()
    errors = transform_errors(block, _input((3, 16, 4, 4), torch.float64, channels_last))
    assert max(errors.values()) <= 1e-12, errors


@pytest.mark.parametrize('dtype, amp_dtype, tolerance', [
    (torch.float32, None, 1e-5), (torch.float32, torch.bfloat16, 2e-2), (torch.float32, torch.float16, 2e-2),
    (torch.bfloat16, None, 2e-2)])
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('training', [False, True])
def test_block_tail_in_float32_under_autocast_and_in_bf16(dtype, amp_dtype, tolerance, channels_last, training):
    """The GPU check's block-tail comparison (gpu_check.block_tail_errors) on tiny sizes: float32, bf16 and
    fp16 autocast, and a model cast to bf16, whose running statistics the training kernels move in float32 and
    round once to bf16."""
    generator = torch.Generator().manual_seed(0)
    block = randomize_srm_(SRMBottleneck(32, 8, attn_layer=SRM), generator).to(dtype)
    x = torch.randn(4, 32, 5, 5, generator=generator).to(dtype)
    if channels_last:
        block, x = block.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    errors = block_tail_errors(block, x, training, amp_dtype)
    checked = {k: v for k, v in errors.items() if (dtype, amp_dtype) == (torch.float32, None) or k in BF16_CHECKED}
    assert max(checked.values()) <= tolerance, errors


def _live_tensor_ids():
    gc.collect()
    with warnings.catch_warnings():  # isinstance() reads deprecated module attributes among the objects
        warnings.simplefilter('ignore')
        return {id(obj) for obj in gc.get_objects() if isinstance(obj, torch.Tensor)}


@pytest.mark.parametrize('one_pass', [False, True])
def test_kernel_launches_leave_no_tensor_alive(monkeypatch, one_pass):
    """What a CUDA graph captures may allocate nothing that outlives the call (CUDA-graph trees refuse a
    graph whose memory pool holds a tensor that is not an output): the block's inference and training
    tails, backward pass included, leave no tensor alive besides the parameters' gradients. Epsilons
    and momenta no other case uses, so no launch finds anything already made for them."""
    monkeypatch.setattr(launch, 'takes_one_pass', lambda y: one_pass)
    block = randomize_(SRMBottleneck(16, 4, downsample=downsample_conv(16, 16, 1), attn_layer=SRM)).double()
    for index, norm in enumerate(m for m in block.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        norm.eps = 1e-5 + index * 1.2345e-7 + one_pass * 1e-9
        norm.momentum = 0.1 + index * 1.2345e-3 + one_pass * 1e-4
    block.se.eps = 1.2345e-6 + one_pass * 1e-9
    x = torch.randn(2, 16, 5, 5, dtype=torch.float64)
    before = _live_tensor_ids()
    with torch.no_grad():
        block.eval()(x)
    block.train()(x.requires_grad_()).sum().backward()
    block.zero_grad(set_to_none=True)
    x.grad = None
    assert _live_tensor_ids() == before
