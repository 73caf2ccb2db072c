"""`srm-zoo plot`: training curves and benchmark rounds drawn from the files `train` and `bench` write."""
import csv
import json
import statistics
import sys

import pytest
from PIL import Image

from srm_zoo.benchmark.train_check import write_random_image_folder
from srm_zoo.cli import main
from srm_zoo.plotting import bench_figure, read_source, round_ratios, training_figure
from srm_zoo.training.log import write_log

pytest.importorskip('matplotlib')

RUN_A = [dict(epoch=1, train_loss=2.5, lr=0.1, train_samples_per_sec=10.0, eval_loss=2.4, eval_top1=12.5,
              eval_top5=50.0, ema_eval_loss=2.45, ema_eval_top1=11.0, ema_eval_top5=49.0),
         dict(epoch=2, train_loss=1.5, lr=0.01, train_samples_per_sec=11.0, eval_loss=1.9, eval_top1=40.0,
              eval_top5=80.0, ema_eval_loss=2.0, ema_eval_top1=35.0, ema_eval_top5=75.0)]
RUN_B = [dict(epoch=1, train_loss=2.0, lr=0.05, train_samples_per_sec=9.0, eval_loss=2.1, eval_top1=20.0,
              eval_top5=60.0)]


def _run_folder(path, rows):
    path.mkdir()
    write_log(rows, path)
    return path


def _lines(ax):
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines}


def test_training_curves_draw_every_run_s_logged_values(tmp_path, capsys):
    run_a, run_b = _run_folder(tmp_path / 'srm', RUN_A), _run_folder(tmp_path / 'se', RUN_B)
    out = tmp_path / 'runs.svg'
    assert main(['plot', str(run_a), str(run_b), '--output', str(out)]) == 0
    assert out.read_text().lstrip().startswith('<?xml') and f'{out}: 2 training run(s)' in capsys.readouterr().out
    # the CSV and the JSON-lines log read back alike; a run folder reads its log
    from_csv, from_jsonl = read_source(run_a / 'log.csv'), read_source(run_a / 'log.jsonl')
    assert from_csv.series == from_jsonl.series and from_csv.epochs == [1, 2]
    assert read_source(run_a).label == str(run_a) and from_csv.label == str(run_a / 'log.csv')
    # a byte-order mark (a spreadsheet's CSV) and any file name: the text says what the file holds
    (tmp_path / 'exported.txt').write_bytes(b'\xef\xbb\xbf' + (run_a / 'log.csv').read_bytes())
    assert read_source(tmp_path / 'exported.txt').series == from_csv.series
    one_epoch = training_figure([read_source(run_b)])
    assert [tick for tick in one_epoch.axes[0].get_xticks()] == [1]  # whole epochs only, even for one
    markers = {line.get_label(): line.get_marker() for line in one_epoch.axes[0].lines}
    assert markers[f'{run_b} train'] != markers[f'{run_b} eval']  # one epoch's points told apart
    loss, top1, lr = training_figure([read_source(run_a), read_source(run_b)]).axes
    assert (loss.get_title(), top1.get_title(), lr.get_title()) == ('loss', 'top-1', 'learning rate')
    assert _lines(loss) == {f'{run_a} train': ([1, 2], [2.5, 1.5]), f'{run_a} eval': ([1, 2], [2.4, 1.9]),
                            f'{run_b} train': ([1], [2.0]), f'{run_b} eval': ([1], [2.1])}
    assert _lines(top1) == {str(run_a): ([1, 2], [12.5, 40.0]), f'{run_a} EMA': ([1, 2], [11.0, 35.0]),
                            str(run_b): ([1], [20.0])}
    assert _lines(lr) == {str(run_a): ([1, 2], [0.1, 0.01]), str(run_b): ([1], [0.05])}
    assert lr.get_yscale() == 'log'
    colours = {line.get_label(): line.get_color() for line in loss.lines}
    assert colours[f'{run_a} train'] == colours[f'{run_a} eval'] != colours[f'{run_b} train']


def test_a_training_run_plots_beside_its_log(tmp_path, capsys):
    write_random_image_folder(tmp_path / 'data')
    run = tmp_path / 'run'
    assert main(['train', '--model', 'srm_resnet20_cifar', '--data', str(tmp_path / 'data'), '--output', str(run),
                 '--img-size', '16', '--batch-size', '4', '--workers', '0', '--device', 'cpu', '--recipe', 'digits',
                 '--epochs', '2']) == 0
    assert main(['plot', str(run)]) == 0
    assert Image.open(run / 'log.png').format == 'PNG'
    assert f'{run / "log.png"}: 1 training run(s)' in capsys.readouterr().out
    logged = [json.loads(line) for line in (run / 'log.jsonl').read_text().splitlines()]
    loss, top1, _ = training_figure([read_source(run)]).axes
    assert _lines(loss)[f'{run} train'] == ([1, 2], [row['train_loss'] for row in logged])
    assert _lines(top1)[str(run)] == ([1, 2], [row['eval_top1'] for row in logged])


