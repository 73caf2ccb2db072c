"""`srm-zoo train`: exact resume, torchrun DDP with gloo, compiled training, recipes and weight decay."""
import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import srm_zoo.training.loop as loop
from srm_zoo.benchmark.train_check import compiled_training_checks, write_random_image_folder
from srm_zoo.catalogue import attention_kwargs
from srm_zoo.checkpoint import file_sha256
from srm_zoo.cli import main
from srm_zoo.distributed import DistContext
from srm_zoo.training import RECIPES, get_recipe
from srm_zoo.training.data import load_split, split_images, train_loader
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


def _eval_checkpoint(data, checkpoint, results, *extra):
    """``srm-zoo eval`` of a training checkpoint of the 2-class tiny model on the validation images (at the run's
    --img-size 16, which the checkpoint records: the model's own is 32)."""
    assert main(['eval', '--model', 'srm_resnet20_cifar', '--checkpoint', str(checkpoint), '--num-classes', '2',
                 '--data', str(data), '--split', 'validation', '--workers', '0',
                 '--device', 'cpu', '--results-file', str(results), *extra]) == 0
    result = json.loads(Path(results).read_text())
    assert result['img_size'] == 16
    return result


def _assert_logged_metrics_are_the_checkpoints(row, prefix, result):
    """The training log's evaluation equals ``srm-zoo eval``'s result (rounded as it rounds; the loss sums
    per-image losses in other batches)."""
    assert result['top1'] == round(row[f'{prefix}_top1'], 4) and result['top5'] == round(row[f'{prefix}_top5'], 4)
    assert result['loss'] == pytest.approx(row[f'{prefix}_loss'], abs=1e-5), prefix


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


def test_output_is_never_overwritten_and_resume_checks_settings_and_classes(tiny_folder, tmp_path, capsys):
    args = ('--recipe', 'digits', '--epochs', '1')
    data, run = tmp_path / 'data', tmp_path / 'run'
    shutil.copytree(tiny_folder, data)
    assert main(_train_args(data, run, *args)) == 0
    assert main(_train_args(data, run, *args)) == 2
    assert '--resume' in capsys.readouterr().err
    finished = tmp_path / 'finished'  # a run whose checkpoint was deleted: its log and model stay
    shutil.copytree(run, finished)
    (finished / CHECKPOINT_NAME).unlink()
    logged = (finished / 'log.csv').read_text()
    for extra in ((), ('--resume',)):
        assert main(_train_args(data, finished, *args, *extra)) == 2
        assert 'holds log.jsonl, log.csv, model of an earlier run but no checkpoint' in capsys.readouterr().err
    assert (finished / 'log.csv').read_text() == logged
    assert main(_train_args(data, run, '--recipe', 'official', '--epochs', '1', '--resume')) == 2
    assert "recipe='official'" in capsys.readouterr().err
    for split in ('train', 'validation'):  # another class: a raw size-mismatch traceback before
        shutil.copytree(data / split / 'b', data / split / 'c')
    assert main(_train_args(data, run, *args, '--resume')) == 2
    assert ("--resume needs the classes of the checkpointed run; the class folders of split 'train' differ from "
            "its 2: new in the data: 'c'.") in capsys.readouterr().err
    for split in ('train', 'validation'):  # as many classes, labels shifted: resumed silently before
        shutil.rmtree(data / split / 'c')
        (data / split / 'a').rename(data / split / 'z')
    assert main(_train_args(data, run, *args, '--resume')) == 2
    assert "new in the data: 'z'; missing from the data: 'a'." in capsys.readouterr().err
    assert load_checkpoint(run / CHECKPOINT_NAME)['class_names'] == ['a', 'b']
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
    if not torch.cuda.is_available():  # trained on the CPU before, without a word
        assert main(_train_args(tiny_folder, tmp_path / 'other', *args, '--device', 'cuda')) == 2
        assert '--device cuda: CUDA is not available' in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # trained, ignoring it, before
        main(_train_args(tiny_folder, tmp_path / 'other', *args, '--format', 'json'))
    assert exit_info.value.code == 2
    assert '--format says how --list-recipes prints the recipes' in capsys.readouterr().err
    assert not (tmp_path / 'other').exists()
    (tmp_path / 'junk').mkdir()
    (tmp_path / 'junk' / CHECKPOINT_NAME).write_text('junk\n')
    assert main(_train_args(tiny_folder, tmp_path / 'junk', *args, '--resume')) == 2
    assert f"{tmp_path / 'junk' / CHECKPOINT_NAME}': it is not a readable PyTorch checkpoint" in capsys.readouterr().err
    (tmp_path / 'afile').write_text('')
    assert main(_train_args(tiny_folder / 'nowhere', tmp_path / 'afile', *args)) == 2  # checked before the data
    assert "--output '" in capsys.readouterr().err


