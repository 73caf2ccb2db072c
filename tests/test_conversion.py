"""`srm-zoo convert official` and `srm-zoo graft`: outputs equal the source networks'."""
import os
import stat
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from conftest import randomize_
from srm_zoo.cli import main
from srm_zoo.conversion import state as conversion_state
from srm_zoo.conversion import write_safetensors
from srm_zoo.layers import SRM


class AuthorsSRM(nn.Module):
    """The SRM layer as the authors wrote it (module name ``rclb``): mean and sqrt(var + eps) style,
    channel-wise weights ``cfc`` (C, 2), BatchNorm2d, sigmoid gate."""

    def __init__(self, channels):
        super().__init__()
        self.cfc = nn.Parameter(torch.zeros(channels, 2))
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        n, c = x.shape[:2]
        flat = x.view(n, c, -1)
        style = torch.cat((flat.mean(dim=2, keepdim=True), (flat.var(dim=2, keepdim=True) + 1e-5).sqrt()), dim=2)
        z = (style * self.cfc[None]).sum(dim=2)[:, :, None, None]
        return x * torch.sigmoid(self.bn(z))


class AuthorsBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.rclb = AuthorsSRM(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.rclb(self.bn3(self.conv3(out)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class AuthorsResNet(nn.Module):
    def __init__(self, layers=(3, 4, 6, 3), num_classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        for index, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            self.add_module(f'layer{index + 1}', self._stage(planes, blocks, 1 if index == 0 else 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * 4, num_classes)

    def _stage(self, planes, blocks, stride):
        downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
                                   nn.BatchNorm2d(planes * 4))
        stage = [AuthorsBottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * 4
        stage += [AuthorsBottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _authors_checkpoint(path, num_classes=10):
    """An authors'-layout SRM-ResNet-50, random weights and BN statistics, saved as their train script does."""
    torch.manual_seed(0)
    net = randomize_(AuthorsResNet(num_classes=num_classes), seed=1)
    wrapped = nn.DataParallel(net)
    optimizer = torch.optim.SGD(wrapped.parameters(), lr=0.1, momentum=0.9)
    torch.save({'epoch': 90, 'state_dict': wrapped.state_dict(), 'acc': 77.1, 'best_acc': 77.2,
                'optimizer': optimizer.state_dict()}, path)
    return net


def test_convert_official_matches_authors_model_eval_and_train(tmp_path):
    checkpoint = tmp_path / 'model_best.pth.tar'
    authors = _authors_checkpoint(checkpoint)
    assert all(k.startswith('module.') for k in torch.load(checkpoint, weights_only=True)['state_dict'])
    out = tmp_path / 'srm_resnet50.safetensors'
    assert main(['convert', 'official', str(checkpoint), '--model', 'srm_resnet50', '--out', str(out)]) == 0

    zoo = timm.create_model('srm_resnet50', num_classes=10)
    zoo.load_state_dict(load_file(str(out)))
    assert any(k.endswith('se.cfc') for k in load_file(str(out)))
    # float64: random weights make activations huge, where float32 rounding would hide a wrong mapping
    authors, zoo = authors.double(), zoo.double()
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        expected, got = authors.eval()(images), zoo.eval()(images)
        assert expected.abs().max() > 1e-3
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
        expected, got = authors.train()(images), zoo.train()(images)
        torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-7)


def test_convert_refuses_a_checkpoint_that_does_not_fit(tmp_path, capsys):
    checkpoint = tmp_path / 'checkpoint.pth.tar'
    net = AuthorsResNet(layers=(3, 4, 6, 3))
    state = {f'module.{k}': v for k, v in net.state_dict().items() if not k.startswith('layer4.2.')}
    torch.save({'epoch': 1, 'state_dict': state}, checkpoint)
    out = tmp_path / 'out.safetensors'
    assert main(['convert', 'official', str(checkpoint), '--model', 'srm_resnet50', '--out', str(out)]) == 2
    message = capsys.readouterr().err
    assert 'missing' in message and 'layer4.2.conv1.weight' in message and 'Traceback' not in message
    assert not out.exists()
    assert main(['convert', 'official', str(checkpoint), '--model', 'srm_resnet51', '--out', str(out)]) == 2
    assert 'srm_resnet50' in capsys.readouterr().err


def _graft_and_compare(tmp_path, source, srm_name, image_size):
    source = randomize_(source, seed=3).eval()
    source_file = tmp_path / 'source.safetensors'
    save_file({f'module.{k}': v.contiguous() for k, v in source.state_dict().items()}, str(source_file))
    out = tmp_path / f'{srm_name}.safetensors'
    assert main(['graft', '--from', str(source_file), '--model', srm_name, '--out', str(out)]) == 0
    grafted = timm.create_model(srm_name, num_classes=7)
    grafted.load_state_dict(load_file(str(out)))
    # in float64: random deep networks amplify float32 rounding, and the SRM blocks round differently
    # (their last BatchNorm folds into the convolution in inference)
    source, grafted = source.double(), grafted.double().eval()
    images = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    gates = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: gates.append(mod.gate(inp[0])))
             for m in grafted.modules() if isinstance(m, SRM)]
    with torch.no_grad():
        expected, got = source(images), grafted(images)
    for hook in hooks:
        hook.remove()
    assert expected.abs().max() > 1e-2
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    assert len(gates) == sum(isinstance(m, SRM) for m in grafted.modules()) > 0
    assert all(torch.equal(g, torch.full_like(g, 0.5)) for g in gates)


def test_graft_bottleneck_resnet50_preserves_the_function(tmp_path):
    _graft_and_compare(tmp_path, timm.create_model('resnet50', num_classes=7), 'srm_resnet50', 64)


def test_graft_basic_block_cifar_resnet_preserves_the_function(tmp_path):
    plain = timm.create_model('srm_resnet20_cifar', num_classes=7, attn_layer=nn.Identity)
    assert not any(isinstance(m, SRM) for m in plain.modules())
    _graft_and_compare(tmp_path, plain, 'srm_resnet20_cifar', 16)


def test_graft_takes_a_source_without_num_batches_tracked(tmp_path):
    """Checkpoints saved before BatchNorm counted its batches lack ``num_batches_tracked``; the check
    accepts them, so the graft must too."""
    source = randomize_(timm.create_model('resnet18', num_classes=7), seed=3).eval()
    source_file = tmp_path / 'old_resnet18.safetensors'
    save_file({k: v.contiguous() for k, v in source.state_dict().items() if not k.endswith('num_batches_tracked')},
              str(source_file))
    out = tmp_path / 'srm_resnet18.safetensors'
    assert main(['graft', '--from', str(source_file), '--model', 'srm_resnet18', '--out', str(out)]) == 0
    grafted = timm.create_model('srm_resnet18', num_classes=7)
    grafted.load_state_dict(load_file(str(out)))
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(grafted.eval()(images), source(images), rtol=1e-5, atol=1e-5)


def test_graft_refuses_a_different_shape(tmp_path, capsys):
    source_file = tmp_path / 'resnet34.safetensors'
    save_file({k: v.contiguous() for k, v in timm.create_model('resnet34').state_dict().items()}, str(source_file))
    assert main(['graft', '--from', str(source_file), '--model', 'srm_resnet18', '--out',
                 str(tmp_path / 'x.safetensors')]) == 2
    message = capsys.readouterr().err
    assert 'not in the model' in message and 'layer1.2.' in message
    assert main(['graft', '--from', 'no_such_net_or_file', '--model', 'srm_resnet18', '--out',
                 str(tmp_path / 'x.safetensors')]) == 2
    assert 'neither a checkpoint file nor a timm model' in capsys.readouterr().err
    out = str(tmp_path / 'x.safetensors')
    assert main(['graft', '--from', str(source_file), '--model', 'resnet18', '--out', out]) == 2
    assert "'resnet18' is a plain timm model: pass it as the source with --from resnet18" in capsys.readouterr().err


@pytest.mark.parametrize('command', ['convert', 'graft'])
@pytest.mark.parametrize('out, message', [('folder', "--out 'folder' is a folder"),
                                          ('afile/x.safetensors', "'afile' is a file, not a folder")])
def test_output_paths_that_cannot_be_written_are_refused_first(tmp_path, capsys, monkeypatch, command, out, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'folder').mkdir()
    (tmp_path / 'afile').write_text('')
    source = tmp_path / 'source.pth'  # never read: the output path is checked first
    argv = (['convert', 'official', str(source), '--model', 'srm_resnet50', '--out', out] if command == 'convert'
            else ['graft', '--from', str(source), '--model', 'srm_resnet18', '--out', out])
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['afile', 'folder']
    assert not any((tmp_path / 'folder').iterdir())


@pytest.mark.parametrize('command', ['convert', 'graft'])
def test_an_output_that_is_the_source_is_refused(tmp_path, capsys, command):
    """--out naming the checkpoint read (or a link to it) would replace it with the result, and one not ending in
    .safetensors would be read back as another format: refused, source kept."""
    source = tmp_path / 'source.safetensors'
    source.write_bytes(b'weights')
    (tmp_path / 'link.safetensors').symlink_to(source)
    argv = (['convert', 'official', str(source)] if command == 'convert' else ['graft', '--from', str(source)])
    for out in (source, tmp_path / 'link.safetensors'):
        assert main([*argv, '--model', 'srm_resnet18', '--out', str(out)]) == 2
        assert 'which the command reads; choose another file' in capsys.readouterr().err
    assert source.read_bytes() == b'weights'
    assert main([*argv, '--model', 'srm_resnet18', '--out', str(tmp_path / 'x.pth')]) == 2
    assert "x.pth' does not end in .safetensors, the format written" in capsys.readouterr().err


@pytest.mark.parametrize('command', ['convert', 'graft'])
def test_an_unknown_tag_is_refused_before_any_file_is_read(tmp_path, capsys, command):
    source, out = tmp_path / 'source.pth', tmp_path / 'x.safetensors'  # the source is never read
    argv = (['convert', 'official', str(source)] if command == 'convert' else ['graft', '--from', str(source)])
    assert main([*argv, '--model', 'srm_resnet18.bogus', '--out', str(out)]) == 2  # a traceback before
    err = capsys.readouterr().err
    assert "srm_resnet18 has no tag 'bogus'; its tags are: official_in1k" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_written_weights_have_the_default_permissions_and_failures_leave_no_file(tmp_path, monkeypatch):
    umask = os.umask(0o022)
    try:
        write_safetensors({'w': torch.zeros(2)}, str(tmp_path / 'w.safetensors'))
        assert stat.S_IMODE((tmp_path / 'w.safetensors').stat().st_mode) == 0o644  # safetensors alone: 0o600

        def fail_midway(tensors, filename, metadata=None):
            Path(filename).write_bytes(b'partial')
            raise OSError('disk full')
        monkeypatch.setattr(conversion_state, 'save_file', fail_midway)
        with pytest.raises(OSError, match='disk full'):
            write_safetensors({'w': torch.zeros(2)}, str(tmp_path / 'x.safetensors'))
        assert sorted(p.name for p in tmp_path.iterdir()) == ['w.safetensors']
    finally:
        os.umask(umask)
