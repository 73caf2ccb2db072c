"""SRM's fast path against its reference formulation: layer, blocks and models, forward and gradients."""
import copy

import pytest
import timm
import torch
import torch.nn as nn
from timm.models.resnet import BasicBlock, Bottleneck

from conftest import randomize_
from srm_zoo.benchmark.gpu_check import block_tail_errors, randomize_srm_, second_derivative_errors
from srm_zoo.layers import SRM, reference_enabled, use_reference
from srm_zoo.layers.srm import style_pool
from srm_zoo.models.srm_blocks import SRMBasicBlock, SRMBottleneck

TOLERANCES = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=1e-4, atol=1e-5)}
# gradients sum many terms of both signs: compare them relative to their largest entry
GRAD_TOLERANCES = {torch.float64: dict(rtol=1e-7, atol=1e-8), torch.float32: dict(rtol=1e-3, atol=1e-4)}


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


def assert_close_scaled(actual, expected, dtype, msg=None):
    scale = expected.abs().max().clamp_min(1e-30)
    torch.testing.assert_close(actual / scale, expected / scale, **GRAD_TOLERANCES[dtype], msg=msg)


def random_srm(channels, style_pooling='mean_std', dtype=torch.float64, seed=0):
    srm = randomize_(SRM(channels, style_pooling=style_pooling), seed=seed).to(dtype)
    with torch.no_grad():
        srm.cfc.mul_(20)  # a gate far from 1/2
    return srm


def autograd_ops(tensor):
    """Names of the autograd nodes that produced ``tensor``."""
    names, stack, seen = set(), [tensor.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    return names


def run_both(srm, x, shortcut, training):
    """Output, input gradients and parameter gradients on the fast and on the reference path."""
    results = []
    initial_state = {k: v.clone() for k, v in srm.state_dict().items()}
    for reference in (False, True):
        srm.load_state_dict(initial_state)
        srm.train(training).zero_grad()
        inputs = [t.detach().clone().requires_grad_(True) for t in (x, shortcut) if t is not None]
        with use_reference(reference):
            out = srm(*inputs)
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=out.dtype)
        (out * grad_out).sum().backward()
        results.append((out, [t.grad for t in inputs], [p.grad.clone() for p in srm.parameters()],
                        srm.bn.running_var.clone()))
    return results


def test_switch_env_and_context(monkeypatch):
    monkeypatch.delenv('SRM_ZOO_REFERENCE', raising=False)
    assert not reference_enabled()
    monkeypatch.setenv('SRM_ZOO_REFERENCE', '1')
    assert reference_enabled()
    with use_reference(False):
        assert not reference_enabled()
    assert reference_enabled()
    monkeypatch.delenv('SRM_ZOO_REFERENCE')
    switch = use_reference(True)  # a plain call switches at once
    try:
        assert reference_enabled()
    finally:
        switch.__exit__(None, None, None)
    assert not reference_enabled()


def test_switch_selects_the_formulation():
    srm = random_srm(3).train()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    fast_ops = autograd_ops(srm(x))
    with use_reference(True):
        reference_ops = autograd_ops(srm(x))
    assert 'VarBackward0' in reference_ops and 'VarBackward0' not in fast_ops
    assert '_OnePassMomentsBackward' in fast_ops


@pytest.mark.parametrize('hw', [(1, 1), (1, 2), (3, 5), (9, 9)])
@pytest.mark.parametrize('training', [False, True])
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('with_shortcut', [False, True])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_fast_matches_reference(hw, training, channels_last, with_shortcut, dtype):
    srm = random_srm(5, dtype=dtype)
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(3, 5, *hw, generator=gen, dtype=torch.float64) * 2 + 0.5).to(dtype)
    shortcut = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(dtype) if with_shortcut else None
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    (out, in_grads, grads, running_var), (ref, ref_in_grads, ref_grads, ref_running_var) = run_both(
        srm, x, shortcut, training)
    tol = TOLERANCES[dtype]
    assert out.dtype == dtype
    torch.testing.assert_close(out, ref, **tol)
    torch.testing.assert_close(running_var, ref_running_var, **tol)
    for grad, ref_grad in zip(in_grads + grads, ref_in_grads + ref_grads):
        assert_close_scaled(grad, ref_grad, dtype)


@pytest.mark.parametrize('style_pooling', ['mean', 'std'])
def test_fast_matches_reference_pooling_ablations(style_pooling):
    srm = random_srm(4, style_pooling)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    for training in (False, True):
        (out, in_grads, grads, _), (ref, ref_in_grads, ref_grads, _) = run_both(srm, x, x.flip(0), training)
        torch.testing.assert_close(out, ref, **TOLERANCES[torch.float64])
        for grad, ref_grad in zip(in_grads + grads, ref_in_grads + ref_grads):
            torch.testing.assert_close(grad, ref_grad, **TOLERANCES[torch.float64])