def test_data_without_class_folders_seeds_out_of_range_and_unwritable_outputs_are_refused(tiny_folder, tmp_path,
                                                                                          capsys):
    """Images directly in a split folder (timm labels them class '') or a split of one class would train a
    model whose loss is 0 and top-1 100%; a seed numpy cannot take, and an output folder the system refuses,
    gave tracebacks: each is one line and a non-zero status, and nothing is written."""
    flat, single = tmp_path / 'flat', tmp_path / 'single'
    for split in ('train', 'validation'):
        (flat / split).mkdir(parents=True)
        for image in (tiny_folder / split).glob('*/*.png'):
            shutil.copy(image, flat / split / f'{image.parent.name}{image.name}')
        shutil.copytree(tiny_folder / split / 'a', single / split / 'a')
    assert main(_train_args(flat, tmp_path / 'out', '--recipe', 'digits')) == 2
    assert f"Split 'train' has images directly in {flat / 'train'}: training needs one folder per class" in \
        capsys.readouterr().err
    assert main(_train_args(single, tmp_path / 'out', '--recipe', 'digits')) == 2
    assert "has one class (a): training needs two or more." in capsys.readouterr().err
    for value in ('-1', str(2 ** 32)):
        with pytest.raises(SystemExit) as exit_info:
            main(_train_args(tiny_folder, tmp_path / 'out', '--seed', value))
        assert exit_info.value.code == 2 and "is not a seed from 0 to 2**32 - 1" in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()
    unwritable = Path('/proc/srm-zoo-test-output')  # no process may create a folder there
    status = main(_train_args(tiny_folder, unwritable, '--recipe', 'digits', '--epochs', '1'))
    err = capsys.readouterr().err
    assert status in (1, 2) and str(unwritable) in err and len(err.strip().splitlines()) == 1, err
    assert not unwritable.exists()


def test_torchrun_two_cpu_processes_leave_one_complete_checkpoint(tiny_folder, tmp_path):
    output = tmp_path / 'ddp'
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
               '-m', 'srm_zoo', *_train_args(tiny_folder, output, '--recipe', 'modern', '--epochs', '1',
                                              '--batch-size', '2', '--lr', '0.01')]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in output.iterdir()) == [CHECKPOINT_NAME, 'log.csv', 'log.jsonl', 'model']
    checkpoint = load_checkpoint(output / CHECKPOINT_NAME)
    assert checkpoint['epoch'] == 1 and checkpoint['config']['recipe'] == 'modern'
    # both processes evaluated the saved weights: the EMA built from rank 0's weights, and BatchNorm
    # statistics (the model's and the EMA's) averaged over the processes before evaluating
    row = checkpoint['history'][0]
    _assert_logged_metrics_are_the_checkpoints(
        row, 'eval', _eval_checkpoint(tiny_folder, output / CHECKPOINT_NAME, tmp_path / 'eval.json'))
    _assert_logged_metrics_are_the_checkpoints(
        row, 'ema_eval', _eval_checkpoint(tiny_folder, output / CHECKPOINT_NAME, tmp_path / 'ema.json', '--use-ema'))
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


def test_official_recipe_starts_every_batchnorm_at_weight_one():
    """The authors' code fills every BatchNorm weight with 1; timm's default zero-initialises each block's last."""
    model = timm.create_model('srm_resnet20_cifar', zero_init_last=RECIPES['official'].zero_init_last)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 1 + 9 * 3 and all(bool((m.weight == 1).all()) for m in norms)


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


