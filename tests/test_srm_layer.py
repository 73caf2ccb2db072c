"""The SRM layer against a plain re-statement of the published maths (arXiv:1903.10829)."""
import pytest
import torch
import torch.nn as nn
from timm.layers import freeze_batch_norm_2d

from srm_zoo.layers import SRM, use_reference

EPS = 1e-5


def published_srm(x, cfc, gamma, beta, running_mean, running_var, training, style_pooling='mean_std'):
    """SRM written out from the paper, in float64, independent of the module's code."""
    n, c, h, w = x.shape
    values = x.reshape(n, c, h * w)
    mean = values.sum(-1) / (h * w)
    if h * w > 1:
        var = ((values - mean[..., None]) ** 2).sum(-1) / (h * w - 1)
    else:
        var = torch.zeros_like(mean)
    std = torch.sqrt(var + EPS)
    styles = {'mean_std': (mean, std), 'mean': (mean,), 'std': (std,)}[style_pooling]
    z = sum(cfc[:, i] * s for i, s in enumerate(styles))
    if training:
        bn_mean = z.mean(0)
        bn_var = ((z - bn_mean) ** 2).mean(0)
    else:
        bn_mean, bn_var = running_mean, running_var
    z_hat = (z - bn_mean) / torch.sqrt(bn_var + EPS) * gamma + beta
    return x * torch.sigmoid(z_hat)[:, :, None, None]


def random_srm(channels, style_pooling='mean_std', seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    srm = SRM(channels, style_pooling=style_pooling).to(dtype)
    with torch.no_grad():
        srm.cfc.copy_(torch.randn(srm.cfc.shape, generator=gen, dtype=dtype) * 2)
        srm.bn.weight.copy_(torch.rand(channels, generator=gen, dtype=dtype) + 0.5)
        srm.bn.bias.copy_(torch.randn(channels, generator=gen, dtype=dtype))
        srm.bn.running_mean.copy_(torch.randn(channels, generator=gen, dtype=dtype))
        srm.bn.running_var.copy_(torch.rand(channels, generator=gen, dtype=dtype) + 0.1)
    return srm


def reference_for(srm, x, training):
    return published_srm(x, srm.cfc.detach(), srm.bn.weight.detach(), srm.bn.bias.detach(),
                         srm.bn.running_mean.clone(), srm.bn.running_var.clone(), training, srm.style_pooling)


@pytest.mark.parametrize('hw', [(1, 1), (1, 2), (7, 7), (56, 56)])
@pytest.mark.parametrize('training', [False, True])
@pytest.mark.parametrize('channels_last', [False, True])
def test_matches_published_maths_float64(hw, training, channels_last):
    srm = random_srm(6).train(training)
    x = torch.randn(4, 6, *hw, dtype=torch.float64) * 3 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = reference_for(srm, x, training)
    out = srm(x)
    assert out.dtype == torch.float64 and out.shape == x.shape
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize('style_pooling', ['mean_std', 'mean', 'std'])
def test_style_pooling_ablations(style_pooling):
    srm = random_srm(5, style_pooling).eval()
    assert srm.cfc.shape == (5, 2 if style_pooling == 'mean_std' else 1)
    x = torch.randn(3, 5, 4, 3, dtype=torch.float64)
    torch.testing.assert_close(srm(x), reference_for(srm, x, False), rtol=1e-13, atol=1e-15)


def test_epsilon_inside_sqrt_and_unbiased_variance():
    """Small-variance inputs on a small map: eps outside the sqrt or a biased variance differ."""
    srm = random_srm(4).eval()
    x = torch.randn(2, 4, 2, 2, dtype=torch.float64) * 1e-3
    out = srm(x)
    torch.testing.assert_close(out, reference_for(srm, x, False), rtol=1e-13, atol=1e-18)
    values = x.flatten(2)
    mean = values.mean(-1)
    for wrong_std in (values.std(-1, unbiased=False).add(EPS ** 0.5),  # biased variance
                      values.std(-1) + EPS,  # eps outside the square root
                      values.std(-1)):  # no eps at all
        z = srm.cfc[:, 0] * mean + srm.cfc[:, 1] * wrong_std
        bn = srm.bn
        wrong = x * torch.sigmoid((z - bn.running_mean) / torch.sqrt(bn.running_var + EPS) * bn.weight + bn.bias)[..., None, None]
        assert not torch.allclose(out, wrong, rtol=1e-6, atol=0)


def test_single_pixel_is_finite():
    srm = random_srm(3).train()
    x = torch.randn(4, 3, 1, 1, dtype=torch.float64)
    out = srm(x)
    assert torch.isfinite(out).all()
    # sigma is sqrt(eps) when the map has a single value
    torch.testing.assert_close(out, reference_for(srm, x, True), rtol=1e-13, atol=1e-15)


def test_initial_gate_is_one_half():
    srm = SRM(8).train()
    x = torch.randn(4, 8, 5, 5)
    torch.testing.assert_close(srm(x), x * 0.5)
    assert torch.count_nonzero(srm.cfc) == 0


def test_reset_parameters_gives_the_initial_state_after_a_meta_build():
    srm = SRM(8, device='meta').to_empty(device='cpu')
    srm.reset_parameters()
    fresh = SRM(8)
    assert all(torch.equal(value, fresh.state_dict()[key]) for key, value in srm.state_dict().items())


def test_batch_of_one_in_training_names_the_remedies():
    srm = SRM(4).train()
    with pytest.raises(ValueError, match='SRM') as info:
        srm(torch.randn(1, 4, 3, 3))
    for remedy in ('eval', 'freeze', 'batch'):
        assert remedy in str(info.value)
    srm.eval()(torch.randn(1, 4, 3, 3))


def test_frozen_batchnorm_allows_batch_of_one():
    model = nn.Sequential(random_srm(4, dtype=torch.float32))
    frozen = freeze_batch_norm_2d(model).train()
    assert type(frozen[0].bn).__name__ == 'FrozenBatchNorm2d'
    x = torch.randn(1, 4, 3, 3)
    torch.testing.assert_close(frozen(x), model.eval()(x))


def test_sync_batchnorm_conversion():
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(SRM(4)))
    assert isinstance(converted[0].bn, nn.SyncBatchNorm)