def test_large_mean_small_std_float32():
    """Maps whose mean dwarfs their spread: the one-pass variance alone would cancel to noise."""
    srm = random_srm(4, dtype=torch.float32).eval()
    x = torch.randn(2, 4, 7, 7) * torch.tensor([1e-2, 1., 1e-3, 5.])[:, None, None] + torch.tensor([300., 2., -50., 0.])[:, None, None]
    with torch.no_grad():
        out = srm(x)
        with use_reference(True):
            ref = srm(x)
        exact = srm.double().forward_reference(x.double())
    torch.testing.assert_close(out.double(), exact, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('style_pooling', ['mean_std', 'mean', 'std'])
@pytest.mark.parametrize('training', [False, True])
def test_fast_matches_reference_without_autograd(style_pooling, training):
    """Without autograd the gate takes the maps' sums and unscaled spreads, with 1/n and 1/sqrt(n-1)
    folded into its multiply-adds: the same gate, with running or with batch statistics."""
    srm = random_srm(5, style_pooling).train(training)
    x, shortcut = torch.randn(3, 5, 4, 6, dtype=torch.float64), torch.randn(3, 5, 4, 6, dtype=torch.float64)
    state = copy.deepcopy(srm.state_dict())
    with torch.no_grad():
        out = srm(x.clone(), shortcut)
        fast_running_var = srm.bn.running_var.clone()
        srm.load_state_dict(state)
        ref = srm.forward_reference(x, shortcut)
    torch.testing.assert_close(out, ref, **TOLERANCES[torch.float64])
    torch.testing.assert_close(fast_running_var, srm.bn.running_var, **TOLERANCES[torch.float64])


@pytest.mark.parametrize('offset', [1e4, 3e4])
def test_float64_maps_with_a_large_mean_keep_float64_precision(offset):
    """In float64 the one-pass statistics are refined as in float32, at float64's own rounding: maps whose mean is
    1e3-3e4 standard deviations (which cancel to about 1e-7 relative in one pass) match the published maths to
    1e-10."""
    srm = SRM(6).double().eval()
    with torch.no_grad():
        srm.cfc[:, 1] = 1.0  # a gate that follows the standard deviation, which the sigmoid does not flatten
    x = torch.randn(2, 6, 16, 16, dtype=torch.float64) + offset
    with torch.no_grad():
        out = srm(x)
        expected = srm.forward_reference(x)
    torch.testing.assert_close(out, expected, **TOLERANCES[torch.float64])


class _GateWithoutNorm(SRM):
    """An ablation: SRM's gate without its BatchNorm."""

    def gate(self, x):
        z = (style_pool(x, self.style_pooling, self.eps) * self.cfc).sum(dim=-1)
        return torch.sigmoid(z)[:, :, None, None]


def test_a_subclass_may_say_that_it_keeps_the_published_maths():
    """A ``forward`` that only wraps SRM's would lose the fast path, unless the class body says it keeps the maths."""
    class Counted(SRM):
        published_maths = True

        def forward(self, x, shortcut=None):
            return super().forward(x, shortcut)

    class Replaced(SRM):
        def forward(self, x, shortcut=None):
            return x

    assert Counted.published_maths and not Replaced.published_maths and SRM.published_maths


def test_a_subclass_with_a_forward_of_its_own_scripts_and_runs_as_written():
    """A subclass whose ``forward`` takes the feature map alone: eager and TorchScript both run it, then the add and
    ReLU, as timm's block does with the same attention outside the SRM family."""
    class HalfGate(SRM):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 0.5

    class Half(nn.Module):
        def __init__(self, channels: int, **kwargs):
            super().__init__()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 0.5

    model = randomize_(timm.create_model('srm_resnet20_cifar', attn_layer=HalfGate, num_classes=3)).double().eval()
    plain = timm.create_model('srm_resnet20_cifar', attn_layer=Half, num_classes=3).double().eval()
    assert type(plain.layer1[0]) is BasicBlock  # timm's block, not the zoo's SRM block
    plain.load_state_dict(model.state_dict(), strict=False)  # HalfGate's unused SRM parameters are extra
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        expected = plain(x)
    torch.testing.assert_close(model(x), expected, **TOLERANCES[torch.float64])
    torch.testing.assert_close(torch.jit.script(model)(x), expected, **TOLERANCES[torch.float64])


@pytest.mark.parametrize('training', [False, True])
def test_a_subclass_with_its_own_gate_runs_as_written(training):
    """The fast path computes the published maths, so it steps aside for a subclass that replaces ``gate``: alone
    and in a fused block, in both modes, it gives the subclass's maths, and SRM's BatchNorm, which that gate does
    not use, keeps its statistics."""
    srm = randomize_(_GateWithoutNorm(16)).double().train(training)
    x = torch.randn(3, 16, 5, 5, dtype=torch.float64)
    expected = x * _GateWithoutNorm.gate(srm, x)
    torch.testing.assert_close(srm(x), expected, **TOLERANCES[torch.float64])
    block = randomize_(SRMBasicBlock(16, 16, attn_layer=_GateWithoutNorm)).double().train(training)
    running_mean = block.se.bn.running_mean.clone()
    with use_reference(True):
        reference = block(x)
    torch.testing.assert_close(block(x), reference, **TOLERANCES[torch.float64])
    assert torch.equal(block.se.bn.running_mean, running_mean)


@pytest.mark.parametrize('channels_last', [False, True])
def test_cancelled_maps_are_recomputed_around_their_mean(channels_last):
    """Maps whose mean is 1e4 standard deviations: the one-pass sum of squared deviations would be
    rounding noise in float32; the recomputed ones match float64. So do maps whose sum of squares
    overflows float32 while their deviations do not. Constant maps get a spread below one rounding
    step of their value, maps of zeros exactly 0."""
    from srm_zoo.layers.srm_fast import _sums_and_deviations

    gen = torch.Generator().manual_seed(4)
    x = torch.randn(3, 6, 5, 7, generator=gen, dtype=torch.float64)
    x[:, 1] = x[:, 1] * 1e-3 + 10.0
    x[1, 4] = x[1, 4] * 0.01 - 3e2
    x[2, 2] = 7.25
    x[0, 5] = 0.0
    x[0, 3] = x[0, 3] * 1e17 + 1e19
    x[1, 0] = 1e20
    x32 = x.float()
    if channels_last:
        x32 = x32.contiguous(memory_format=torch.channels_last)
    sums, deviations = _sums_and_deviations(x32)
    exact = x32.double()
    exact_deviations = (exact - exact.mean(dim=(2, 3), keepdim=True)).square().sum(dim=(2, 3))
    torch.testing.assert_close(sums.double(), exact.sum(dim=(2, 3)), rtol=1e-6, atol=1e-4)
    constant = torch.zeros_like(deviations, dtype=torch.bool)
    constant[2, 2] = constant[1, 0] = True
    torch.testing.assert_close(deviations.double()[~constant], exact_deviations[~constant], rtol=1e-5, atol=0)
    rounding_step = torch.finfo(torch.float32).eps * x32[constant].flatten(1)[:, 0].abs()
    assert (deviations[constant] <= 35 * rounding_step.square()).all() and deviations[0, 5] == 0


@pytest.mark.parametrize('scale', [1e18, 1e22])
def test_huge_values_stay_finite_float32(scale):
    """Sums of squares overflow float32 long before the variance does (1e18), and an infinite
    standard deviation saturates the gate (1e22): neither gives inf or nan."""
    srm = random_srm(3, dtype=torch.float32).eval()
    x = torch.randn(2, 3, 40, 40) * scale
    with torch.no_grad():
        out = srm(x)
        with use_reference(True):
            ref = srm(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=0)


@pytest.mark.parametrize('amp_dtype', [torch.bfloat16, torch.float16])
def test_autocast_fast_path(amp_dtype):
    srm = random_srm(6, dtype=torch.float32).eval()
    x = torch.randn(2, 6, 5, 5).to(amp_dtype)
    shortcut = torch.randn(2, 6, 5, 5).to(amp_dtype)
    with torch.autocast('cpu', dtype=amp_dtype), torch.no_grad():
        out = srm(x.clone(), shortcut)
    assert out.dtype == amp_dtype
    expected = srm.double().forward_reference(x.double(), shortcut.double())
    torch.testing.assert_close(out.double(), expected, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize('training', [False, True])
@pytest.mark.parametrize('reference', [False, True])
def test_model_cast_to_bf16(training, reference):
    """A model cast with ``.to(torch.bfloat16)``: SRM's BatchNorm runs in its parameters' dtype (it takes no
    wider input), on both paths, in training (batch statistics) and in eval."""
    srm = random_srm(6, dtype=torch.float32).train(training)
    x = torch.randn(4, 6, 5, 5)
    shortcut = torch.randn(4, 6, 5, 5)
    bf16 = copy.deepcopy(srm).to(torch.bfloat16)
    with torch.no_grad(), use_reference(reference):
        out = bf16(x.bfloat16(), shortcut.bfloat16())
    expected = srm.double().forward_reference(x.double(), shortcut.double())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), expected, rtol=3e-2, atol=3e-2)
    if training:
        torch.testing.assert_close(bf16.bn.running_var.double(), srm.bn.running_var, rtol=2e-2, atol=1e-3)