def test_attention_none_run_exports_a_model_timm_loads_and_evaluates_as_it_ran(tiny_folder, tmp_path, capsys):
    """A run without attention exports a model timm builds as such; ``srm-zoo eval`` of its checkpoint builds the
    model as the run did (no attention, one output per class folder, neither given) and scores folders by the
    run's class names: a folder holding class 'b' alone is scored as 'b', not as the first of its classes."""
    run = tmp_path / 'run'
    assert main(_train_args(tiny_folder, run, '--recipe', 'digits', '--epochs', '1', '--attention', 'none')) == 0
    config = json.loads((run / 'model' / 'config.json').read_text())
    assert config['model_args']['attn_layer'] == ''  # timm's 'no attention'
    model = timm.create_model(f'local-dir:{run / "model"}', pretrained=True).eval()
    assert all(block.se is None for stage in (model.layer1, model.layer2, model.layer3) for block in stage)
    saved = load_file(str(run / 'model' / 'model.safetensors'))
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())

    eval_args = ['eval', '--model', 'srm_resnet20_cifar', '--checkpoint', str(run / CHECKPOINT_NAME), '--workers', '0',
                 '--device', 'cpu']
    assert main([*eval_args, '--data', str(tiny_folder), '--split', 'validation',
                 '--results-file', str(tmp_path / 'eval.json')]) == 0
    result = json.loads((tmp_path / 'eval.json').read_text())
    _assert_logged_metrics_are_the_checkpoints(load_checkpoint(run / CHECKPOINT_NAME)['history'][0], 'eval', result)
    assert result['dataset'] == 'folder'  # the run's own classes, not the default tag's digits
    assert result['attention'] == 'none'  # a counterpart cannot verify the zoo's figures for the SRM network
    assert main([*eval_args, '--data', str(tiny_folder), '--split', 'validation', '--verify']) == 2
    assert 'these weights are of a counterpart with block attention none' in capsys.readouterr().err
    final = ['eval', '--model', f'local-dir:{run / "model"}', '--workers', '0', '--device', 'cpu', '--data',
             str(tiny_folder), '--split', 'validation']
    # the run's final model, as timm builds it
    assert main([*final, '--results-file', str(tmp_path / 'final.json')]) == 0
    from_folder = json.loads((tmp_path / 'final.json').read_text())
    same = ('model', 'attention', 'dataset', 'num_classes', 'input_size', 'mean', 'std', 'top1', 'top5', 'loss')
    assert {k: from_folder[k] for k in same} == {k: result[k] for k in same}
    assert from_folder['checkpoint_sha256'] == file_sha256(run / 'model' / 'model.safetensors')
    assert main([*final, '--verify']) == 2
    assert 'these weights are of a counterpart with block attention none' in capsys.readouterr().err
    only_b = tmp_path / 'only_b' / 'validation' / 'b'
    shutil.copytree(tiny_folder / 'validation' / 'b', only_b)
    assert main([*eval_args, '--data', str(only_b.parent.parent), '--results-file', str(tmp_path / 'b.json')]) == 0
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    with torch.no_grad():
        predicted = model(torch.stack([transform(Image.open(path).convert('RGB')) for path in only_b.glob('*.png')]))
    expected = 100 * (predicted.argmax(1) == 1).double().mean().item()
    assert json.loads((tmp_path / 'b.json').read_text())['top1'] == round(expected, 4)


@pytest.mark.parametrize('name', ['srm_resnet20_cifar', 'srm_resnet18'])
def test_attention_kwargs_survive_json(name):
    """The kwargs go into config.json's model_args: their JSON round trip builds the same counterpart."""
    for attention, layer in (('none', type(None)), ('se', timm.layers.SEModule)):
        kwargs = json.loads(json.dumps(attention_kwargs(name, attention)))
        model = timm.create_model(name, num_classes=2, **kwargs)
        blocks = [m for m in model.modules() if hasattr(m, 'se')]
        assert blocks and all(isinstance(b.se, layer) for b in blocks), attention


def test_the_run_model_config_describes_the_trained_model(tiny_folder, tmp_path):
    """The exported model's config holds the run's preprocessing and classes; a tagged name gave only its tag's
    preprocessing, not its description of other weights."""
    assert main(_train_args(tiny_folder, tmp_path, '--recipe', 'digits', '--epochs', '1',  # --img-size 16
                            '--model', 'srm_resnet20_cifar.sklearn_digits')) == 0
    config = json.loads((tmp_path / 'model' / 'config.json').read_text())
    cfg = config['pretrained_cfg']
    assert cfg['input_size'] == [3, 16, 16]  # the model's pretrained cfg says 32
    data_config = load_checkpoint(tmp_path / CHECKPOINT_NAME)['data_config']
    assert (cfg['mean'], cfg['std']) == (list(data_config['mean']), list(data_config['std']))
    assert not {'tag', 'description', 'notes'} & cfg.keys()  # the run's weights: no sklearn_digits description
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