@pytest.mark.parametrize('amp_dtype', [torch.bfloat16, torch.float16])
def test_autocast_computes_gate_in_float32(amp_dtype):
    srm = random_srm(8, dtype=torch.float32).eval()
    x = torch.randn(2, 8, 6, 6).to(amp_dtype)
    with torch.autocast('cpu', dtype=amp_dtype):
        gate = srm.gate(x)
        out = srm(x)
    assert gate.dtype == torch.float32
    assert out.dtype == amp_dtype
    expected = reference_for(srm.double(), x.double(), False)
    torch.testing.assert_close(out.double(), expected, rtol=1e-2, atol=1e-2)


def test_bad_style_pooling():
    with pytest.raises(ValueError, match='style_pooling'):
        SRM(4, style_pooling='max')


# torch.jit.trace is deprecated; the trace holds the map size it saw (whether a map has more than one value)
@pytest.mark.filterwarnings('ignore::FutureWarning', 'ignore::torch.jit.TracerWarning')
def test_traced_srm_takes_the_reference_path():
    """``torch.jit.trace`` records the reference formulation: the fast path's choices made on values (maps
    whose one-pass variance cancels, summed again around their mean) would become constants of the trace.
    Traced on ordinary maps, the trace then holds for maps of mean 100 and standard deviation 0.01."""
    torch.manual_seed(0)
    srm = SRM(8).eval()
    with torch.no_grad():
        srm.cfc.normal_()
        traced = torch.jit.trace(srm, torch.randn(2, 8, 6, 6), check_trace=False)
        x = torch.randn(2, 8, 6, 6) * 0.01 + 100
        torch.testing.assert_close(traced(x), srm.forward_reference(x), rtol=0, atol=0)