def test_float64_parameters_keep_their_precision_on_a_float32_input():
    """In eval mode SRM's BatchNorm and gate run in float64 for float64 parameters on a float32 input, on both
    paths (the fast path folded the BatchNorm in float32, and lost three digits of the parameters' gradients
    where the maps' mean is large against their spread)."""
    generator = torch.Generator().manual_seed(230)
    srm = SRM(5).double().eval()
    with torch.no_grad():
        for name, tensor in list(srm.named_parameters()) + list(srm.named_buffers()):
            if name.endswith(('running_var', 'weight')):
                tensor.copy_(torch.rand(tensor.shape, generator=generator, dtype=torch.float64) + 0.5)
            elif tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator, dtype=torch.float64) * 0.5)
    x32 = (torch.randn(2, 5, 6, 1, generator=generator, dtype=torch.float64) * 2 + 50).float()
    weights = torch.randn(2, 5, 6, 1, generator=generator, dtype=torch.float64)

    def gradients(inputs, reference):
        module = copy.deepcopy(srm)
        with use_reference(reference):
            out = module(inputs)
        return torch.autograd.grad((out.double() * weights).sum(), [module.cfc, module.bn.weight, module.bn.bias])

    exact = gradients(x32.double(), True)  # the float32 input's values, in float64 throughout
    for reference in (True, False):
        for actual, expected in zip(gradients(x32, reference), exact):
            scale = expected.abs().max()
            torch.testing.assert_close(actual / scale, expected / scale, rtol=0, atol=5e-6,
                                       msg=f'reference path: {reference}')


def test_srm_resnet_trains_cast_to_bf16():
    model = timm.create_model('srm_resnet20_cifar', num_classes=4).to(torch.bfloat16).train()
    loss = model(torch.randn(2, 3, 16, 16, dtype=torch.bfloat16)).float().logsumexp(-1).mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters())


def test_inference_fused_apply_writes_into_block_output_only():
    srm = random_srm(3, dtype=torch.float32).eval()
    x, shortcut = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    shortcut_before = shortcut.clone()
    with torch.no_grad():
        with use_reference(True):
            expected = srm(x.clone(), shortcut)
        out = srm(x, shortcut)
    torch.testing.assert_close(out, expected)
    assert torch.equal(shortcut, shortcut_before)  # the block input stays intact


