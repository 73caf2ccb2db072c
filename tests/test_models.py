"""Sweep over every registered SRM model, in the spirit of timm's tests/test_models.py."""
import pytest
import timm
import torch
from timm.models import get_pretrained_cfg

from conftest import randomize_
from srm_zoo.layers import use_reference

MODELS = timm.list_models('srm_*')
BIG_INPUT = 32  # small inputs keep the suite fast, as timm's own tests do (the last stage is then 1x1)


def small_input_size(name):
    cfg = get_pretrained_cfg(name).to_dict()
    size = min(cfg['input_size'][-1], BIG_INPUT)
    return (cfg['input_size'][0], size, size)


def test_zoo_is_complete():
    assert set(MODELS) == {
        'srm_resnet18', 'srm_resnet34', 'srm_resnet50', 'srm_resnet101', 'srm_resnet152', 'srm_resnet50d',
        'srm_resnext50_32x4d', 'srm_resnext101_32x4d', 'srm_resnext101_32x8d', 'srm_wide_resnet50_2',
        'srm_resnet20_cifar', 'srm_resnet32_cifar', 'srm_resnet56_cifar', 'srm_resnet110_cifar'}


@pytest.mark.parametrize('name', MODELS)
def test_forward_backward(name):
    model = randomize_(timm.create_model(name, num_classes=42))
    model.train()
    x = torch.randn(2, *small_input_size(name))
    out = model(x)
    assert out.shape == (2, 42) and torch.isfinite(out).all()
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f'no (finite) gradient for {missing[:5]}'
    # gradient checkpointing computes the same forward
    model.eval()
    with torch.no_grad():
        plain = model(x)
        model.set_grad_checkpointing(True)
        torch.testing.assert_close(model(x), plain)


@pytest.mark.parametrize('name', MODELS)
def test_cfg_and_head(name):
    model = timm.create_model(name).eval()
    cfg = model.pretrained_cfg
    assert cfg['paper_ids'] == 'arXiv:1903.10829'
    state = model.state_dict()
    assert cfg['first_conv'] + '.weight' in state
    assert cfg['classifier'] + '.weight' in state
    size = 64 if cfg['input_size'][-1] > 64 else cfg['input_size'][-1]
    x = torch.randn(1, cfg['input_size'][0], size, size)
    with torch.no_grad():
        features = model.forward_features(x)
        # the pool size of the cfg's input size, scaled to the smaller test input
        assert features.shape[-2:] == tuple(p * size // cfg['input_size'][-1] for p in cfg['pool_size'])
        assert features.shape[1] == model.num_features
        pooled = model.forward_head(features, pre_logits=True)
        assert pooled.shape == (1, model.num_features)
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), pooled)
        model.reset_classifier(5)
        assert model(x).shape == (1, 5)
    assert model.get_classifier().out_features == 5


@pytest.mark.parametrize('name', ['srm_resnet20_cifar', 'srm_resnet18'])
def test_head_hidden_size_is_the_pre_logits_width(name):
    """``head_hidden_size`` is the width ``forward_head(pre_logits=True)`` returns, as in timm's ResNet: twice the
    features with a pooling that concatenates two, whether the head was built with the model or reset."""
    model = timm.create_model(name, global_pool='catavgmax', num_classes=3).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        width = model.forward_head(model.forward_features(x), pre_logits=True).shape[1]
    assert model.head_hidden_size == width == 2 * model.num_features
    model.reset_classifier(3, 'avg')
    assert model.head_hidden_size == model.num_features


def test_num_classes_zero_and_in_chans():
    model = timm.create_model('srm_resnet18', num_classes=0, in_chans=1).eval()
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 512)
    cifar = timm.create_model('srm_resnet20_cifar', num_classes=0, in_chans=4).eval()
    assert cifar(torch.randn(1, 4, 32, 32)).shape == (1, 64)


