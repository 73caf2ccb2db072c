"""One-shot GPU check: SRM's Triton kernels against the reference, then the speed table.

Run on a machine with a CUDA GPU (most of its time goes to torch.compile)::

    python -m srm_zoo.benchmark.gpu_check --out gpu_results

It checks the kernels (statistics, fused apply and their gradients; NCHW and channels_last; float32,
bfloat16 and float16; odd sizes and H*W = 1), both inference tails (one kernel and three, with and
without a downsample's BatchNorm on the shortcut) on SRM-ResNet-50's stage shapes, an SRM
bottleneck's fused tail (eval and training, float32, bf16 and fp16 autocast, a model cast to bf16), second
derivatives (a gradient penalty) through the training tail and through SRM alone, ``torch.func``
transforms and forward-mode AD, and SRM-ResNet-50 end to end
against the reference path and float64 (float32 checks without TF32; a fast-path error passes below
a tolerance or below twice the reference path's error in the same dtype), that the fused tail gives
the same bits on every run, and that ``srm-zoo train`` compiled with CUDA graphs and gradient
accumulation updates the weights as eager training does (:mod:`.train_check`). Then it times both
inference tails (and the picked one taking a shortcut's BatchNorm; the one kernel also with 4 to 32
channels per program), the fused apply alone and the tail as Inductor compiles it from PyTorch
operations on SRM-ResNet-50's stage shapes at batch 256 (``tails``; both tails and the apply also by their
kernels' own time, without the host's launches), and benchmarks resnet50,
srm_resnet50 (fast and reference) and seresnet50 with bf16 autocast and channels_last: inference
eager and compiled at batch 256, and a training step at batch 128, eager, compiled, and compiled
with CUDA graphs (``reduce-overhead``), and compiled inference once more with each block tail as
whichever of one kernel and three ``tails`` timed faster (``compile-fastest-tails``, an experiment
on that rule, after ``tails``); the GPU kernel time of the training steps outside CUDA graphs is
profiled too (``--benchmarks tails,eager,compile,train`` picks some; an empty list runs the checks
only; ``--no-checks`` runs the benchmarks only). It writes ``checks.json``, one CSV per benchmark
and ``speed_table.md`` under ``--out``. A check or benchmark that raises is reported and the rest
still run; the exit status is non-zero when any check or benchmark fails.
"""
import argparse
import copy
import json
import sys
import traceback
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import timm
import torch
import torch.autograd.forward_ad as forward_ad

from ..cli._output import write_rows
from ..cli._types import positive_int
from ..layers import SRM, srm_kernels, style_pool, use_reference
from ..layers.srm_fast import running_norm_state
from ..layers.srm_kernels import launch
from ..models.srm_blocks import SRMBottleneck
from .kernel_time import profile_kernel_time
from .runner import BenchConfig, run_benchmark
from .train_check import compiled_training_checks

MODELS = ('resnet50', 'srm_resnet50', 'seresnet50')  # the first is the round ratios' baseline
SHAPES = ((2, 5, 3, 7), (3, 4, 1, 1), (2, 3, 1, 5), (4, 130, 9, 9), (8, 256, 56, 56), (16, 2048, 7, 7))
BENCHMARKS = {  # name: (table column, settings)
    'eager': ('infer, eager, bs 256', dict(mode='infer', batch_size=256, reference=True)),
    'compile': ('infer, torch.compile, bs 256', dict(mode='infer', batch_size=256, compile=True)),
    'train': ('train step, eager, bs 128', dict(mode='train', batch_size=128, reference=True, profile_steps=5)),
    'train-compile': ('train step, torch.compile, bs 128', dict(mode='train', batch_size=128, compile=True,
                                                                profile_steps=5)),
    # its kernels replay inside CUDA graphs: not profiled
    'train-graphs': ('train step, torch.compile reduce-overhead, bs 128',
                     dict(mode='train', batch_size=128, compile=True, compile_mode='reduce-overhead')),
    # an experiment on the rule of which inference tail runs: needs ``tails`` earlier in the same run
    'compile-fastest-tails': ('infer, torch.compile, the faster tail in this run, bs 256',
                              dict(mode='infer', batch_size=256, compile=True)),
}
FOLLOWS_TAILS = {'compile-fastest-tails'}
"""Benchmarks whose inference tails run as one kernel or three, whichever ``tails`` timed faster in the same
run for their shape and layout (:func:`fastest_tails`)."""


def _max_rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.double() - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item()


def _norm_rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.double() - expected).norm() / expected.norm().clamp_min(1e-12)).item()