def _bench(tmp_path, name):
    out = tmp_path / name
    assert main(['bench', '--models', 'resnet18,srm_resnet20_cifar,resnet18', '--reference', '--img-size', '32',
                 '--batch-size', '2', '--rounds', '4', '--steps', '1', '--warmup-steps', '1',
                 '--results-file', str(out)]) == 0
    return out


def test_bench_plot_shows_the_rounds_and_the_round_ratios_bench_reports(tmp_path, capsys):
    results_csv = _bench(tmp_path, 'bench.csv')
    rows = list(csv.DictReader(results_csv.open()))
    assert main(['plot', str(results_csv), '--target', '0.95']) == 0  # beside the results by default
    image = Image.open(tmp_path / 'bench.png')
    assert image.format == 'PNG' and image.width > 800
    assert 'bench.png: 4 benchmarked model(s)' in capsys.readouterr().out

    results = read_source(results_csv)
    labels = ['resnet18 #1', 'srm_resnet20_cifar', 'srm_resnet20_cifar (reference)', 'resnet18 #2']
    assert [run.label for run in results.runs] == labels
    assert results.settings == 'infer, cpu, float32, batch 2, 32 px, 4 rounds'
    rounds, ratios = bench_figure(results, target=0.95).axes
    assert _lines(rounds) == {label: ([1, 2, 3, 4], [float(r) for r in row['infer_round_samples_per_sec'].split(',')])
                              for label, row in zip(labels, rows)}
    # each box: the quartiles and median of the round ratios, as bench's columns give them (from unrounded rates)
    boxes = [line for line in ratios.lines if len(line.get_xdata()) == 5]  # a box's outline: 5 points
    medians = [line.get_ydata()[0] for line in ratios.lines if line.get_color() == 'C1']
    first = results.runs[0].round_rates
    for run, row, box, median in zip(results.runs[1:], rows[1:], boxes, medians):
        paired = [rate / base for rate, base in zip(run.round_rates, first)]
        q1, q2, q3 = statistics.quantiles(paired, n=4, method='inclusive')
        assert (min(box.get_ydata()), median, max(box.get_ydata())) == pytest.approx((q1, q2, q3), rel=1e-12)
        # bench's columns, from the rates before the results file rounded them to 2 decimals (a relative error
        # of up to 0.005 / rate for each of two rates), then to 4 decimals
        rounding = 0.01 / min(run.round_rates + first) + 1e-4
        assert (q1, q2, q3) == pytest.approx([float(row[f'infer_round_ratio{q}']) for q in ('_q1', '', '_q3')],
                                             rel=rounding)
    assert len(boxes) == len(medians) == 3
    assert [tick.get_text() for tick in ratios.get_xticklabels()] == labels[1:]
    assert {line.get_ydata()[0] for line in ratios.lines if len(set(line.get_ydata())) == 1} >= {1.0, 0.95}

    assert list(rounds.get_xticks()) == [1, 2, 3, 4]
    # the JSON results give the same rounds, under any name
    column = 'infer_round_samples_per_sec'
    json_rows = [{**row, column: [float(r) for r in row[column].split(',')]} for row in rows]
    (tmp_path / 'bench.json').write_text(json.dumps(json_rows))
    assert round_ratios(read_source(tmp_path / 'bench.json')) == round_ratios(results)
    (tmp_path / 'bench_json.csv').write_text(json.dumps(json_rows))  # --results-format json into a .csv name
    assert round_ratios(read_source(tmp_path / 'bench_json.csv')) == round_ratios(results)