@pytest.mark.parametrize('name', MODELS)
def test_features_only(name):
    model = timm.create_model(name, features_only=True).eval()
    size = small_input_size(name)
    with torch.no_grad():
        features = model(torch.randn(1, *size))
    assert [f.shape[1] for f in features] == model.feature_info.channels()
    assert [size[-1] // f.shape[-1] for f in features] == model.feature_info.reduction()
    base = timm.create_model(name).eval()
    with torch.no_grad():
        x = torch.randn(1, *size)
        final, intermediates = base.forward_intermediates(x)
        torch.testing.assert_close(final, base.forward_features(x))
        assert [t.shape[1] for t in intermediates] == [info['num_chs'] for info in base.feature_info]


def test_features_out_indices_and_getter():
    model = timm.create_model('srm_resnet18', features_only=True, out_indices=(1, 2, 3, 4))
    assert model.feature_info.channels() == [64, 128, 256, 512]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    getter = timm.create_model('srm_resnet20_cifar', features_only=True, feature_cls='getter', out_indices=(1, 3))
    assert [f.shape[1] for f in getter(torch.randn(2, 3, 32, 32))] == [16, 64]


@pytest.mark.parametrize('name', ['srm_resnet18', 'srm_resnet50d', 'srm_resnext50_32x4d', 'srm_resnet20_cifar'])
def test_torchscript(name):
    model = randomize_(timm.create_model(name)).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(2, *small_input_size(name))
    with torch.no_grad(), use_reference(True):  # TorchScript runs SRM's reference formulation
        torch.testing.assert_close(scripted(x), model(x))


@pytest.mark.parametrize('name', ['srm_resnet18', 'srm_resnet50', 'srm_resnet20_cifar'])
def test_fx_feature_extraction(name):
    from timm.models import create_feature_extractor, get_graph_node_names
    model = randomize_(timm.create_model(name)).eval()
    train_nodes, eval_nodes = get_graph_node_names(model)
    assert any('style_pool' in node for node in eval_nodes)
    extractor = create_feature_extractor(model, return_nodes={'layer1': 'layer1', 'fc': 'logits'})
    x = torch.randn(2, *small_input_size(name))
    with torch.no_grad(), use_reference(True):  # the FX graph holds SRM's reference formulation
        out = extractor(x)
        torch.testing.assert_close(out['logits'], model(x))
    fx_features = timm.create_model(name, features_only=True, feature_cls='fx')
    assert len(fx_features(x)) == len(fx_features.feature_info)


@pytest.mark.parametrize('name, fused_act', [('srm_resnet18', 'act2'), ('srm_resnet50', 'act3')])
def test_fx_node_names_of_the_fused_tail(name, fused_act):
    """The README's node names: the block output is ``layerN.M`` (``se.relu``), SRM's output ``se.mul_1``;
    the fused-away activation and timm's ``add`` have no node. They hold what hooks on the block and SRM see."""
    from timm.models import create_feature_extractor, get_graph_node_names
    from srm_zoo.benchmark.gpu_check import randomize_srm_
    model = randomize_srm_(timm.create_model(name), torch.Generator().manual_seed(0)).eval()
    nodes = set(get_graph_node_names(model)[1])
    assert {'layer1.0.se.mul_1', 'layer1.0.se.add', 'layer1.0.se.relu'} <= nodes
    assert not {f'layer1.0.{fused_act}', 'layer1.0.add'} & nodes
    extractor = create_feature_extractor(model, return_nodes={'layer1.0': 'block', 'layer1.0.se.mul_1': 'srm'})
    seen = {}
    model.layer1[0].register_forward_hook(lambda module, args, output: seen.update(block=output))
    model.layer1[0].se.register_forward_hook(lambda module, args, output: seen.update(srm=output))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model(x)
        features = extractor(x)
    for key in ('block', 'srm'):
        torch.testing.assert_close(features[key], seen[key], msg=key)


def test_fx_graph_traced_in_training_takes_one_sample_in_eval_mode():
    """An FX graph traced from a model in training mode (as timm builds it) reads the mode when it runs: in eval
    mode it takes a batch of one, in training it refuses one with SRM's message."""
    model = randomize_(timm.create_model('srm_resnet20_cifar'))
    graph = torch.fx.symbolic_trace(model)
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match='SRM: a batch of one sample'):
        graph(x)
    with torch.no_grad(), use_reference(True):
        torch.testing.assert_close(graph.eval()(x), model.eval()(x))


def test_fx_backward():
    from timm.models import create_feature_extractor
    model = randomize_(timm.create_model('srm_resnet20_cifar')).train()
    extractor = create_feature_extractor(model, return_nodes={'fc': 'logits'})
    extractor(torch.randn(2, 3, 32, 32))['logits'].sum().backward()
    assert all(p.grad is not None for p in extractor.parameters())


def test_torch_compile_matches_eager():
    model = randomize_(timm.create_model('srm_resnet20_cifar')).eval()
    compiled = torch.compile(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)


def test_drop_path_rate_reaches_blocks():
    model = timm.create_model('srm_resnet50', drop_path_rate=0.1)
    rates = [b.drop_path.drop_prob for b in model.modules() if getattr(b, 'drop_path', None) is not None
             and hasattr(b.drop_path, 'drop_prob')]
    assert rates and max(rates) == pytest.approx(0.1, abs=0.01)
    cifar = timm.create_model('srm_resnet20_cifar', drop_path_rate=0.2)
    rates = [b.drop_path.drop_prob for b in cifar.modules() if hasattr(getattr(b, 'drop_path', None), 'drop_prob')]
    assert max(rates) == pytest.approx(0.2)


def test_srm_sits_in_every_block():
    from srm_zoo.layers import SRM
    model = timm.create_model('srm_resnet50')
    blocks = [m for name, m in model.named_modules() if name.count('.') == 1 and name.startswith('layer')]
    assert len(blocks) == 16 and all(isinstance(b.se, SRM) for b in blocks)
    assert all(b.se.cfc.shape[0] == b.bn3.num_features for b in blocks)


def test_srm_pooling_kwarg():
    model = timm.create_model('srm_resnet18', srm_pooling='mean')
    assert model.layer1[0].se.cfc.shape == (64, 1)


@pytest.mark.parametrize('name', ['srm_resnet20_cifar', 'srm_resnet18'])
def test_reset_classifier_keeps_dtype_device_and_mode(name):
    model = timm.create_model(name).double().eval()
    model.reset_classifier(5)
    assert model.fc.weight.dtype == torch.float64 and not model.fc.training
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32, dtype=torch.float64)).dtype == torch.float64
    meta = timm.create_model(name).to('meta')
    meta.reset_classifier(3)
    assert meta.fc.weight.device.type == 'meta'