def test_batch_of_one_in_training_fast_path():
    srm = SRM(4).train()
    with pytest.raises(ValueError, match='batch of one'):
        srm(torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3))


@pytest.mark.parametrize('reference', [False, True])
def test_untracked_running_statistics_stay_as_they_are(reference):
    """BatchNorms told not to track running statistics (``track_running_stats = False`` on a built model)
    train on batch statistics and leave their running statistics and batch counts as they are, as
    ``nn.BatchNorm2d`` does, on either path."""
    model = timm.create_model('srm_resnet18', num_classes=5, zero_init_last=False).train()
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.track_running_stats = False
    before = copy.deepcopy(model.state_dict())
    with use_reference(reference):
        model(torch.randn(2, 3, 32, 32)).sum().backward()
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


@pytest.mark.filterwarnings('ignore:var... degrees of freedom:UserWarning')  # torch.var of an empty batch's maps
@pytest.mark.parametrize('reference', [False, True])
def test_empty_batch_in_training_as_timm(reference):
    """An empty batch in training gives an empty output, counts the batch and leaves the running statistics
    as they are, as timm's resnet18 does."""
    model = timm.create_model('srm_resnet18', num_classes=5).train()
    plain = timm.create_model('resnet18', num_classes=5).train()
    plain.load_state_dict(model.state_dict(), strict=False)
    with use_reference(reference):
        out = model(torch.randn(0, 3, 32, 32))
    assert out.shape == plain(torch.randn(0, 3, 32, 32)).shape == (0, 5)
    plain_state = plain.state_dict()
    for name, value in model.state_dict().items():
        if name in plain_state:
            assert torch.equal(value, plain_state[name]), name
    assert model.layer1[0].bn2.num_batches_tracked == model.layer1[0].se.bn.num_batches_tracked == 1


def test_blocks_are_srm_aware_with_timm_keys():
    model = timm.create_model('srm_resnet50')
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 16 and all(type(b) is SRMBottleneck for b in blocks)
    plain_keys = set(timm.create_model('resnet50').state_dict())
    assert {k for k in model.state_dict() if '.se.' not in k} == plain_keys
    cifar = timm.create_model('srm_resnet20_cifar')
    assert all(type(b) is SRMBasicBlock for b in cifar.modules() if isinstance(b, BasicBlock))
    # another attention layer or activation keeps timm's own blocks
    se = timm.create_model('srm_resnet18', block_args=dict(attn_layer='se'))
    assert all(type(b) is BasicBlock for b in se.modules() if isinstance(b, BasicBlock))
    silu = timm.create_model('srm_resnet18', act_layer=nn.SiLU)
    assert all(type(b) is BasicBlock for b in silu.modules() if isinstance(b, BasicBlock))


ATTENTION_SWAPS = {
    'none': lambda channels: None,
    'identity': lambda channels: nn.Identity(),
    'se': lambda channels: timm.layers.SEModule(channels),
    'eca': lambda channels: timm.layers.EcaModule(channels),
}


@pytest.mark.parametrize('training', [False, True])
@pytest.mark.parametrize('swap', ATTENTION_SWAPS)
@pytest.mark.parametrize('name, plain_name', [('srm_resnet50', 'resnet50'), ('srm_resnet20_cifar', None)])
def test_attention_swapped_into_the_blocks_runs_as_in_timms_blocks(name, plain_name, swap, training):
    """Each block's ``se`` replaced after the model was built (an ablation, another attention module): the
    SRM blocks call it as timm's blocks do (KeyError, AttributeError or TypeError before)."""
    model = randomize_(timm.create_model(name)).double().train(training)
    plain = (timm.create_model(plain_name) if plain_name else copy.deepcopy(model)).double().train(training)
    if plain_name:
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if '.se.' not in k})
    blocks = [m for m in model.modules() if isinstance(m, (SRMBasicBlock, SRMBottleneck))]
    plain_blocks = [m for m in plain.modules() if isinstance(m, (BasicBlock, Bottleneck))]
    assert len(blocks) == len(plain_blocks) > 0
    for block, plain_block in zip(blocks, plain_blocks):
        channels = block.se.cfc.shape[0]
        attention = ATTENTION_SWAPS[swap](channels)
        if attention is not None:
            attention = randomize_(attention).double()
        block.se = plain_block.se = attention  # one module shared by both models
    if not plain_name:  # timm's own blocks around the same modules
        for plain_block in plain_blocks:
            plain_block.__class__ = BasicBlock
    size = 32 if plain_name is None else 64
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    outputs = []
    for net in (model, plain):
        inputs = x.clone().requires_grad_(True)
        out = net(inputs)
        out.square().sum().backward()
        outputs.append((out, inputs.grad))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x), rtol=0, atol=0)


NORM_SWAPS = {
    'group norm': lambda channels: nn.GroupNorm(4, channels),
    'identity': lambda channels: nn.Identity(),
    'batch norm with an activation': lambda channels: timm.layers.BatchNormAct2d(channels, act_layer=nn.ReLU),
}


