"""`srm-zoo train`: exact resume, torchrun DDP with gloo, compiled training, recipes and weight decay."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import srm_zoo.training.loop as loop
from srm_zoo.benchmark.train_check import compiled_training_checks, write_random_image_folder
from srm_zoo.cli import main
from srm_zoo.training import RECIPES, get_recipe
from srm_zoo.training.optim import create_optimizer, create_scheduler, srm_parameter_names
from srm_zoo.training.state import CHECKPOINT_NAME, load_checkpoint

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def tiny_folder(tmp_path_factory):
    """Two classes of random 16x16 PNGs: 8 training and 3 evaluation images each."""
    root = tmp_path_factory.mktemp('tiny')
    write_random_image_folder(root)
    return root


def _train_args(data, output, *extra):
    return ['train', '--model', 'srm_resnet20_cifar', '--data', str(data), '--output', str(output),
            '--img-size', '16', '--batch-size', '4', '--workers', '0', '--device', 'cpu', *extra]


def test_resume_refuses_a_checkpoint_holding_python_objects(tiny_folder, tmp_path, capsys):
    """--resume reads with weights_only=True, as every command does, and says so in one line."""
    (tmp_path / 'run').mkdir()
    torch.save({'epoch': 1, 'model': {}, 'args': argparse.Namespace(lr=0.1)}, tmp_path / 'run' / CHECKPOINT_NAME)
    assert main(_train_args(tiny_folder, tmp_path / 'run', '--recipe', 'digits', '--resume')) == 2
    err = capsys.readouterr().err
    assert f"error: Training checkpoint '{tmp_path / 'run' / CHECKPOINT_NAME}' holds Python objects other than " \
           'tensors (such as argparse.Namespace); srm-zoo loads only weights-only checkpoints' in err
    assert '\x1b' not in err and err.count('\n') == 1


def test_resume_after_interruption_equals_uninterrupted_run(tiny_folder, tmp_path, monkeypatch):
    # The modern recipe exercises every stateful piece: mixup/cutmix and RandAugment (RNG), LAMB,
    # the warmup + cosine schedule, the EMA, and gradient accumulation.
    args = ('--recipe', 'modern', '--epochs', '2', '--grad-accum', '2', '--lr', '0.01')
    assert main(_train_args(tiny_folder, tmp_path / 'straight', *args)) == 0

    real_progress = loop.progress

    def interrupted_in_epoch_2(iterable, total, desc, enabled):
        if desc.startswith('epoch 2/'):
            def one_batch_then_ctrl_c():
                yield next(iter(iterable))
                raise KeyboardInterrupt
            return one_batch_then_ctrl_c()
        return real_progress(iterable, total, desc, enabled)

    monkeypatch.setattr(loop, 'progress', interrupted_in_epoch_2)
    assert main(_train_args(tiny_folder, tmp_path / 'resumed', *args)) == 130
    assert load_checkpoint(tmp_path / 'resumed' / CHECKPOINT_NAME)['epoch'] == 1
    monkeypatch.setattr(loop, 'progress', real_progress)
    assert main(_train_args(tiny_folder, tmp_path / 'resumed', *args, '--resume')) == 0

    straight = load_checkpoint(tmp_path / 'straight' / CHECKPOINT_NAME)
    resumed = load_checkpoint(tmp_path / 'resumed' / CHECKPOINT_NAME)
    assert straight['epoch'] == resumed['epoch'] == 2
    for part in ('model', 'ema'):
        assert straight[part].keys() == resumed[part].keys()
        for key, value in straight[part].items():
            assert torch.equal(value, resumed[part][key]), f'{part} {key}'
    first_step = straight['model']['layer1.0.se.cfc']
    assert first_step.abs().sum() > 0  # the SRM weights did train
    exported = load_file(str(tmp_path / 'resumed' / 'model' / 'model.safetensors'))
    assert all(torch.equal(exported[k], v) for k, v in straight['ema'].items() if k in exported)
    assert straight['recipe'] == get_recipe('modern').to_dict()
    rows = [json.loads(line) for line in (tmp_path / 'resumed' / 'log.jsonl').read_text().splitlines()]
    assert [r['epoch'] for r in rows] == [1, 2]
    timing = 'train_samples_per_sec'
    assert [{k: v for k, v in r.items() if k != timing} for r in rows] == \
        [{k: v for k, v in r.items() if k != timing} for r in straight['history']]
    header = (tmp_path / 'resumed' / 'log.csv').read_text().splitlines()[0].split(',')
    for column in ('train_loss', 'eval_top1', 'eval_top5', 'lr', 'train_samples_per_sec', 'ema_eval_top1'):
        assert column in header


def test_output_is_never_overwritten_and_resume_checks_settings(tiny_folder, tmp_path, capsys):
    args = ('--recipe', 'digits', '--epochs', '1')
    assert main(_train_args(tiny_folder, tmp_path, *args)) == 0
    assert main(_train_args(tiny_folder, tmp_path, *args)) == 2
    assert '--resume' in capsys.readouterr().err
    assert main(_train_args(tiny_folder, tmp_path, '--recipe', 'official', '--epochs', '1', '--resume')) == 2
    assert "recipe='official'" in capsys.readouterr().err
    assert main(_train_args(tiny_folder / 'nowhere', tmp_path / 'other', *args)) == 2
    assert 'does not exist' in capsys.readouterr().err
    for model, message in (('srm_resnet51', "Unknown model 'srm_resnet51'"),
                           ('srm_resnet20_cifar.nope', "has no tag 'nope'")):
        assert main(_train_args(tiny_folder, tmp_path / 'other', *args, '--model', model)) == 2
        assert message in capsys.readouterr().err
    # a split without its folder: timm would read every image of the root, training images included
    assert main(_train_args(tiny_folder, tmp_path / 'other', *args, '--val-split', 'test')) == 2
    assert "No folder for split 'test'" in capsys.readouterr().err
    assert main(_train_args(tiny_folder, tmp_path / 'other', *args, '--compile-mode', 'reduce-overhead')) == 2
    assert '--compile-mode sets the mode of torch.compile: add --compile.' in capsys.readouterr().err
    assert main(_train_args(tiny_folder, tmp_path / 'other', *args, '--sync-bn')) == 2  # --device cpu
    assert '--sync-bn synchronises BatchNorm across GPU processes and needs CUDA' in capsys.readouterr().err
    assert not (tmp_path / 'other').exists()
    (tmp_path / 'junk').mkdir()
    (tmp_path / 'junk' / CHECKPOINT_NAME).write_text('junk\n')
    assert main(_train_args(tiny_folder, tmp_path / 'junk', *args, '--resume')) == 2
    assert f"{tmp_path / 'junk' / CHECKPOINT_NAME}': it is not a readable PyTorch checkpoint" in capsys.readouterr().err
    (tmp_path / 'afile').write_text('')
    assert main(_train_args(tiny_folder / 'nowhere', tmp_path / 'afile', *args)) == 2  # checked before the data
    assert "--output '" in capsys.readouterr().err


def test_torchrun_two_cpu_processes_leave_one_complete_checkpoint(tiny_folder, tmp_path):
    output = tmp_path / 'ddp'
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
               '-m', 'srm_zoo', *_train_args(tiny_folder, output, '--recipe', 'official', '--epochs', '1',
                                              '--batch-size', '2', '--lr', '0.01')]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in output.iterdir()) == [CHECKPOINT_NAME, 'log.csv', 'log.jsonl', 'model']
    checkpoint = load_checkpoint(output / CHECKPOINT_NAME)
    assert checkpoint['epoch'] == 1 and checkpoint['config']['recipe'] == 'official'
    assert len(checkpoint['rng']) == 2  # both processes' generator states
    assert not torch.equal(checkpoint['rng'][0]['torch'], checkpoint['rng'][1]['torch'])
    assert set(checkpoint['optimizer']) == {'state', 'param_groups'} and checkpoint['optimizer']['state']
    model = timm.create_model('srm_resnet20_cifar', num_classes=2)
    model.load_state_dict(checkpoint['model'])


def test_training_compiled_for_cuda_graphs_matches_eager_and_keeps_its_gradients(monkeypatch):
    """gpu_check's compiled-training check, here on the CPU (where Inductor skips CUDA graphs): the
    compiled run with gradient accumulation updates the weights as the eager run does. In a CUDA-graph
    mode the gradients exist before the first backward pass and every optimiser step reads those same
    tensors (zeroed in place), never the backward graph's outputs, which the next replay overwrites."""
    runs = []  # per run: its parameters, and their gradients before the first batch and at each step
    create_optimizer, progress = loop.create_optimizer, loop.progress

    def record_grads(run):
        run['grads'].append([p.grad for p in run['params']])

    def recording_optimizer(model, recipe, lr):
        optimizer, run = create_optimizer(model, recipe, lr), dict(params=list(model.parameters()), grads=[])
        runs.append(run)
        step = optimizer.step

        def recorded_step(*args, **kwargs):
            record_grads(run)
            return step(*args, **kwargs)
        optimizer.step = recorded_step
        return optimizer

    def recording_progress(iterable, total, desc, enabled):
        record_grads(runs[-1])
        return progress(iterable, total, desc, enabled)

    monkeypatch.setattr(loop, 'create_optimizer', recording_optimizer)
    monkeypatch.setattr(loop, 'progress', recording_progress)
    checks = compiled_training_checks(torch.device('cpu'))
    assert [c['check'].rsplit(': ', 1)[1] for c in checks] == ['parameters against eager',
                                                               'BatchNorm running statistics against eager']
    for check in checks:
        assert check['passed'] and check['error'] < 1e-4 and check['cudagraph_skips'] >= 1, check
    eager, compiled = (run['grads'] for run in runs)
    assert len(eager) == len(compiled) == 3  # before training, then 2 steps of 2 accumulated batches of 4
    assert all(g is None for g in eager[0]) and all(g is not None for g in compiled[0])
    assert all(before is first is second for before, first, second in zip(*compiled))
    assert not any(first is second for first, second in zip(*eager[1:]))  # set to None between eager steps