@pytest.mark.parametrize('reference', [False, True])
@pytest.mark.parametrize('shape, shortcut_shape, message', [
    ((2, 1, 4, 4), None, 'SRM(8) takes (N, 8, H, W) inputs, got one of shape (2, 1, 4, 4).'),  # would broadcast
    ((8, 8, 5), None, 'SRM(8) takes (N, 8, H, W) inputs, got one of shape (8, 8, 5).'),
    ((2, 8, 3, 3, 3), None, 'SRM(8) takes (N, 8, H, W) inputs, got one of shape (2, 8, 3, 3, 3).'),
    ((2, 8, 1, 1), (2, 8, 5, 5), 'the shortcut must have the shape of the input, (2, 8, 1, 1), not (2, 8, 5, 5).'),
])
def test_inputs_of_another_shape_are_refused_on_both_paths(reference, shape, shortcut_shape, message):
    """Inputs of another rank or channel count, and a shortcut of another shape, are clear errors on both paths
    (a channel count of 1 or a smaller shortcut used to broadcast silently into another output)."""
    srm = SRM(8)
    shortcut = torch.randn(shortcut_shape) if shortcut_shape else None
    with use_reference(reference), pytest.raises(ValueError) as error:
        srm(torch.randn(shape), shortcut)
    assert message in str(error.value)


def test_shortcut_form_without_autograd_matches_the_reference_and_spares_what_it_must():
    """Without autograd the fused ``relu(x * gate + shortcut)`` may write into ``x``, but not into an expanded
    ``x`` (one memory location for several elements), a view of another tensor, an ``x`` of another dtype than
    the result (which follows PyTorch's promotion, as the reference does), nor an input a hook holds."""
    srm = random_srm(4).eval()
    shortcut = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    base = torch.randn(3, 4, 5, 10, dtype=torch.float64)
    inputs = {'expanded': lambda: torch.randn(1, 4, 5, 5, dtype=torch.float64).expand(3, 4, 5, 5),
              'view': lambda: base[..., ::2], 'dense view': lambda: base[..., :5].contiguous().view(3, 4, 5, 5)[:3],
              'float32': lambda: torch.randn(3, 4, 5, 5)}
    for name, make in inputs.items():
        x = make()
        before = x.clone()
        with torch.no_grad():
            out = srm(x, shortcut)
            with use_reference(True):
                expected = srm(before, shortcut)
        assert out.dtype == expected.dtype == torch.float64, name
        tolerance = 1e-5 if name == 'float32' else 1e-12  # float32 statistics of the float32 input
        torch.testing.assert_close(out, expected, rtol=tolerance, atol=tolerance, msg=name)
        assert name == 'float32' or torch.equal(x, before), name
    seen = []
    srm.register_forward_hook(lambda module, args, output: seen.append((args[0], args[0].clone())))
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        srm(x, shortcut)
    held, copy = seen[0]
    assert torch.equal(held, copy)


def test_shortcut_form_without_autograd_takes_inference_tensors_and_a_shortcut_sharing_x():
    """An ``x`` made under ``torch.inference_mode`` cannot be written outside it, and a shortcut that is a view
    of ``x`` with other strides would change while being read: both give the reference's result, ``x`` intact."""
    srm = random_srm(4).eval()
    with torch.inference_mode():
        frozen_x, frozen_shortcut = torch.randn(2, 4, 3, 3, dtype=torch.float64), torch.randn(2, 4, 3, 3,
                                                                                        dtype=torch.float64)
    square = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    for x, shortcut in ((frozen_x, frozen_shortcut), (square, square.transpose(2, 3))):
        before = x.clone()
        with torch.no_grad():
            out = srm(x, shortcut)
            with use_reference(True):
                expected = srm(before, before.transpose(2, 3) if shortcut._base is x else shortcut)
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
        assert torch.equal(x, before)