@pytest.mark.parametrize('grad', [False, True])
@pytest.mark.parametrize('training', [False, True])
@pytest.mark.parametrize('swap', NORM_SWAPS)
def test_another_norm_in_srm_runs_as_a_module_on_the_fast_path(swap, training, grad):
    """SRM's BatchNorm replaced by another norm (GroupNorm for small-batch fine-tuning, an Identity, timm's
    BatchNormAct2d): the fast path gives the reference path's values (it read ``running_mean`` of any norm: an
    AttributeError, or BatchNormAct2d folded without its activation)."""
    model = randomize_(timm.create_model('srm_resnet50')).double().train(training)
    for module in model.modules():
        if isinstance(module, SRM):
            module.bn = randomize_(NORM_SWAPS[swap](module.cfc.shape[0])).double().train(training)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    results = []
    for reference in (False, True):
        net = copy.deepcopy(model)
        inputs = x.clone().requires_grad_(grad)
        with use_reference(reference), torch.set_grad_enabled(grad):
            out = net(inputs)
            if grad:
                out.square().sum().backward()
        buffers = [b.clone() for b in net.buffers() if b.is_floating_point()]
        results.append([out, *([inputs.grad] if grad else []), *buffers])
    # a deep random network amplifies rounding: compare each tensor relative to its largest entry
    for idx, (fast, expected) in enumerate(zip(*results)):
        assert_close_scaled(fast, expected, torch.float64, msg=f'tensor {idx}')


def test_block_with_drop_path_in_training_matches_timm_order():
    block = randomize_(SRMBottleneck(16, 4, attn_layer=SRM, drop_path=timm.layers.DropPath(0.5))).double().train()
    plain = Bottleneck(16, 4, attn_layer=SRM, drop_path=timm.layers.DropPath(0.5)).double().train()
    plain.load_state_dict(block.state_dict())
    x = torch.randn(4, 16, 5, 5, dtype=torch.float64)
    torch.manual_seed(0)
    out = block(x)
    torch.manual_seed(0)
    with use_reference(True):
        expected = plain(x)
    torch.testing.assert_close(out, expected, **TOLERANCES[torch.float64])