def test_steps_of_one_image_are_refused_and_the_last_incomplete_batch_is_dropped(tiny_folder, tmp_path, capsys):
    """BatchNorm (SRM's included) cannot train on one image: refused before training, not a ValueError."""
    assert main(_train_args(tiny_folder, tmp_path / 'run', '--recipe', 'digits', '--batch-size', '1')) == 2
    assert ('Each process needs at least 2 images per step (BatchNorm, SRM\'s included, normalises over the batch '
            'in training), not 1. Use --batch-size 2 or more.') in capsys.readouterr().err
    args = _train_args(tiny_folder, tmp_path / 'run', '--recipe', 'digits', '--epochs', '1', '--grad-accum', '64')
    at = args.index('--batch-size')
    del args[at:at + 2]
    assert main(args) == 2  # the recipe's batch of 64 over 64 accumulated batches
    assert ("The recipe's global batch of 64 over 1 process(es) x --grad-accum 64 leaves 1; lower --grad-accum or "
            'give --batch-size 2 or more.') in capsys.readouterr().err
    assert not (tmp_path / 'run').exists()
    images = split_images(load_split(str(tiny_folder), 'train', is_training=True), 'train')
    data_config = dict(input_size=(3, 16, 16), mean=(0.5,) * 3, std=(0.5,) * 3)
    loader, _ = train_loader(images, get_recipe('digits'), data_config, 3, 0, 0, DistContext(0, 1, torch.device('cpu')))
    assert [len(targets) for _, targets, _ in loader] == [3] * 5  # 16 images: the 16th is never a batch alone


def test_grad_accum_averages_the_last_incomplete_group(tiny_folder, tmp_path):
    """16 images in batches of 4 leave --grad-accum 8 one group of 4 batches: as in timm's train.py, its losses
    are averaged over those 4, so that the step is --grad-accum 4's (not 4/8 of it)."""
    states = []
    for accum in ('4', '8'):
        args = ('--recipe', 'digits', '--epochs', '1', '--lr', '0.05', '--grad-accum', accum)
        assert main(_train_args(tiny_folder, tmp_path / accum, *args)) == 0
        checkpoint = load_checkpoint(tmp_path / accum / CHECKPOINT_NAME)
        momentum = [s['momentum_buffer'] for _, s in sorted(checkpoint['optimizer']['state'].items())]
        states.append((checkpoint['model'], momentum))
    (model4, momentum4), (model8, momentum8) = states
    assert momentum4 and all(torch.equal(a, b) for a, b in zip(momentum4, momentum8))
    assert all(torch.equal(value, model8[key]) for key, value in model4.items()), 'weights'


def test_unreadable_images_are_skipped_in_evaluation_replaced_in_training_and_counted(tiny_folder, tmp_path, capsys):
    data, run = tmp_path / 'data', tmp_path / 'run'
    shutil.copytree(tiny_folder, data)
    bad_val, bad_train = data / 'validation' / 'a' / '0.png', data / 'train' / 'b' / '3.png'
    for path in (bad_val, bad_train):
        path.write_bytes(b'not a png\n')
    assert main(_train_args(data, run, '--recipe', 'digits', '--epochs', '1')) == 0
    err = capsys.readouterr().err
    assert f'warning: epoch 1: 1 unreadable validation image(s) skipped in evaluation: {bad_val}\n' in err
    assert f'warning: epoch 1: 1 unreadable train image(s) replaced by the next readable image: {bad_train}\n' in err
    row = load_checkpoint(run / CHECKPOINT_NAME)['history'][0]
    assert (row['train_bad_images'], row['eval_bad_images']) == (1, 1)
    result = _eval_checkpoint(data, run / CHECKPOINT_NAME, tmp_path / 'eval.json')
    assert (result['num_images'], result['num_bad_images']) == (5, 1)  # the bad image skipped, as in training
    _assert_logged_metrics_are_the_checkpoints(row, 'eval', result)
    for split in ('validation', 'train'):  # no image of a split readable: refused before training
        for path in (data / split).glob('*/*.png'):
            path.write_bytes(b'not a png\n')
        assert main(_train_args(data, tmp_path / split, '--recipe', 'digits', '--epochs', '1')) == 2
        count = len(list((data / split).glob('*/*.png')))
        assert f"None of the {count} images of split '{split}' can be read, e.g. {data / split / 'a' / '0.png'}. " \
               'Fix or replace them.' in capsys.readouterr().err
        assert not (tmp_path / split).exists()