def kernel_errors(x: torch.Tensor, shortcut: torch.Tensor, generator: torch.Generator) -> Dict[str, float]:
    """Relative errors of the kernels' outputs and gradients for inputs ``x`` and ``shortcut``
    against float64 references: the statistics against SRM's published style pooling, the fused
    apply against ``relu(x * scale + bias + shortcut)``."""
    device, shape = x.device, x.shape
    x = x.detach().requires_grad_(True)
    shortcut = shortcut.detach().requires_grad_(True)
    mean, var = srm_kernels.style_moments(x)
    x64 = x.detach().double().requires_grad_(True)
    styles = style_pool(x64, 'mean_std', 1e-5)
    expected = torch.stack((styles[..., 0], styles[..., 1].square() - 1e-5), -1)
    weights = torch.randn(expected.shape, device=device, dtype=torch.float64, generator=generator)
    (grad,) = torch.autograd.grad((torch.stack((mean, var), -1).double() * weights).sum(), x)
    (grad_expected,) = torch.autograd.grad((expected * weights).sum(), x64)
    acc_dtype = mean.dtype
    scale = torch.rand(shape[:2], device=device, dtype=acc_dtype, generator=generator).requires_grad_(True)
    bias = torch.randn(shape[:2], device=device, dtype=acc_dtype, generator=generator).requires_grad_(True)
    out = srm_kernels.affine_residual_relu(x, scale, bias, shortcut)
    inputs64 = [t.detach().double().requires_grad_(True) for t in (x, scale, bias, shortcut)]
    out_expected = torch.relu(inputs64[0] * inputs64[1][:, :, None, None] + inputs64[2][:, :, None, None] + inputs64[3])
    grad_out = torch.randn(shape, device=device, dtype=torch.float64, generator=generator)
    grads = torch.autograd.grad((out.double() * grad_out).sum(), (x, scale, bias, shortcut))
    grads_expected = torch.autograd.grad((out_expected * grad_out).sum(), inputs64)
    if grad.stride() != x.stride() or out.stride() != x.stride() or grads[0].dtype != x.dtype:
        raise AssertionError('the kernels must keep the input layout and dtype')
    return {
        'stats': _max_rel_err(torch.stack((mean, var), -1), expected),
        'stats_grad': _max_rel_err(grad, grad_expected),
        'apply': _max_rel_err(out, out_expected),
        **{f'apply_grad_{n}': _max_rel_err(g, e)
           for n, g, e in zip(('x', 'scale', 'bias', 'shortcut'), grads, grads_expected)},
    }


def kernel_checks(device: torch.device) -> List[Dict[str, Any]]:
    """:func:`kernel_errors` over sizes, layouts and dtypes."""
    results = []
    for shape in SHAPES:
        for channels_last in (False, True):
            for dtype in (torch.float32, torch.bfloat16, torch.float16):
                gen = torch.Generator(device).manual_seed(0)
                x = (torch.randn(shape, device=device, generator=gen) * 3 + 20).to(dtype)
                shortcut = torch.randn(shape, device=device, generator=gen).to(dtype)
                if channels_last:
                    x, shortcut = (t.contiguous(memory_format=torch.channels_last) for t in (x, shortcut))
                errors = kernel_errors(x, shortcut, gen)
                tol = 1e-4 if dtype == torch.float32 else 2e-2
                results.append(dict(check='kernels', shape=list(shape), channels_last=channels_last, dtype=str(dtype),
                                    tolerance=tol, passed=all(v <= tol for v in errors.values()), **errors))
    return results


def randomize_srm_(model: torch.nn.Module, generator: torch.Generator) -> torch.nn.Module:
    """Non-degenerate SRMs and residual branches, drawn from ``generator`` alone: He-initialised
    convolutions, random channel-wise weights and BatchNorm states."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2 / fan_in) ** 0.5)
            if hasattr(module, 'cfc'):
                module.cfc.copy_(torch.randn(module.cfc.shape, generator=generator))
            if isinstance(module, torch.nn.BatchNorm2d):
                channels = module.num_features
                module.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(channels, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(channels, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
    return model


INFERENCE_TAILS = {'one_pass': launch.folded_tail_one_pass, 'three_kernels': launch.folded_tail_three_kernels}
"""The two implementations of the inference block tail (:func:`~srm_zoo.layers.srm_kernels.launch.folded_block_tail`
picks one by shape)."""


def folded_tail_args(block: torch.nn.Module) -> tuple:
    """The arguments after ``(y, shortcut)`` of the inference tails for SRM bottleneck ``block`` in eval mode:
    its last BatchNorm and SRM's BatchNorm as (weight, bias, running mean, running var), their epsilons,
    SRM's channel-wise weights, epsilon and style pooling."""
    norm, srm = block.bn3, block.se
    return (running_norm_state(norm), norm.eps, srm.cfc, running_norm_state(srm.bn), srm.bn.eps, srm.eps,
            srm.style_pooling)


def shortcut_norm_args(norm: Optional[torch.nn.Module]) -> tuple:
    """The inference tails' last two arguments for a BatchNorm ``norm`` in eval mode that the shortcut still
    has to pass (a downsample's): its (weight, bias, running mean, running var) and epsilon; for None, none."""
    if norm is None:
        return (), 0.0
    return running_norm_state(norm), norm.eps


def inference_tail_errors(block: torch.nn.Module, y: torch.Tensor, shortcut: torch.Tensor,
                          shortcut_norm: Optional[torch.nn.Module] = None) -> Dict[str, float]:
    """Largest errors, relative to the largest value, of each of :data:`INFERENCE_TAILS` for SRM bottleneck
    ``block`` (eval mode) on the last convolution's output ``y`` against a float64 copy of the block's tail
    on the reference path; the shortcut passes the BatchNorm ``shortcut_norm`` first where given."""
    reference = copy.deepcopy(block).double().eval()
    with torch.no_grad(), use_reference(True):
        expected_shortcut = shortcut.double()
        if shortcut_norm is not None:
            expected_shortcut = copy.deepcopy(shortcut_norm).double().eval()(expected_shortcut)
        expected = reference._tail(y.double(), expected_shortcut)
    args = (*folded_tail_args(block.eval()), *shortcut_norm_args(shortcut_norm))
    with torch.no_grad():
        return {name: _max_rel_err(tail(y, shortcut, *args), expected) for name, tail in INFERENCE_TAILS.items()}