def test_srm_resnet50_inference_matches_reference():
    """Float32 fast and reference paths within float32 tolerance of the float64 truth; float64 equal.

    He-initialised convolutions keep activations near unit scale: with ``randomize_`` they grow
    to ~1e7 and saturate most gates, so any 1e-5 difference upstream flips some gate outright.
    """
    model = randomize_srm_(timm.create_model('srm_resnet50', num_classes=10), torch.Generator().manual_seed(0)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        with use_reference(True):
            reference32 = model(x).double()
        fast32 = model(x).double()
        model.double()
        with use_reference(True):
            truth = model(x.double())
        fast64 = model(x.double())
    scale = truth.abs().max()
    torch.testing.assert_close(fast64 / scale, truth / scale, **TOLERANCES[torch.float64])
    reference_error = ((reference32 - truth).abs().max() / scale).item()
    fast_error = ((fast32 - truth).abs().max() / scale).item()
    # the one-pass variance keeps a relative error below 1e-6 (two-pass: ~1e-7): the fast path ends
    # up a few times further from the truth than the reference, both far inside float32 tolerance
    assert max(reference_error, fast_error) <= TOLERANCES[torch.float32]['rtol'], (reference_error, fast_error)


# Training-mode BatchNorm over a batch of two amplifies rounding from block to block (by about
# 1e6 over a full ResNet-50), so the gradient checks run in float64 on short networks.
@pytest.mark.parametrize('name, kwargs, size', [('srm_resnet20_cifar', dict(depth=14), 16),
                                                ('srm_resnet50', dict(layers=(1, 1, 1, 1)), 32)])
def test_model_fast_matches_reference_float64(name, kwargs, size):
    model = randomize_(timm.create_model(name, num_classes=10, **kwargs)).double()
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    with torch.no_grad():
        model.eval()
        with use_reference(True):
            expected = model(x)
        torch.testing.assert_close(model(x), expected, **TOLERANCES[torch.float64])
    model.train()
    grads = []
    initial_state = {k: v.clone() for k, v in model.state_dict().items()}
    for reference in (True, False):
        model.load_state_dict(initial_state)
        model.zero_grad()
        with use_reference(reference):
            model(x).logsumexp(-1).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for param_name, grad in grads[1].items():
        assert_close_scaled(grad, grads[0][param_name], torch.float64, msg=param_name)


def _last_conv(block):
    return block.conv3 if isinstance(block, Bottleneck) else block.conv2


def _last_norm(block):
    return block.bn3 if isinstance(block, Bottleneck) else block.bn2


def _momentum_none(block):
    _last_norm(block).momentum = None
    return block.train()


def _no_running_stats(block):
    norm = _last_norm(block)
    norm.track_running_stats, norm.running_mean, norm.running_var, norm.num_batches_tracked = False, None, None, None
    return block.eval()  # batch statistics even in eval mode


NORM_SETUPS = {
    'train': lambda block: block.train(),
    'eval': lambda block: block.eval(),
    'momentum None': _momentum_none,
    'no running stats': _no_running_stats,
    'frozen, train': lambda block: timm.layers.freeze_batch_norm_2d(block).train(),
    'sync, eval': lambda block: nn.SyncBatchNorm.convert_sync_batchnorm(block).eval(),
}


def _never_called(*args):
    raise AssertionError('the folded norm ran as a module')


@pytest.mark.parametrize('setup', NORM_SETUPS)
@pytest.mark.parametrize('block_cls, plain_cls, planes, stride', [
    (SRMBottleneck, Bottleneck, 4, 1), (SRMBasicBlock, BasicBlock, 16, 2)])
def test_block_tail_folds_its_norm_into_srm(setup, block_cls, plain_cls, planes, stride):
    """The last BatchNorm is not run as a module, yet outputs, gradients and running statistics
    match timm's block on the reference path, in float64."""
    downsample = nn.Sequential(nn.Conv2d(16, planes * block_cls.expansion, 1, stride=stride, bias=False),
                               nn.BatchNorm2d(planes * block_cls.expansion)) if stride > 1 else None
    block = block_cls(16, planes, stride=stride, downsample=downsample, attn_layer=SRM)
    block = NORM_SETUPS[setup](randomize_(block).double())
    plain = plain_cls(16, planes, stride=stride, downsample=copy.deepcopy(downsample), attn_layer=SRM).double()
    plain = NORM_SETUPS[setup](plain)
    plain.load_state_dict(block.state_dict())
    _last_norm(block).forward = _never_called
    x = torch.randn(3, 16, 5, 5, dtype=torch.float64) * 2 + 1
    grad_out = None
    results = []
    for module, reference in ((block, False), (plain, True)):
        inputs = x.clone().requires_grad_(True)
        with use_reference(reference):
            out = module(inputs)
        grad_out = torch.randn_like(out) if grad_out is None else grad_out
        (out * grad_out).sum().backward()
        results.append((out, inputs.grad, {n: p.grad for n, p in module.named_parameters() if p.grad is not None},
                        module.state_dict()))
    (out, grad, param_grads, state), (out_ref, grad_ref, param_grads_ref, state_ref) = results
    torch.testing.assert_close(out, out_ref, **TOLERANCES[torch.float64])
    assert_close_scaled(grad, grad_ref, torch.float64)
    assert param_grads.keys() == param_grads_ref.keys()
    for name, param_grad in param_grads.items():
        assert_close_scaled(param_grad, param_grads_ref[name], torch.float64, msg=name)
    for name, value in state.items():
        torch.testing.assert_close(value, state_ref[name], **TOLERANCES[torch.float64], msg=name)


@pytest.mark.parametrize('grad', [True, False], ids=['autograd', 'no_grad'])
def test_a_norm_that_does_more_than_normalise_is_not_folded(grad):
    """timm's SyncBatchNormAct (what ``convert_sync_batchnorm`` makes of a BatchNormAct2d: a SyncBatchNorm subclass
    that applies its ReLU too) keeps its ReLU in eval mode: with autograd, where SRM would take the norm in, and
    without, where the convolution would."""
    block = randomize_(SRMBottleneck(64, 16, attn_layer=SRM, norm_layer=timm.layers.BatchNormAct2d)).double()
    block = timm.layers.convert_sync_batchnorm(block).eval()
    assert type(block.bn3) is timm.layers.SyncBatchNormAct
    x = torch.randn(2, 64, 12, 12, dtype=torch.float64)
    with torch.set_grad_enabled(grad):
        out = block(x)
        with use_reference(True):
            expected = block(x)
    assert (block.bn3(block.conv3(block.act2(block.bn2(block.conv2(block.act1(block.bn1(block.conv1(x)))))))) == 0
            ).any()  # the ReLU matters
    torch.testing.assert_close(out, expected, **TOLERANCES[torch.float64])


def test_norm_with_a_hook_runs_as_a_module():
    block = randomize_(SRMBottleneck(16, 4, attn_layer=SRM)).double().eval()
    seen = []
    block.bn3.register_forward_hook(lambda module, args, output: seen.append(output.shape))
    x = torch.randn(2, 16, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        out = block(x)
        with use_reference(True):
            expected = block(x)
    assert seen == [(2, 16, 5, 5)] * 2
    torch.testing.assert_close(out, expected, **TOLERANCES[torch.float64])


def _record_calls(module, record):
    """Hooks that record what ``module`` gets and returns: the tensors themselves and copies made at the time."""
    pre = module.register_forward_pre_hook(lambda m, args: record.update(input_copy=args[0].clone()))
    post = module.register_forward_hook(lambda m, args, output: record.update(
        calls=record.get('calls', 0) + 1, input=args[0], output=output, output_copy=output.clone()))
    return pre, post


TAIL_MODULES = {'last norm': _last_norm, 'se': lambda block: block.se, 'se.bn': lambda block: block.se.bn,
                'drop path': lambda block: block.drop_path,
                'last act': lambda block: block.act3 if isinstance(block, Bottleneck) else block.act2}


@pytest.mark.parametrize('grad', [False, True])
@pytest.mark.parametrize('hooked', TAIL_MODULES)
@pytest.mark.parametrize('block_cls, plain_cls', [(SRMBottleneck, Bottleneck), (SRMBasicBlock, BasicBlock)])
def test_hooks_on_the_tail_fire_and_see_timms_values(block_cls, plain_cls, hooked, grad):
    """A hooked module of the fused tail runs once, and its hooks see what they see in timm's block; no
    tensor a hook holds is overwritten afterwards; the block output is unchanged. (Stochastic depth, which
    timm's block calls in eval mode too, where it passes its input on.)"""
    planes = 4 if block_cls is SRMBottleneck else 16
    block = randomize_(block_cls(16, planes, attn_layer=SRM, drop_path=timm.layers.DropPath(0.1))).double().eval()
    plain = plain_cls(16, planes, attn_layer=SRM, drop_path=timm.layers.DropPath(0.1)).double().eval()
    plain.load_state_dict(block.state_dict())
    x = torch.randn(2, 16, 5, 5, dtype=torch.float64)
    records = []
    for module, reference in ((block, False), (plain, True)):
        record = {}
        _record_calls(TAIL_MODULES[hooked](module), record)
        with torch.set_grad_enabled(grad), use_reference(reference):
            record['block'] = module(x)
        records.append(record)
    seen, expected = records
    assert seen['calls'] == 1
    if hooked != 'last act':  # timm's in-place ReLU overwrites its own input in both blocks
        assert torch.equal(seen['input'], seen['input_copy'])
    assert torch.equal(seen['output'], seen['output_copy'])
    for key in ('input_copy', 'output_copy', 'block'):
        torch.testing.assert_close(seen[key], expected[key], **TOLERANCES[torch.float64], msg=key)


@pytest.mark.parametrize('hooked', ['last norm', 'se.bn'])
@pytest.mark.parametrize('block_cls, plain_cls', [(SRMBottleneck, Bottleneck), (SRMBasicBlock, BasicBlock)])
def test_backward_hooks_on_the_tail_fire_and_see_timms_gradients(block_cls, plain_cls, hooked):
    """A full backward hook on a module that the fused tail skips in training fires once, with the output
    gradient it gets in timm's block; the input's gradient is unchanged. (timm's block itself fails with
    such a hook on SRM or the last activation: their outputs are changed in place.)"""
    planes = 4 if block_cls is SRMBottleneck else 16
    block = randomize_(block_cls(16, planes, attn_layer=SRM)).double().train()
    plain = plain_cls(16, planes, attn_layer=SRM).double().train()
    plain.load_state_dict(block.state_dict())
    x = torch.randn(2, 16, 5, 5, dtype=torch.float64)
    grad_out = torch.randn(2, 16, 5, 5, dtype=torch.float64)
    seen = []
    for module, reference in ((block, False), (plain, True)):
        grads = []
        TAIL_MODULES[hooked](module).register_full_backward_hook(
            lambda m, grad_input, grad_output: grads.append(grad_output[0].clone()))
        inputs = x.clone().requires_grad_(True)
        with use_reference(reference):
            module(inputs).backward(grad_out)
        seen.append((grads, inputs.grad))
    (grads, grad), (expected_grads, expected_grad) = seen
    assert len(grads) == 1
    assert_close_scaled(grads[0], expected_grads[0], torch.float64)
    assert_close_scaled(grad, expected_grad, torch.float64)


def test_backward_hook_on_srm_fires():
    """A full backward hook on SRM fires in training, where timm's block fails (its residual add changes
    SRM's hooked output in place): the block runs its unfused tail, whose add makes a new tensor."""
    block = randomize_(SRMBottleneck(16, 4, attn_layer=SRM)).double().train()
    grads = []
    block.se.register_full_backward_hook(lambda m, grad_input, grad_output: grads.append(grad_output[0]))
    out = block(torch.randn(2, 16, 5, 5, dtype=torch.float64, requires_grad=True))
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    assert len(grads) == 1
    torch.testing.assert_close(grads[0], grad_out * (out > 0))  # through the ReLU, before the residual add


@pytest.mark.parametrize('module', ['bottleneck', 'basic block', 'srm', 'srm with shortcut'])
@pytest.mark.parametrize('size', [5, 1])
def test_second_derivatives_match_reference(module, size):
    """A gradient penalty (input gradients with ``create_graph=True``, then their squared norm's gradients)
    through the fast path in training: the reference path's values in float64."""
    modules = {'bottleneck': lambda: SRMBottleneck(16, 4, attn_layer=SRM),
               'basic block': lambda: SRMBasicBlock(16, 16, attn_layer=SRM)}
    net = randomize_(modules.get(module, lambda: SRM(16))()).double().train()
    num_inputs = 2 if module == 'srm with shortcut' else 1
    inputs = [torch.randn(3, 16, size, size, dtype=torch.float64) for _ in range(num_inputs)]
    errors = second_derivative_errors(net, inputs)
    assert max(errors.values()) <= 1e-10, errors


def test_model_hooks_keep_their_tensors():
    model = randomize_srm_(timm.create_model('srm_resnet20_cifar'), torch.Generator().manual_seed(0)).eval()
    norm, srm = {}, {}
    _record_calls(model.layer1[0].bn2, norm)
    _record_calls(model.layer1[0].se, srm)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        with use_reference(True):
            expected = model(x)
    assert torch.equal(norm['output'], norm['output_copy']) and torch.equal(srm['input'], srm['input_copy'])
    torch.testing.assert_close(out, expected)


def test_global_forward_hooks_see_every_tail_module():
    block = randomize_(SRMBasicBlock(16, 16, attn_layer=SRM)).double().eval()
    names = {module: name for name, module in block.named_modules()}
    seen = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, output: seen.append((names.get(module), output.clone(), output)))
    try:
        with torch.no_grad():
            out = block(torch.randn(2, 16, 5, 5, dtype=torch.float64))
    finally:
        handle.remove()
    outputs = {name: (copy, output) for name, copy, output in seen}
    assert all(torch.equal(*outputs[name]) for name in ('bn2', 'se', 'se.bn'))
    assert outputs['act2'][1] is out  # the last activation gives the block's output


INFERENCE_NORM_SETUPS = {name: NORM_SETUPS[name] for name in ('eval', 'frozen, train', 'sync, eval')}


def _counting_calls(module):
    """Replaces ``module.forward`` (not a hook: hooks keep a norm from folding) with one that counts its calls."""
    calls, forward = [], module.forward

    def counted(*args):
        calls.append(args[0].shape)
        return forward(*args)
    module.forward = counted
    return calls


@pytest.mark.parametrize('setup', INFERENCE_NORM_SETUPS)
@pytest.mark.parametrize('block_cls, plain_cls, planes, stride, size, folds', [
    (SRMBottleneck, Bottleneck, 4, 1, 5, True), (SRMBasicBlock, BasicBlock, 16, 2, 16, True),
    # the convolution's weight outweighs its output: the norm runs as a module
    (SRMBottleneck, Bottleneck, 4, 1, 1, False), (SRMBasicBlock, BasicBlock, 16, 2, 4, False)])
def test_inference_folds_the_last_norm_into_the_convolution(setup, block_cls, plain_cls, planes, stride, size, folds):
    """Without autograd the last BatchNorm is folded into the last convolution's weight and bias where the
    weight is smaller than the output; either way the block matches timm's on the reference path in float64."""
    downsample = nn.Sequential(nn.Conv2d(16, planes * block_cls.expansion, 1, stride=stride, bias=False),
                               nn.BatchNorm2d(planes * block_cls.expansion)) if stride > 1 else None
    block = INFERENCE_NORM_SETUPS[setup](randomize_(block_cls(16, planes, stride=stride, downsample=downsample,
                                                              attn_layer=SRM)).double())
    plain = plain_cls(16, planes, stride=stride, downsample=copy.deepcopy(downsample), attn_layer=SRM).double()
    plain = INFERENCE_NORM_SETUPS[setup](plain)
    for module in (block, plain):  # a convolution with a bias of its own folds too
        _last_conv(module).bias = nn.Parameter(torch.randn(_last_conv(module).out_channels, dtype=torch.float64))
    plain.load_state_dict(block.state_dict())
    norm_calls = _counting_calls(_last_norm(block))
    x = torch.randn(3, 16, size, size, dtype=torch.float64) * 2 + 1
    with torch.no_grad():
        out = block(x)
        with use_reference(True):
            expected = plain(x)
    assert len(norm_calls) == (0 if folds else 1)
    torch.testing.assert_close(out, expected, **TOLERANCES[torch.float64])


def test_convolution_with_a_hook_keeps_its_norm():
    block = randomize_(SRMBottleneck(16, 4, attn_layer=SRM)).double().eval()
    seen = []
    block.conv3.register_forward_hook(lambda module, args, output: seen.append(output.shape))
    norm_calls = _counting_calls(block.bn3)
    x = torch.randn(2, 16, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        out = block(x)
        with use_reference(True):
            expected = block(x)
    assert seen == [(2, 16, 5, 5)] * 2 and len(norm_calls) == 2
    torch.testing.assert_close(out, expected, **TOLERANCES[torch.float64])


def test_norm_folded_into_the_convolution_keeps_bf16_autocast_accurate():
    """A float32 block under bf16 autocast: the folded weight is rounded to bf16 once, as the plain weight is,
    so the output stays as close to float64 as on the reference path."""
    block = randomize_srm_(SRMBottleneck(64, 16, attn_layer=SRM), torch.Generator().manual_seed(0)).eval()
    with torch.no_grad():
        block.bn3.running_var.mul_(1e-2)  # a norm that scales the convolution's output up tenfold
    norm_calls = _counting_calls(block.bn3)
    x = torch.randn(4, 64, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = copy.deepcopy(block).double()(x.double())
        errors = []
        for reference in (False, True):
            with use_reference(reference), torch.autocast('cpu', dtype=torch.bfloat16):
                out = block(x)
            errors.append(((out.double() - expected).norm() / expected.norm()).item())
    assert len(norm_calls) == 1  # on the reference path only
    assert errors[0] <= 1.5 * errors[1], errors


@pytest.mark.parametrize('amp_dtype', [None, torch.bfloat16])
def test_training_keeps_no_more_activations_than_resnet50(amp_dtype):
    """The folded block tail keeps the convolution output and the block output, as a plain block
    does; keeping SRM's input as well would cost SRM-ResNet-50 about 17% more at 224 px. Under bf16
    autocast the tail's float32 sum is rounded before its ReLU, which keeps its output in bf16 (in float32
    it cost 1.5x resnet50's activations)."""
    from srm_zoo.benchmark.memory import saved_activation_bytes
    x = torch.randn(2, 3, 224, 224)
    with torch.autocast('cpu', dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
        plain = saved_activation_bytes(timm.create_model('resnet50').train(), x)
        srm = saved_activation_bytes(timm.create_model('srm_resnet50').train(), x)
    assert srm <= 1.05 * plain


@pytest.mark.parametrize('training', [False, True])
def test_folded_norm_keeps_bf16_autocast_accurate(training):
    """Folding a BatchNorm whose mean is far from zero into ``y * gate * a + gate * b`` cancels two
    large terms: the CPU path keeps them in float32, so bf16 outputs stay as close to float64 as
    the reference path's."""
    block = randomize_srm_(SRMBottleneck(32, 8, attn_layer=SRM), torch.Generator().manual_seed(0))
    x = torch.rand(4, 32, 5, 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # convolution outputs with a large mean, as in trained networks
        block.bn2.bias.fill_(20.0)
        block.conv3.weight.add_(0.5)
        y = block.conv3(block.act2(block.bn2(block.conv2(block.act1(block.bn1(block.conv1(x)))))))
        block.bn3.running_mean.copy_(y.mean(dim=(0, 2, 3)))
        block.bn3.running_var.copy_(y.var(dim=(0, 2, 3)))
    assert (y.mean(dim=(0, 2, 3)) / y.std(dim=(0, 2, 3))).min().item() > 5
    errors = block_tail_errors(copy.deepcopy(block), x, training, torch.bfloat16)
    with use_reference(True):
        reference_errors = block_tail_errors(block, x, training, torch.bfloat16)
    assert errors['output'] <= 1.2 * reference_errors['output'], (errors, reference_errors)
