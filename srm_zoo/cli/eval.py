"""``srm-zoo eval``: measure a model's top-1/top-5 on ImageNet (or a robustness set, or a folder of your
classes) and, with --verify, check it against the zoo's published figures. Runs under torchrun too."""
import argparse
import dataclasses
import os

from ..compiling import COMPILE_MODES
from ..evaluation import DATASETS, EvalOptions, evaluate, summary_line, write_results
from ..evaluation.verify import DEFAULT_TOLERANCE
from ._help import DefaultsHelpFormatter


def run(args: argparse.Namespace) -> int:
    names = {f.name for f in dataclasses.fields(EvalOptions)}
    outcome = evaluate(EvalOptions(**{k: v for k, v in vars(args).items() if k in names}))
    if outcome.is_primary:
        print(summary_line(outcome.result))
        if args.results_file is not None:
            fmt = write_results(outcome.result, args.results_file, args.results_format)
            print(f'results ({fmt}) written to {args.results_file}')
    return int(outcome.passed is False)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        'eval', help='evaluate a model\'s accuracy (and verify it against the zoo)',
        description=__doc__.split(':', 1)[1].strip(), formatter_class=DefaultsHelpFormatter)
    model = parser.add_argument_group('model')
    model.add_argument('--model', required=True, metavar='MODEL',
                       help='model name NAME[.TAG], e.g. srm_resnet50; or hf-hub:REPO[@REVISION] or local-dir:FOLDER '
                            '(timm\'s config.json and weights there, e.g. an export or a training run\'s model/ '
                            'folder)')
    model.add_argument('--checkpoint', metavar='FILE',
                       help='evaluate these weights (safetensors or torch state dict) instead of the published ones '
                            '(with a NAME; hf-hub: and local-dir: models bring their own)')
    model.add_argument('--use-ema', action='store_true', help='prefer the EMA weights of a training checkpoint')
    model.add_argument('--num-classes', type=int, help='number of model outputs (default: the model\'s)')

    data = parser.add_argument_group('data')
    data.add_argument('--data', required=True, metavar='PATH',
                      help='image folder (<data>/<split>/<class>/* or <data>/<class>/*), flat ILSVRC2012_val_* '
                           'folder, .tar archive or folder of .tar shards, or hfds/<name> (Hugging Face datasets)')
    data.add_argument('--split', help='split folder under --data (default: val/validation/... then test if present)')
    data.add_argument('--dataset', choices=tuple(DATASETS),
                      help='how class names map to outputs (default: imagenet for 1000-class models, else folder)')
    data.add_argument('--dataset-name', help='dataset name recorded and verified for --dataset folder only '
                                             '(default: the dataset the weights were trained on)')
    data.add_argument('--labels', metavar='FILE', help='flat layout ground truth: LOC_val_solution.csv or '
                                                        'ILSVRC2012_validation_ground_truth.txt (default: searched)')
    data.add_argument('--meta', metavar='FILE', help='devkit meta.mat for the ground truth .txt (default: searched)')
    data.add_argument('--max-bad-images', type=int, default=10,
                      help='unreadable images to skip (counted and reported) before aborting')

    prep = parser.add_argument_group('preprocessing (default: the model\'s pretrained cfg)')
    prep.add_argument('--img-size', type=int, help='input size')
    prep.add_argument('--crop-pct', type=float, help='center crop fraction')
    prep.add_argument('--crop-mode', choices=('center', 'squash', 'border'), help='crop mode')
    prep.add_argument('--interpolation', choices=('bilinear', 'bicubic', 'nearest'), help='resize interpolation')

    speed = parser.add_argument_group('speed')
    speed.add_argument('--batch-size', '-b', type=int, default=64, help='images per batch (per process)')
    speed.add_argument('--workers', '-j', type=int, default=min(4, os.cpu_count() or 1),
                       help='data loading processes (per process; default: up to 4, no more than the CPUs)')
    speed.add_argument('--amp', choices=('bf16', 'fp16'), help='mixed precision (default: float32)')
    speed.add_argument('--channels-last', action='store_true', help='channels-last memory layout')
    speed.add_argument('--compile', action='store_true', help='torch.compile the model')
    speed.add_argument('--compile-mode', choices=COMPILE_MODES,
                       help="mode of --compile (default: torch.compile's); on CUDA, reduce-overhead replays each "
                       'batch as CUDA graphs')
    speed.add_argument('--device', help='cpu, cuda or cuda:INDEX (default: cuda when available; an unusable device is '
                                        'an error); torchrun picks the index')

    out = parser.add_argument_group('results')
    out.add_argument('--results-file', metavar='FILE',
                     help='write results here: .json (every field; the file holds this run only) or .csv (timm '
                          'results-table columns; a row is appended to an existing table); checked before the run')
    out.add_argument('--results-format', choices=('json', 'csv'), help='results file format (default: by extension)')
    out.add_argument('--log-interval', type=int, default=50, help='batches between progress lines when not on a '
                                                                  'terminal')
    out.add_argument('--verify', action='store_true',
                     help='compare with the published figures (measured release, else the paper); exit 1 when short, '
                          'or INCOMPLETE on fewer images than the release measured; no reference: refused before '
                          'the run')
    out.add_argument('--tolerance', type=float, default=None, metavar='PTS',
                     help=f'allowed shortfall for --verify, in percentage points (default: {DEFAULT_TOLERANCE:g})')
    parser.set_defaults(run=run)