def block_tail_errors(block: torch.nn.Module, x: torch.Tensor, training: bool,
                      amp_dtype: Optional[torch.dtype] = None) -> Dict[str, float]:
    """Relative errors of an SRM block on the fast path (under ``amp_dtype`` autocast when given)
    against a float64 copy on the reference path: output, gradients, running statistics.

    Errors are relative Euclidean norms: in bf16 a few pre-activations near zero change sign, which
    makes any elementwise maximum of a gradient error meaningless.
    """
    reference = copy.deepcopy(block).double().train(training)
    block.train(training)
    inputs = x.detach().clone().requires_grad_(True)
    inputs64 = x.detach().double().requires_grad_(True)
    autocast = torch.autocast(x.device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
    with autocast:
        out = block(inputs)
    with use_reference(True):
        expected = reference(inputs64)
    grad_out = torch.randn(expected.shape, dtype=torch.float64, device=x.device,
                           generator=torch.Generator(x.device).manual_seed(1))
    (out.double() * grad_out).sum().backward()
    (expected * grad_out).sum().backward()
    errors = {'output': _norm_rel_err(out, expected.detach()), 'input_grad': _norm_rel_err(inputs.grad, inputs64.grad)}
    # all parameters together: a few (an SRM BatchNorm's bias in training) get a gradient of about 0
    errors['param_grads'] = _norm_rel_err(torch.cat([p.grad.flatten().double() for p in block.parameters()]),
                                          torch.cat([p.grad.flatten() for p in reference.parameters()]))
    if training:
        errors['running_stats'] = max(_norm_rel_err(b, b64) for b, b64 in zip(block.buffers(), reference.buffers())
                                      if b.is_floating_point())
    return errors


BF16_CHECKED = ('output', 'running_stats')
"""What bf16 checks hold to a tolerance: its gradients (reported too) differ from float64 by as much
on the reference path, and from run to run, as the fast path's do."""


def _within(error: float, reference_error: float, tolerance: float) -> bool:
    """An error of the fast path passes below ``tolerance`` or below twice the reference path's error
    in the same dtype (against the same float64 result): deep training-mode networks amplify float32
    rounding far beyond any fixed tolerance, on both paths alike."""
    return error <= max(tolerance, 2 * reference_error)


def _random_srm_bottleneck(device: torch.device, channels: int = 256) -> Tuple[torch.nn.Module, torch.Generator]:
    """An SRM bottleneck of ``channels`` channels (256: the one the tail checks run), randomised from a fixed
    seed, and the generator that goes on to draw its inputs."""
    generator = torch.Generator().manual_seed(0)
    block = SRMBottleneck(channels, channels // 4, attn_layer=SRM)
    return randomize_srm_(block, generator).to(device), generator


TAIL_PRECISIONS = ((torch.float32, None, 1e-4), (torch.float32, torch.bfloat16, 2e-2),
                   (torch.float32, torch.float16, 2e-2), (torch.bfloat16, None, 2e-2))
"""(model and input dtype, autocast dtype, tolerance) of the block-tail checks: float32, bf16 and fp16 autocast,
and a model cast to bf16 (its BatchNorms' running statistics too)."""


def tail_checks(device: torch.device) -> List[Dict[str, Any]]:
    """:func:`block_tail_errors` of an SRM bottleneck on the fast and the reference path in each of
    :data:`TAIL_PRECISIONS`, both layouts, eval and train."""
    results = []
    for dtype, amp_dtype, tolerance in TAIL_PRECISIONS:
        for channels_last in (False, True):
            for training in (False, True):
                block, generator = _random_srm_bottleneck(device)
                x = torch.randn(16, 256, 14, 14, generator=generator).to(device)
                block, x = block.to(dtype), x.to(dtype)
                if channels_last:
                    block, x = block.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
                errors = block_tail_errors(copy.deepcopy(block), x, training, amp_dtype)
                with use_reference(True):
                    reference_errors = block_tail_errors(block, x, training, amp_dtype)
                checked = [k for k in errors if tolerance < 1e-3 or k in BF16_CHECKED]
                results.append(dict(check='block tail', dtype=str(dtype), amp=str(amp_dtype),
                                    channels_last=channels_last, training=training, tolerance=tolerance,
                                    passed=all(_within(errors[k], reference_errors[k], tolerance) for k in checked),
                                    **errors, **{f'reference_{k}': v for k, v in reference_errors.items()}))
    return results


def _small_block_and_srm(device: torch.device, channels_last: bool, batch_size: int
                         ) -> Tuple[torch.nn.Module, torch.nn.Module, torch.Tensor, torch.Tensor]:
    """An SRM bottleneck and an SRM of 64 channels, randomised from a fixed seed, and two (``batch_size``, 64,
    14, 14) inputs for them (a block input, a shortcut), in channels_last where asked."""
    block, generator = _random_srm_bottleneck(device, channels=64)
    srm = randomize_srm_(SRM(64), generator).to(device)
    x, shortcut = (torch.randn(batch_size, 64, 14, 14, generator=generator).to(device) for _ in range(2))
    if channels_last:
        block = block.to(memory_format=torch.channels_last)
        x, shortcut = (t.contiguous(memory_format=torch.channels_last) for t in (x, shortcut))
    return block, srm, x, shortcut


def second_derivative_errors(module: torch.nn.Module, inputs: Sequence[torch.Tensor]) -> Dict[str, float]:
    """Relative errors of a gradient penalty through ``module`` (on the path the reference switch picks)
    against a float64 copy on the reference path: the gradients for ``inputs`` taken with
    ``create_graph=True`` (``grad``), then the gradients of their squared norm for the inputs
    (``input_grad2``) and for the parameters (``param_grad2``, which replace ``module``'s gradients)."""
    results = []
    module.zero_grad()
    for net, reference in ((module, False), (copy.deepcopy(module).double(), True)):
        leaves = [t.detach().to(torch.float64 if reference else t.dtype).requires_grad_(True) for t in inputs]
        with use_reference(True) if reference else nullcontext():
            out = net(*leaves)
        grad_out = torch.randn(out.shape, dtype=torch.float64, device=out.device,
                               generator=torch.Generator(out.device).manual_seed(1))
        grads = torch.autograd.grad((out.double() * grad_out).sum(), leaves, create_graph=True)
        sum(grad.double().square().sum() for grad in grads).backward()
        # a tensor the penalty does not reach has no gradient: a zero one
        second = [t.grad if t.grad is not None else torch.zeros_like(t) for t in (*leaves, *net.parameters())]
        results.append([torch.cat([t.flatten().double() for t in group])
                        for group in (grads, second[:len(leaves)], second[len(leaves):])])
    return {name: _norm_rel_err(actual, expected.detach())
            for name, actual, expected in zip(('grad', 'input_grad2', 'param_grad2'), *results)}


def second_derivative_checks(device: torch.device) -> List[Dict[str, Any]]:
    """:func:`second_derivative_errors` in float32 of an SRM bottleneck in training (the kernels' training
    tail) and of SRM alone with a shortcut (the statistics and the fused apply), both layouts, on the fast
    and the reference path."""
    results = []
    for channels_last in (False, True):
        block, srm, x, shortcut = _small_block_and_srm(device, channels_last, batch_size=8)
        for name, module, inputs in (('block tail', block.train(), (x,)), ('SRM', srm.train(), (x, shortcut))):
            errors = second_derivative_errors(copy.deepcopy(module), inputs)
            with use_reference(True):
                reference_errors = second_derivative_errors(module, inputs)
            results.append(dict(check=f'{name} second derivatives', channels_last=channels_last, tolerance=1e-4,
                                passed=all(_within(errors[k], reference_errors[k], 1e-4) for k in errors),
                                **errors, **{f'reference_{k}': v for k, v in reference_errors.items()}))
    return results


def transform_errors(module: torch.nn.Module, x: torch.Tensor) -> Dict[str, float]:
    """Relative errors of ``torch.func`` transforms and forward-mode AD through ``module`` (in eval mode) on
    ``x`` against the same on the reference path: a Jacobian-vector product (``jvp``), per-sample gradients
    of the parameters (``vmap`` of ``grad``: ``per_sample_grads``) and a dual tensor's tangent (``forward_ad``)."""
    module.eval()
    tangent = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=torch.Generator(x.device).manual_seed(1))
    params, buffers = dict(module.named_parameters()), dict(module.named_buffers())

    def sample_loss(sample_params: Dict[str, torch.Tensor], sample: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(module, (sample_params, buffers), (sample[None],)).square().sum()

    def results() -> Dict[str, torch.Tensor]:
        _, jvp = torch.func.jvp(module, (x,), (tangent,))
        per_sample = torch.func.vmap(torch.func.grad(sample_loss), in_dims=(None, 0))(params, x)
        with forward_ad.dual_level():
            dual_tangent = forward_ad.unpack_dual(module(forward_ad.make_dual(x, tangent))).tangent
        return dict(jvp=jvp, per_sample_grads=torch.cat([g.flatten() for g in per_sample.values()]),
                    forward_ad=dual_tangent)

    actual = results()
    with use_reference(True):
        expected = results()
    return {name: _norm_rel_err(actual[name], expected[name].double()) for name in actual}


def transform_checks(device: torch.device) -> List[Dict[str, Any]]:
    """:func:`transform_errors` of an SRM bottleneck and of SRM alone, both layouts, float32."""
    results = []
    for channels_last in (False, True):
        block, srm, x, _ = _small_block_and_srm(device, channels_last, batch_size=4)
        for name, module in (('block', block), ('SRM', srm)):
            errors = transform_errors(module, x)
            results.append(dict(check=f'{name} torch.func and forward AD', channels_last=channels_last,
                                tolerance=1e-5, passed=all(v <= 1e-5 for v in errors.values()), **errors))
    return results


def _srm_results(srm: torch.nn.Module, x: torch.Tensor, shortcut: torch.Tensor, reference: bool
                 ) -> Tuple[torch.Tensor, ...]:
    """``srm(x, shortcut)`` of a copy of ``srm`` in training, and the input and ``cfc`` gradients of its squared sum."""
    module = copy.deepcopy(srm).train()
    leaf = x.detach().requires_grad_(True)
    with use_reference(reference):
        out = module(leaf, shortcut)
    out.square().sum().backward()
    return out, leaf.grad, module.cfc.grad


def layout_errors(srm: torch.nn.Module, x: torch.Tensor, shortcut: torch.Tensor) -> Dict[str, float]:
    """Relative errors of SRM's output ``srm(x, shortcut)`` in training, and of its input and ``cfc`` gradients,
    against a float64 copy on the reference path: on the fast path, and (``reference_*``) on the reference path."""
    expected = _srm_results(copy.deepcopy(srm).double(), x.double(), shortcut.double(), reference=True)
    errors = {}
    for prefix, reference in (('', False), ('reference_', True)):
        actual = _srm_results(srm, x, shortcut, reference)
        errors.update({f'{prefix}{name}': _norm_rel_err(a, e) for name, a, e in
                       zip(('output', 'input_grad', 'cfc_grad'), actual, expected)})
    return errors


def layout_checks(device: torch.device) -> List[Dict[str, Any]]:
    """SRM on inputs the kernels leave to PyTorch (a chunk of channels, one channel expanded to all, a chunk
    of a channels_last tensor), and a bottleneck's tail whose shortcut is float64 (the result is float64): the fast
    path against the reference, float32."""
    block, srm, x, shortcut = _small_block_and_srm(device, channels_last=False, batch_size=8)
    wide = torch.cat([x, shortcut], dim=1)
    inputs = {'a chunk of channels': wide[:, :64], 'an expanded channel': x[:, :1].expand(x.shape),
              'a chunk of a channels_last tensor': wide.contiguous(memory_format=torch.channels_last)[:, 64:]}
    results = []
    for name, view in inputs.items():
        errors = layout_errors(srm, view, view.flip(0))
        passed = all(_within(errors[k], errors[f'reference_{k}'], 1e-5) for k in ('output', 'input_grad', 'cfc_grad'))
        results.append(dict(check=f'SRM on {name}', tolerance=1e-5, passed=passed, **errors))
    block.train()
    y, wide_shortcut = block.conv3(block.conv1(x)).detach(), shortcut.double()
    fresh = copy.deepcopy(block)
    with torch.no_grad():
        out = block.se.forward_after_norm(block.bn3, y, wide_shortcut)
        with use_reference(True):
            expected = fresh.se(fresh.bn3(y), wide_shortcut)
    error = _norm_rel_err(out, expected)
    results.append(dict(check='block tail with a float64 shortcut', tolerance=1e-5, output=error,
                        passed=out.dtype == torch.float64 and error <= 1e-5))
    return results


TAIL_SHAPES = ((8, 256, 56, 56), (8, 512, 28, 28), (8, 1024, 14, 14), (8, 2048, 7, 7), (3, 132, 9, 9), (5, 300, 1, 1))


def _random_shortcut_norm(channels: int, device: torch.device) -> torch.nn.BatchNorm2d:
    """A downsample's BatchNorm in eval mode with random running statistics and affine parameters."""
    norm = torch.nn.BatchNorm2d(channels)
    return randomize_srm_(norm, torch.Generator().manual_seed(1)).to(device).eval()


def inference_tail_checks(device: torch.device) -> List[Dict[str, Any]]:
    """:func:`inference_tail_errors` on SRM-ResNet-50's stage shapes, odd sizes and H*W = 1, both layouts,
    float32 and bfloat16, without and with a BatchNorm on the shortcut (a downsampling block's): both
    implementations of the inference tail, whichever the shape would pick."""
    results = []
    for shape in TAIL_SHAPES:
        block, _ = _random_srm_bottleneck(device, shape[1])
        for shortcut_norm in (None, _random_shortcut_norm(shape[1], device)):
            for channels_last in (False, True):
                memory_format = torch.channels_last if channels_last else torch.contiguous_format
                for dtype, tolerance in ((torch.float32, 1e-4), (torch.bfloat16, 2e-2)):
                    gen = torch.Generator(device).manual_seed(0)
                    y, shortcut = ((torch.randn(shape, device=device, generator=gen) * 3 + offset).to(dtype)
                                   .contiguous(memory_format=memory_format) for offset in (20, 0))
                    errors = inference_tail_errors(copy.deepcopy(block).to(device, dtype), y, shortcut, shortcut_norm)
                    results.append(dict(check='inference tail', shape=list(shape), channels_last=channels_last,
                                        dtype=str(dtype), shortcut_norm=shortcut_norm is not None,
                                        tolerance=tolerance, passed=all(v <= tolerance for v in errors.values()),
                                        **errors))
    return results


STAGE_TAILS = ((256, 56), (512, 28), (1024, 14), (2048, 7))
"""SRM-ResNet-50's block tails at 224 x 224: channels and map size of each stage."""
ONE_PASS_CHANNELS = (4, 8, 16, 32)
"""Channels per program that the tails benchmark also times the one-kernel tail with, whatever its own tile."""


def _dims(values: Sequence[int]) -> str:
    """Sizes as the tails benchmark's rows write them, e.g. ``256x256x56x56``."""
    return 'x'.join(map(str, values))


def inductor_tail(block: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """SRM bottleneck ``block``'s tail as PyTorch operations in timm's order (its last BatchNorm, SRM's
    published formulation, the residual add, ReLU), compiled by Inductor: what the compiler makes of the
    tail without the zoo's kernels. Call it with the reference path on (:func:`use_reference`)."""
    def tail(y: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        return torch.relu(block.se(block.bn3(y)) + shortcut)
    return torch.compile(tail, fullgraph=True, dynamic=False)


FLUSH_BYTES = 256 * 2 ** 20
"""What :func:`kernel_us` writes before each call to flush the GPU's caches, as ``triton.testing.do_bench`` does."""


PROFILED_CALLS = 20
"""Calls that :func:`kernel_us` (and the flush's own measurement) profile and average over."""


def kernel_us(call: Callable[[], Any], flush: torch.Tensor, flush_ms: Optional[float], device: torch.device,
              calls: int = PROFILED_CALLS) -> float:
    """GPU kernel time (µs) of one ``call``, ``flush`` zeroed before each: the summed durations of the call's
    kernels as the profiler records them, less the flush's (``flush_ms``, :func:`profile_kernel_time` of
    zeroing it, measured once per run). Unlike ``do_bench``'s time it leaves out the gaps between kernels and
    so the host's time to launch them, which ``do_bench`` counts where the host launches slower than the GPU
    runs (small maps) but which a compiled model's GPU-bound step hides. NaN where the profiler records no
    kernel."""
    flushed = profile_kernel_time(lambda: (flush.zero_(), call()), calls, device)
    if flushed is None or flush_ms is None:
        return float('nan')
    return (flushed - flush_ms) * 1e3


def inference_tail_timings(device: torch.device, batch_size: int = 256) -> List[Dict[str, Any]]:
    """GPU time (median microseconds of ``triton.testing.do_bench``, caches flushed between runs) of each of
    :data:`INFERENCE_TAILS` on SRM-ResNet-50's stage shapes in bf16, both layouts (the one-kernel tail also with
    each of :data:`ONE_PASS_CHANNELS` channels per program); of the tail as Inductor compiles it from PyTorch
    operations (:func:`inductor_tail`); and of the fused apply alone
    (``relu(y * k + b + shortcut)`` for given ``k``, ``b``), whose one pass over ``y``, the shortcut and the
    output is what resnet50's BatchNorm, add and ReLU cost: the floor, also given as bandwidth. The
    ``*_kernels_us`` columns give both tails' and the apply's kernel time alone (:func:`kernel_us`)."""
    from triton.testing import do_bench
    flush = torch.empty(FLUSH_BYTES, dtype=torch.int8, device=device)
    flush_ms = profile_kernel_time(flush.zero_, PROFILED_CALLS, device)
    rows = []
    for channels, size in STAGE_TAILS:
        block = _random_srm_bottleneck(device, channels)[0].eval()
        args = folded_tail_args(block)
        for channels_last in (True, False):
            memory_format = torch.channels_last if channels_last else torch.contiguous_format
            y, shortcut = (torch.randn(batch_size, channels, size, size, device=device, dtype=torch.bfloat16)
                           .contiguous(memory_format=memory_format) for _ in range(2))
            scale, bias = (torch.rand(batch_size, channels, device=device) for _ in range(2))
            row = dict(shape=_dims(y.shape), channels_last=channels_last,
                       picked='one_pass' if launch.takes_one_pass(y) else 'three_kernels',
                       one_pass_tile=_dims(launch.one_pass_tile(y)))
            with torch.no_grad():
                for name, tail in INFERENCE_TAILS.items():
                    call = partial(tail, y, shortcut, *args)
                    row[f'{name}_us'] = do_bench(call, return_mode='median') * 1e3
                    row[f'{name}_kernels_us'] = kernel_us(call, flush, flush_ms, device)
                for channels_per_program in ONE_PASS_CHANNELS:
                    row[f'one_pass_c{channels_per_program}_us'] = do_bench(
                        partial(launch.folded_tail_one_pass, y, shortcut, *args,
                                channels_per_program=channels_per_program), return_mode='median') * 1e3
                row['picked_shortcut_norm_us'] = do_bench(
                    partial(launch.folded_block_tail, y, shortcut, *args,
                            *shortcut_norm_args(_random_shortcut_norm(channels, device))), return_mode='median') * 1e3
                with use_reference(True):
                    row['inductor_us'] = do_bench(partial(inductor_tail(block), y, shortcut), return_mode='median') * 1e3
                apply = partial(launch.gate_apply, y, scale, bias, shortcut)
                row['apply_only_us'] = do_bench(apply, return_mode='median') * 1e3
                row['apply_only_kernels_us'] = kernel_us(apply, flush, flush_ms, device)
            row['apply_only_gbps'] = 3 * y.numel() * y.element_size() / row['apply_only_us'] / 1e3
            rows.append(row)
    return rows


def tail_repeat_differences(block: torch.nn.Module, y: torch.Tensor, shortcut: torch.Tensor, training: bool
                            ) -> Dict[str, float]:
    """Largest absolute differences between two runs of an SRM block's tail (its last BatchNorm, SRM,
    add and ReLU on the convolution output ``y``) from the same state and inputs: output and, in
    training, gradients and running statistics. The fused tail adds the parts of its sums in a fixed
    order (no atomics), so every difference should be 0."""
    runs = []
    grad_out = torch.randn(y.shape, device=y.device, generator=torch.Generator(y.device).manual_seed(1)).to(y.dtype)
    for _ in range(2):
        run_block = copy.deepcopy(block).train(training)
        inputs = [t.detach().clone().requires_grad_(training) for t in (y, shortcut)]
        with torch.set_grad_enabled(training):
            out = run_block._tail(*inputs)
        results = {'output': out}
        if training:
            out.backward(grad_out)
            results.update(input_grad=inputs[0].grad, shortcut_grad=inputs[1].grad,
                           param_grads=torch.cat([p.grad.flatten() for p in run_block.parameters()
                                                  if p.grad is not None]),
                           running_stats=torch.cat([b.flatten().double() for b in run_block.buffers()]))
        runs.append(results)
    return {name: (runs[0][name].double() - runs[1][name].double()).abs().max().item() for name in runs[0]}


def repeat_checks(device: torch.device) -> List[Dict[str, Any]]:
    """:func:`tail_repeat_differences` of an SRM bottleneck's tail in bf16, channels_last (where each
    map's sums come in several parts), eval and train: every difference must be 0."""
    results = []
    for training in (False, True):
        block, generator = _random_srm_bottleneck(device)
        y, shortcut = (torch.randn(16, 256, 56, 56, generator=generator).to(device, torch.bfloat16)
                       .contiguous(memory_format=torch.channels_last) for _ in range(2))
        differences = tail_repeat_differences(block.to(memory_format=torch.channels_last), y, shortcut, training)
        results.append(dict(check='block tail repeats exactly', training=training,
                            passed=not any(differences.values()), **differences))
    return results


def _train_step_results(model: torch.nn.Module, x: torch.Tensor, reference: bool
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
    """All parameter gradients and BatchNorm running statistics after one training step of ``model``
    on ``x`` (gradients zeroed first), each flattened into one float64 vector."""
    model.zero_grad()
    with use_reference(reference):
        model(x).logsumexp(-1).mean().backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters()]).double()
    running_stats = torch.cat([b.flatten().double() for n, b in model.named_buffers() if 'running' in n])
    return grads, running_stats


def model_checks(device: torch.device) -> List[Dict[str, Any]]:
    """SRM-ResNet-50, fast against reference: eval logits under bf16 autocast, and a float32 training
    step's gradients and running statistics, both paths against a float64 reference step."""
    torch.manual_seed(0)
    model = timm.create_model('srm_resnet50')
    model = randomize_srm_(model, torch.Generator().manual_seed(0)).to(device).to(memory_format=torch.channels_last)
    x = torch.randn(32, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
    results = []
    model.eval()
    with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16):
        with use_reference(True):
            expected = model(x).float()
        out = model(x).float()
    err = _max_rel_err(out, expected.double())
    results.append(dict(check='srm_resnet50 eval bf16 logits', error=err, tolerance=5e-2, passed=err <= 5e-2))
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    expected = _train_step_results(copy.deepcopy(model).double(), x.double(), reference=True)
    per_path = []
    for reference in (True, False):
        model.load_state_dict(state)
        per_path.append(_train_step_results(model, x, reference))
    for name, index, tolerance in (('gradients', 0, 1e-3), ('BatchNorm running statistics', 1, 1e-4)):
        reference_err, err = (_max_rel_err(results_of[index], expected[index]) for results_of in per_path)
        results.append(dict(check=f'srm_resnet50 train float32 {name}', error=err, reference_error=reference_err,
                            tolerance=tolerance, passed=_within(err, reference_err, tolerance)))
    return results


@contextmanager
def exact_float32():
    """cuDNN convolutions and matmuls in full float32 instead of TF32 (PyTorch's default for cuDNN on
    Ampere and later GPUs), so that float32 checks measure SRM's rounding, not the tensor cores'."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


CHECK_GROUPS = (kernel_checks, inference_tail_checks, tail_checks, second_derivative_checks, transform_checks,
                layout_checks, repeat_checks, model_checks, compiled_training_checks)


def run_checks(device: torch.device, groups: Sequence[Callable[[torch.device], List[Dict[str, Any]]]] = CHECK_GROUPS
               ) -> List[Dict[str, Any]]:
    """The results of every check group (float32 without TF32); a group that raises becomes one failed
    check holding its traceback, so that the groups and benchmarks after it still run."""
    results = []
    with exact_float32():
        for group in groups:
            try:
                results += group(device)
            except Exception:
                results.append(dict(check=group.__name__, passed=False, error=traceback.format_exc()))
    return results


def speed_table(rows_by_run: Dict[str, List[Dict[str, Any]]]) -> str:
    """The README's markdown speed table: ratios to resnet50 plus its images/s. Where resnet50 ran first,
    each ratio is followed by the quartiles of the round-by-round ratios, the run's noise; where a compiled
    model ran graphs without the CUDA graphs its mode asked for, by their number; where the steps were
    profiled, by the GPU's kernel time per step against the step's time."""
    lines = ['| model | ' + ' | '.join(rows_by_run) + ' |', '|---|' + '---|' * len(rows_by_run)]
    labels = []
    for rows in rows_by_run.values():
        for row in rows:
            label = row['model'] + (' (reference SRM)' if row['srm_path'] == 'reference' else '')
            if label not in labels:
                labels.append(label)
    for label in labels:
        cells = []
        for run_name, rows in rows_by_run.items():
            mode = 'train' if run_name.startswith('train') else 'infer'
            base = next(r for r in rows if r['model'] == 'resnet50')[f'{mode}_samples_per_sec']
            row = next((r for r in rows if r['model'] + (' (reference SRM)' if r['srm_path'] == 'reference' else '') == label), None)
            if row is None:
                cells.append('')
                continue
            cell = f"{row[f'{mode}_samples_per_sec'] / base:.2f}"
            if row['model'] == 'resnet50':
                cell += f" ({row[f'{mode}_samples_per_sec']:,.0f} img/s)"
            elif rows[0]['model'] == 'resnet50':
                cell += f" ({row[f'{mode}_round_ratio_q1']:.2f}-{row[f'{mode}_round_ratio_q3']:.2f})"
            if row.get('cudagraph_skips'):
                cell += f", {row['cudagraph_skips']} graphs without CUDA graphs"
            if row.get(f'{mode}_kernel_time') is not None:
                cell += f", kernels {row[f'{mode}_kernel_time']:.1f} of {row[f'{mode}_step_time']:.1f} ms"
            if mode == 'train' and row.get('train_peak_mem_mb') is not None:
                mem = next(r for r in rows if r['model'] == 'resnet50')['train_peak_mem_mb']
                cell += f", mem {row['train_peak_mem_mb'] / mem:.2f}x"
            cells.append(cell)
        lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


KERNEL_BENCHMARKS = {'tails': inference_tail_timings}  # name: rows of GPU times


@contextmanager
def fastest_tails(tail_rows: Sequence[Dict[str, Any]]):
    """:func:`~srm_zoo.layers.srm_kernels.launch.takes_one_pass` answering, for each shape and layout of
    ``tail_rows`` (:func:`inference_tail_timings`), whether one kernel timed faster than three there; its own
    rule elsewhere."""
    faster = {(row['shape'], row['channels_last']): row['one_pass_us'] < row['three_kernels_us'] for row in tail_rows}
    rule = launch.takes_one_pass

    def measured_rule(y: torch.Tensor) -> bool:
        return faster.get((_dims(y.shape), launch._one_pass_grid(y).channels_last), rule(y))

    launch.takes_one_pass = measured_rule
    try:
        yield
    finally:
        launch.takes_one_pass = rule


def _benchmark_rows(name: str, device: torch.device, rounds: int, steps: int,
                    tail_rows: Optional[Sequence[Dict[str, Any]]] = None) -> List[Dict[str, Any]]:
    """The rows of benchmark ``name``: GPU times of one of :data:`KERNEL_BENCHMARKS`, or the models of one of
    :data:`BENCHMARKS` (bf16 autocast, channels_last, ``rounds`` interleaved rounds of ``steps`` steps), those of
    :data:`FOLLOWS_TAILS` with the tails that ``tail_rows`` timed faster."""
    if name in KERNEL_BENCHMARKS:
        return KERNEL_BENCHMARKS[name](device)
    if name in FOLLOWS_TAILS and tail_rows is None:
        raise ValueError(f'{name} follows the tails benchmark: list tails before it in --benchmarks')
    config = BenchConfig(models=MODELS, device='cuda', amp='bf16', channels_last=True, rounds=rounds, steps=steps,
                         warmup_steps=5, **BENCHMARKS[name][1])
    with fastest_tails(tail_rows) if name in FOLLOWS_TAILS else nullcontext():
        return run_benchmark(config)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m srm_zoo.benchmark.gpu_check', description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='gpu_results', help='folder for checks.json, CSVs and speed_table.md')
    parser.add_argument('--rounds', type=positive_int, default=5, help='interleaved rounds per benchmark')
    parser.add_argument('--steps', type=positive_int, default=20, help='timed steps per model and round')
    known = [*KERNEL_BENCHMARKS, *BENCHMARKS]
    parser.add_argument('--benchmarks', default=','.join(known),
                        help=f'comma-separated benchmarks to run after the checks, of {", ".join(known)} '
                        '(empty: the checks only)')
    parser.add_argument('--checks', action=argparse.BooleanOptionalAction, default=True,
                        help='check the kernels, an SRM block tail and SRM-ResNet-50 against the reference first')
    args = parser.parse_args(argv)
    benchmarks = [name.strip() for name in args.benchmarks.split(',') if name.strip()]
    unknown = sorted(set(benchmarks) - set(known))
    if unknown:
        parser.error(f'unknown benchmarks {unknown}: choose from {", ".join(known)}')
    for position, name in enumerate(benchmarks):
        if name in FOLLOWS_TAILS and 'tails' not in benchmarks[:position]:
            parser.error(f'{name} follows the tails benchmark: list tails before it in --benchmarks')
    if not torch.cuda.is_available() or not srm_kernels.available():
        print('gpu_check needs a CUDA device and triton.', file=sys.stderr)
        return 2
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device('cuda')
    failed_checks, failed_benchmarks = [], []
    if args.checks:
        checks = run_checks(device)
        (out_dir / 'checks.json').write_text(json.dumps(checks, indent=2))
        failed_checks = [c for c in checks if not c['passed']]
        print(f'{len(checks) - len(failed_checks)}/{len(checks)} checks passed', file=sys.stderr)
        for check in failed_checks:
            print(f'FAILED: {check}', file=sys.stderr)
    rows_by_run, kernel_rows = {}, {}
    for name in benchmarks:
        try:
            rows = _benchmark_rows(name, device, args.rounds, args.steps, kernel_rows.get('tails'))
        except Exception:  # the other benchmarks of a one-shot device run still count
            traceback.print_exc()
            failed_benchmarks.append(name)
            continue
        write_rows(rows, 'csv', str(out_dir / f'{name}.csv'))
        if name in KERNEL_BENCHMARKS:
            kernel_rows[name] = rows
            write_rows(rows, 'table')
        else:
            rows_by_run[BENCHMARKS[name][0]] = rows
    if rows_by_run:
        table = speed_table(rows_by_run)
        header = (f'{torch.cuda.get_device_name()}, torch {torch.__version__}, timm {timm.__version__}, bf16 autocast, '
                  f'channels_last; images/s relative to resnet50 in the same run (median of {args.rounds} interleaved rounds).\n\n')
        (out_dir / 'speed_table.md').write_text(header + table + '\n')
        print(header + table)
    if failed_benchmarks:
        print(f'FAILED benchmarks: {", ".join(failed_benchmarks)}', file=sys.stderr)
    return 1 if failed_checks or failed_benchmarks else 0


if __name__ == '__main__':
    sys.exit(main())