def test_recipes_weight_decay_rules():
    model = timm.create_model('srm_resnet20_cifar')
    srm = srm_parameter_names(model)
    assert {n for n in srm if n.endswith('.cfc')} == set(model.no_weight_decay())
    assert any(n.endswith('se.bn.weight') for n in srm)
    official = create_optimizer(model, RECIPES['official'], lr=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decays = {names[id(p)]: g['weight_decay'] for g in official.param_groups for p in g['params']}
    assert all(decays[n] == 0 for n in srm)
    assert decays['bn1.weight'] == decays['layer1.0.bn1.bias'] == decays['conv1.weight'] == 1e-4
    modern = create_optimizer(model, RECIPES['modern'], lr=0.1)
    decays = {names[id(p)]: g['weight_decay'] for g in modern.param_groups for p in g['params']}
    assert decays['layer1.0.se.cfc'] == decays['bn1.weight'] == 0 and decays['conv1.weight'] == 0.02
    assert RECIPES['official'].milestones_for(90) == (30, 60) and RECIPES['official'].milestones_for(9) == (3, 6)


def test_list_recipes(capsys):
    assert main(['train', '--list-recipes', '--format', 'json']) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r['recipe'] for r in listed] == list(RECIPES)
    official = listed[0]
    assert (official['epochs'], official['batch_size'], official['lr'], official['opt']) == (90, 256, 0.1, 'momentum')