def _bad_inputs(tmp_path):
    """Files that `plot` must refuse, by case."""
    run = _run_folder(tmp_path / 'run', RUN_B)
    (tmp_path / 'empty_run').mkdir()
    (tmp_path / 'header_only').mkdir()
    (tmp_path / 'header_only' / 'log.csv').write_text('epoch,train_loss\n')
    (tmp_path / 'bad_number.csv').write_text('epoch,train_loss\n1,oops\n')
    (tmp_path / 'results.csv').write_text('model,img_size,top1\nsrm_resnet50,224,77.1\n')  # eval's table
    (tmp_path / 'bench.json').write_text(json.dumps([{'model': 'resnet18', 'infer_round_samples_per_sec': [1.0, 2.0]}]))
    (tmp_path / 'other.csv').write_text('a,b\n1,2\n')
    (tmp_path / 'bench_copy.json').write_text((tmp_path / 'bench.json').read_text())
    (tmp_path / 'object.json').write_text('{"model": "resnet18"}')
    (tmp_path / 'notes.txt').write_text('epoch 1\n')
    (tmp_path / 'nan.csv').write_text('epoch,train_loss\n1,nan\n')
    (tmp_path / 'half.csv').write_text('epoch,train_loss\n1,2.0\n1.5,1.0\n')
    (tmp_path / 'bench_nan.json').write_text(json.dumps([{'model': 'a', 'infer_round_samples_per_sec': [1.0, 2.0]},
                                                         {'model': 'b', 'infer_round_samples_per_sec': [1.0, 'nan']}]))
    (tmp_path / 'no_model.json').write_text(json.dumps([{'model': None, 'infer_round_samples_per_sec': [1.0]}]))
    (tmp_path / 'uneven.json').write_text(json.dumps([{'model': 'a', 'infer_round_samples_per_sec': [1.0, 2.0]},
                                                      {'model': 'b', 'infer_round_samples_per_sec': [1.0]}]))
    (tmp_path / 'bench.png').write_text((tmp_path / 'bench.json').read_text())  # its default output is itself
    (tmp_path / 'view.png').symlink_to(tmp_path / 'bench.json')
    return run


@pytest.mark.parametrize('args, message', [
    (['missing'], 'missing does not exist'),
    (['empty_run'], 'holds no log.jsonl or log.csv'),
    (['header_only'], 'logs no finished epoch yet'),
    (['bad_number.csv', '-o', 'x.png'], "row 1: train_loss is 'oops', not a number"),
    (['results.csv', '-o', 'x.png'], 'results.csv has no per-round column'),
    (['other.csv', '-o', 'x.png'], 'neither a training log (no "epoch" column) nor bench results'),
    (['object.json', '-o', 'x.png'], 'does not hold a list of records'),
    (['notes.txt', '-o', 'x.png'], 'notes.txt holds no rows'),
    (['nan.csv', '-o', 'x.png'], "row 1: train_loss is 'nan', not a finite number"),
    (['half.csv', '-o', 'x.png'], "row 2: the epoch is '1.5', not a whole number"),
    (['bench_nan.json', '-o', 'x.png'], "row 2: infer_round_samples_per_sec is 'nan', not a finite number"),
    (['no_model.json', '-o', 'x.png'], 'row 1: the model is None, not a model name'),
    (['bench.json', '--target', '0.95'], 'these bench results hold only one model'),
    (['run', 'run/', '-o', 'x.png'], 'run/ is given twice'),
    (['run', '-o', ''], 'Cannot write the plot to an empty path'),
    (['uneven.json', '-o', 'x.png'], 'different numbers of rounds'),
    (['run', 'bench.json', '-o', 'x.png'], 'not both in one figure'),
    (['bench.json', 'bench_copy.json', '-o', 'x.png'], 'one bench results file at a time'),
    (['run', '--target', '0.95'], 'training curves have none'),
    (['run', 'run'], 'name it with --output'),
    (['run', '-o', 'plot.txt'], 'Cannot tell the image format of plot.txt: end its name in one of'),
    (['run', '-o', 'nowhere/plot.png'], 'folder nowhere does not exist'),
    (['bench.png'], 'it is bench.png, which the command reads'),
    (['bench.json', '-o', 'view.png'], 'it is bench.json, which the command reads'),
])
def test_plot_refuses_bad_input_in_one_line(args, message, tmp_path, capsys, monkeypatch):
    _bad_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob('*'))
    assert main(['plot', *args]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count('\n') == 1 and error.startswith('srm-zoo plot: error:'), error
    assert sorted(p.name for p in tmp_path.rglob('*')) == before  # nothing written


@pytest.mark.parametrize('value', ['0', '-1', '1e9', 'nan'])
def test_plot_refuses_a_target_that_is_no_ratio(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(['plot', 'bench.csv', '--target', value])
    assert exit_info.value.code == 2 and 'not a ratio above 0 and at most 10' in capsys.readouterr().err


def test_plot_without_matplotlib_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    run = _run_folder(tmp_path / 'run', RUN_B)
    monkeypatch.setitem(sys.modules, 'matplotlib', None)
    monkeypatch.setitem(sys.modules, 'matplotlib.figure', None)
    assert main(['plot', str(run)]) == 2
    assert "pip install 'srm-zoo[plot]'" in capsys.readouterr().err and not (run / 'log.png').exists()