def _epoch_lrs(recipe, epochs, lr=0.1):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = create_scheduler(optimizer, recipe, epochs)
    lrs = []
    for epoch in range(epochs):  # as the training loop steps it: before each 0-based epoch
        scheduler.step(epoch)
        lrs.append(optimizer.param_groups[0]['lr'])
    return lrs


def test_official_schedule_lowers_the_rate_at_epochs_31_and_61_and_short_runs_start_at_the_base_rate():
    official = RECIPES['official']
    lrs = _epoch_lrs(official, 90)
    expected = [0.1] * 30 + [0.1 * 0.1] * 30 + [0.1 * 0.1 * 0.1] * 30  # epochs 1-30, 31-60, 61-90
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert _epoch_lrs(official, 1) == pytest.approx([0.1])
    assert _epoch_lrs(official, 2) == pytest.approx([0.1, 0.001])
    assert _epoch_lrs(official, 3) == pytest.approx([0.1, 0.01, 0.001])


@pytest.mark.parametrize('flag, value, message', [
    ('--epochs', '0', "'0' is not a positive integer"), ('--epochs', '-1', "'-1' is not a positive integer"),
    ('--batch-size', '0', "'0' is not a positive integer"), ('--batch-size', '-4', "'-4' is not a positive integer"),
    ('--img-size', '0', "'0' is not a positive integer"), ('--grad-accum', '0', "'0' is not a positive integer"),
    ('--workers', '-1', "'-1' is not a non-negative integer"), ('--lr', '-1', "'-1' is not a positive number"),
    ('--lr', 'nan', "'nan' is not a positive number"), ('--epochs', 'two', "'two' is not a positive integer"),
])
def test_invalid_numbers_are_argparse_errors(tiny_folder, tmp_path, capsys, flag, value, message):
    with pytest.raises(SystemExit) as exit_:
        main(_train_args(tiny_folder, tmp_path / 'run', '--recipe', 'digits', flag, value))
    assert exit_.value.code == 2
    assert f'argument {flag}: {message}' in capsys.readouterr().err
    assert not (tmp_path / 'run').exists()


def test_attention_none_run_exports_a_model_timm_loads(tiny_folder, tmp_path):
    assert main(_train_args(tiny_folder, tmp_path, '--recipe', 'digits', '--epochs', '1', '--attention', 'none')) == 0
    config = json.loads((tmp_path / 'model' / 'config.json').read_text())
    assert config['model_args']['attn_layer'] == ''  # timm's 'no attention'
    model = timm.create_model(f'local-dir:{tmp_path / "model"}', pretrained=True)
    assert all(block.se is None for stage in (model.layer1, model.layer2, model.layer3) for block in stage)
    saved = load_file(str(tmp_path / 'model' / 'model.safetensors'))
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize('name', ['srm_resnet20_cifar', 'srm_resnet18'])
def test_attention_kwargs_survive_json(name):
    """The kwargs go into config.json's model_args: their JSON round trip builds the same counterpart."""
    for attention, layer in (('none', type(None)), ('se', timm.layers.SEModule)):
        kwargs = json.loads(json.dumps(loop.attention_kwargs(name, attention)))
        model = timm.create_model(name, num_classes=2, **kwargs)
        blocks = [m for m in model.modules() if hasattr(m, 'se')]
        assert blocks and all(isinstance(b.se, layer) for b in blocks), attention


def test_the_run_model_config_describes_the_trained_model(tiny_folder, tmp_path):
    assert main(_train_args(tiny_folder, tmp_path, '--recipe', 'digits', '--epochs', '1')) == 0  # --img-size 16
    config = json.loads((tmp_path / 'model' / 'config.json').read_text())
    cfg = config['pretrained_cfg']
    assert cfg['input_size'] == [3, 16, 16]  # the model's pretrained cfg says 32
    data_config = load_checkpoint(tmp_path / CHECKPOINT_NAME)['data_config']
    assert (cfg['mean'], cfg['std']) == (list(data_config['mean']), list(data_config['std']))
    assert not {'tag', 'description', 'notes'} & cfg.keys()  # untagged: no sklearn_digits description
    assert config['label_names'] == ['a', 'b']
    modes = {name: (tmp_path / 'model' / name).stat().st_mode for name in ('model.safetensors', 'config.json')}
    assert modes['model.safetensors'] == modes['config.json']  # not safetensors' own 0o600
    model = timm.create_model(f'local-dir:{tmp_path / "model"}', pretrained=True)
    assert tuple(timm.data.resolve_data_config(model=model)['input_size']) == (3, 16, 16)


def test_resume_compares_settings_by_meaning(tiny_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tiny_folder.parent)
    initial = tmp_path / 'grafted.safetensors'
    save_file(timm.create_model('srm_resnet20_cifar', num_classes=2).state_dict(), str(initial))
    args = ['train', '--model', 'srm_resnet20_cifar', '--recipe', 'digits', '--epochs', '1', '--img-size', '16',
            '--batch-size', '4', '--workers', '0', '--output', str(tmp_path / 'run')]
    assert main(args + ['--data', tiny_folder.name, '--device', 'cpu', '--initial-checkpoint', str(initial)]) == 0
    assert load_checkpoint(tmp_path / 'run' / CHECKPOINT_NAME)['config']['data'] == str(tiny_folder)
    initial.rename(tmp_path / 'moved.safetensors')  # its weights are in the training checkpoint
    device = [] if not torch.cuda.is_available() else ['--device', 'cpu']  # None picks the CPU here
    assert main(args + ['--data', f'{tiny_folder}/', '--initial-checkpoint', str(initial), '--resume', *device]) == 0
    assert 'warning' not in capsys.readouterr().err
    assert main(args + ['--data', str(tiny_folder), '--device', 'cpu', '--resume', '--workers', '1']) == 0
    assert "--workers 1 differs from the run's 0; the remaining epochs' data order differs" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)  # the same relative path names another folder from here
    (tmp_path / tiny_folder.name).mkdir()
    assert main(args + ['--data', tiny_folder.name, '--device', 'cpu', '--resume']) == 2
    assert f"data='{tmp_path / tiny_folder.name}'" in capsys.readouterr().err
