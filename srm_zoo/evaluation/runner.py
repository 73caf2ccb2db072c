"""One evaluation from options to results: model, preprocessing, data, exact counting, verification."""
import contextlib
import dataclasses
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
from timm.data import create_transform, resolve_data_config
from torch.utils.data import DataLoader, Subset

from ..compiling import check_compile_mode, cudagraph_skips, describe_skips, replays_cuda_graphs
from ..errors import UserError
from .. import distributed
from ..paths import check_results_format
from .data import EvalImageDataset, EvalImages, collate_skipping_bad, load_images
from .labels import DATASETS, LabelSpace, label_space
from .metrics import PERCENT_DECIMALS, Counts, recorded_percent, score_batch
from .model import LoadedModel, build_model
from .results import EVAL_SETTING_KEYS, check_results_file, software_versions
from .sources import MODEL_SOURCES
from .verify import DEFAULT_TOLERANCE, Reference, compare_with_reference, find_reference, format_verdict

__all__ = ['EvalOptions', 'EvalRun', 'evaluate', 'default_dataset', 'summary_line']

_AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
_BAD_SHOWN = 20


@dataclass
class EvalOptions:
    """Everything one evaluation needs (the ``srm-zoo eval`` options)."""
    model: str
    data: str
    checkpoint: Optional[str] = None
    split: Optional[str] = None
    dataset: Optional[str] = None
    dataset_name: Optional[str] = None
    labels: Optional[str] = None
    meta: Optional[str] = None
    num_classes: Optional[int] = None
    use_ema: bool = False
    batch_size: int = 64
    workers: int = 4
    amp: Optional[str] = None
    channels_last: bool = False
    compile: bool = False
    compile_mode: Optional[str] = None
    img_size: Optional[int] = None
    crop_pct: Optional[float] = None
    crop_mode: Optional[str] = None
    interpolation: Optional[str] = None
    max_bad_images: int = 10
    device: Optional[str] = None
    log_interval: int = 50
    verify: bool = False
    tolerance: Optional[float] = None
    """``--verify``'s allowed shortfall in points (None: :data:`~.verify.DEFAULT_TOLERANCE`)."""
    results_file: Optional[str] = None
    results_format: Optional[str] = None


@dataclass
class EvalRun:
    """The outcome: the results record, whether verification passed, and this process's role."""
    result: Dict[str, Any]
    passed: Optional[bool]
    is_primary: bool


def default_dataset(model: torch.nn.Module) -> str:
    """``imagenet`` for 1000-class models without their own label names, ``folder`` otherwise."""
    if model.num_classes == 1000 and not model.pretrained_cfg.get('label_names'):
        return 'imagenet'
    return 'folder'


def _label_space(loaded: LoadedModel, options: EvalOptions) -> LabelSpace:
    model = loaded.model
    dataset = options.dataset or default_dataset(model)
    if options.dataset_name and dataset != 'folder':
        given = f'--dataset {dataset}' if options.dataset else f'{dataset} (the default for {loaded.name})'
        fix = '' if options.dataset else ', or add --dataset folder'
        raise UserError(f'--dataset-name names the dataset of --dataset folder data, but {given} records and '
                        f'verifies {DATASETS[dataset]}: leave --dataset-name out{fix}.')
    names = model.pretrained_cfg.get('label_names')
    names = names if names and len(names) == model.num_classes else None
    folder_name = loaded.trained_on or 'folder'
    space = label_space(dataset, model.num_classes, names, folder_name)
    return dataclasses.replace(space, dataset=options.dataset_name) if options.dataset_name else space


def _data_config(model: torch.nn.Module, options: EvalOptions) -> Dict[str, Any]:
    overrides = dict(img_size=options.img_size, crop_pct=options.crop_pct, crop_mode=options.crop_mode,
                     interpolation=options.interpolation)
    return resolve_data_config(overrides, model=model, use_test_size=True)


class _Progress:
    """A tqdm bar with running top-1 on a terminal; a plain line every ``interval`` batches otherwise."""

    def __init__(self, total: int, enabled: bool, interval: int):
        self.enabled, self.interval, self.total, self.batches = enabled, max(1, interval), total, 0
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit='batch', desc='eval', file=sys.stderr)

    def update(self, counts: Counts) -> None:
        self.batches += 1
        if not self.enabled:
            return
        top1 = f'{counts.top1:.2f}' if counts.scored else 'n/a'
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(top1=top1, images=counts.images, refresh=False)
        elif self.batches % self.interval == 0 or self.batches == self.total:
            print(f'eval: batch {self.batches}/{self.total}, {counts.images} images, running top-1 {top1}',
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _forward(model: torch.nn.Module, batch: torch.Tensor, options: EvalOptions,
             context: distributed.DistContext) -> torch.Tensor:
    """The logits of ``batch`` on this process's device, in the memory format and precision asked for."""
    batch = batch.to(context.device, non_blocking=True)
    if options.channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    amp = (torch.autocast(device_type=context.device.type, dtype=_AMP_DTYPES[options.amp]) if options.amp
           else contextlib.nullcontext())
    with amp:
        return model(batch)


def _batch_sizes(num_images: int, batch_size: int) -> Tuple[int, ...]:
    """The sizes of the batches a loader yields for ``num_images``: full batches, then the remainder."""
    full = max(1, min(batch_size, num_images))
    rest = num_images % batch_size if num_images > batch_size else 0
    return (full, rest) if rest else (full,)


def _warm_up(model: torch.nn.Module, input_size: tuple, batch_sizes: Tuple[int, ...], options: EvalOptions,
             context: distributed.DistContext) -> None:
    """A forward pass of each batch shape before the timed loop (timm's validate.py warms up with the
    first), so that compilation (--compile) and first-call set-up are not counted in ``samples_per_sec``."""
    with torch.inference_mode():
        for batch_size in batch_sizes:
            _forward(model, torch.zeros((batch_size, *input_size)), options, context)


def _run_loop(model: torch.nn.Module, loader: DataLoader, images: EvalImages, space: LabelSpace,
              context: distributed.DistContext, options: EvalOptions) -> tuple:
    """This process's counts and unreadable image indices."""
    counts, bad = Counts(), []
    output_indices = torch.tensor(space.output_indices) if space.output_indices is not None else None
    progress = _Progress(len(loader), context.is_main, options.log_interval)
    try:
        with torch.inference_mode():
            for batch, targets, indices, bad_indices in loader:
                bad += bad_indices.tolist()
                counts.bad_images = len(bad)
                if stops_early(len(bad), options.max_bad_images, context):
                    raise UserError(_bad_images_message(images, len(bad), bad, options.max_bad_images))
                if batch is not None:
                    logits = _forward(model, batch, options, context)
                    if output_indices is not None:
                        logits = logits[:, output_indices.to(logits.device)]
                    label_sets = [images.real_labels[i] for i in indices.tolist()] if images.real_labels else None
                    counts += score_batch(logits, targets, label_sets)
                progress.update(counts)
    finally:
        progress.close()
    return counts, bad


def stops_early(bad_images: int, max_bad_images: int, context: distributed.DistContext) -> bool:
    """Whether this process stops its loop at once, past ``--max-bad-images``. Only a single process does:
    under torchrun the limit is decided after the loop on the count summed over every rank, which all
    ranks agree on (one rank stopping alone would leave the others waiting on a closed connection)."""
    return not context.distributed and bad_images > max_bad_images


def _bad_images_message(images: EvalImages, count: int, examples: List[int], cap: int) -> str:
    """``count`` unreadable images are past ``cap``; a few of ``examples`` (their indices) are named."""
    names = ', '.join(images.name(i) for i in sorted(examples)[:5])
    return (f'{count} images could not be read (more than --max-bad-images {cap}), e.g. {names}. '
            f'Fix or remove them, or raise --max-bad-images.')


def evaluate(options: EvalOptions) -> EvalRun:
    """Evaluate ``options.model`` on ``options.data``; under torchrun every process calls this with its shard."""
    if options.amp and options.amp not in _AMP_DTYPES:
        raise UserError(f'--amp must be one of {", ".join(_AMP_DTYPES)}.')
    if options.dataset and options.dataset not in DATASETS:
        raise UserError(f'Unknown --dataset {options.dataset!r}; choose one of: {", ".join(DATASETS)}.')
    for flag, value, low in (('--batch-size', options.batch_size, 1), ('--workers', options.workers, 0),
                             ('--max-bad-images', options.max_bad_images, 0), ('--tolerance', options.tolerance, 0),
                             ('--img-size', options.img_size, 1), ('--num-classes', options.num_classes, 1)):
        if value is not None and value < low:
            raise UserError(f'{flag} must be at least {low}, not {value}.')
    if options.crop_pct is not None and not 0 < options.crop_pct <= 1:
        raise UserError(f'--crop-pct must be in (0, 1], not {options.crop_pct}.')
    check_compile_mode(options.compile, options.compile_mode)
    if options.tolerance is not None and not options.verify:
        raise UserError('--tolerance says how far --verify lets the figures fall short: add --verify.')
    if options.use_ema and options.model.startswith(MODEL_SOURCES):
        raise UserError(f'--use-ema picks the EMA weights of a training checkpoint, but {options.model} holds one set '
                        'of weights (a training run\'s model/ folder holds the EMA weights where its recipe keeps '
                        'them): leave --use-ema out.')
    if options.use_ema and not options.checkpoint:
        raise UserError('--use-ema picks the EMA weights of a training checkpoint: add --checkpoint FILE (the '
                        'published weights have no EMA copy).')
    context = distributed.init_distributed(options.device)
    try:
        return _evaluate(options, context)
    finally:
        distributed.close_distributed(context)


def _check_results_file(options: EvalOptions, context: distributed.DistContext) -> None:
    """Refuse an unwritable ``--results-file`` (an empty path included), or a ``--results-format`` without one,
    before anything is evaluated. The process that writes it (rank 0) checks it, and every rank stops with its
    message."""
    check_results_format(options.results_file, options.results_format)
    problem = None
    if options.results_file is not None and context.is_main:
        try:
            check_results_file(options.results_file, options.results_format)
        except UserError as error:
            problem = str(error)
    problem = distributed.broadcast_object(problem, context)
    if problem:
        raise UserError(problem)


def _reference(loaded: LoadedModel, dataset: str, images: EvalImages) -> Reference:
    """The accuracy ``--verify`` compares with; a UserError, before anything is evaluated, when there is none or
    the weights are a counterpart's (the zoo states the SRM network's accuracy)."""
    if loaded.attention not in ('srm', None):
        raise UserError(f'--verify checks {loaded.name} against the accuracy the zoo states for its SRM network, but '
                        f'these weights are of a counterpart with block attention {loaded.attention} '
                        f'({loaded.weights}); evaluate them without --verify.')
    reference, reason = find_reference(loaded.name, dataset, images.split, split_given=images.split_named)
    if reference is None:
        raise UserError(f'--verify: {reason}.')
    return reference


def _evaluate(options: EvalOptions, context: distributed.DistContext) -> EvalRun:
    _check_results_file(options, context)
    loaded = build_model(options.model, options.checkpoint, options.num_classes, options.use_ema)
    model = loaded.model
    space = _label_space(loaded, options)
    config = _data_config(model, options)
    transform = create_transform(**config, is_training=False)
    images = load_images(options.data, space, options.split, options.labels, options.meta)
    reference = _reference(loaded, space.dataset, images) if options.verify else None
    if context.is_main:
        print(f'{loaded.name} ({loaded.weights}) on {space.dataset}/{images.split}: {len(images)} images in '
              f'{images.path} ({images.layout}; labels: {images.label_source})', file=sys.stderr)
        print('preprocessing: ' + ', '.join(f'{k}={v}' for k, v in config.items()), file=sys.stderr)

    model = model.to(context.device)
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if options.compile:
        model = torch.compile(model, mode=options.compile_mode)
    shard = Subset(EvalImageDataset(images, transform), distributed.shard_indices(len(images), context))
    loader = DataLoader(shard, batch_size=options.batch_size, shuffle=False, num_workers=options.workers,
                        collate_fn=collate_skipping_bad, pin_memory=context.device.type == 'cuda')

    cuda_graphs = options.compile and replays_cuda_graphs(options.compile_mode)
    skips_before = cudagraph_skips() if cuda_graphs else 0
    _warm_up(model, config['input_size'], _batch_sizes(len(shard), options.batch_size), options, context)
    start = time.perf_counter()
    local_counts, local_bad = _run_loop(model, loader, images, space, context, options)
    counts = Counts.from_tensor(distributed.all_sum(local_counts.to_tensor(), context))
    elapsed = time.perf_counter() - start
    skipped = cudagraph_skips() - skips_before if cuda_graphs else 0
    if skipped and context.is_main:
        print(describe_skips(skipped), file=sys.stderr)
    bad = sorted(i for part in distributed.all_gather_objects(local_bad[:_BAD_SHOWN + 1], context) for i in part)

    if counts.bad_images > options.max_bad_images:
        raise UserError(_bad_images_message(images, counts.bad_images, bad, options.max_bad_images))
    if counts.images == 0:
        raise UserError(f'None of the {len(images)} images in {images.path} could be read.')
    if counts.scored == 0:
        raise UserError(f'None of the {counts.images} images has a label to score against.')
    if counts.bad_images and context.is_main:
        print(f'warning: skipped {counts.bad_images} unreadable images, e.g. '
              f'{", ".join(images.name(i) for i in bad[:5])}', file=sys.stderr)

    result = _result(loaded, options, space, images, config, counts, bad, elapsed, context)
    passed = _verify(result, reference, options, counts, context) if reference else None
    return EvalRun(result, passed, context.is_main)


def _result(loaded: LoadedModel, options: EvalOptions, space: LabelSpace, images: EvalImages,
            config: Dict[str, Any], counts: Counts, bad: List[int], elapsed: float,
            context: distributed.DistContext) -> Dict[str, Any]:
    param_count = sum(p.numel() for p in loaded.model.parameters())
    return {
        'model': loaded.name,
        'attention': loaded.attention,
        'top1': recorded_percent(counts.top1), 'top1_err': recorded_percent(100 - counts.top1),
        'top5': recorded_percent(counts.top5), 'top5_err': recorded_percent(100 - counts.top5),
        'num_images': counts.images,
        'num_scored': counts.scored,
        'num_bad_images': counts.bad_images,
        'bad_images': [images.name(i) for i in bad[:_BAD_SHOWN]],
        'loss': round(counts.loss, 6) if counts.loss is not None else None,
        'param_count': round(param_count / 1e6, 3),
        'img_size': config['input_size'][-1],
        'input_size': list(config['input_size']),
        'crop_pct': config['crop_pct'],
        'crop_mode': config['crop_mode'],
        'interpolation': config['interpolation'],
        'mean': list(config['mean']),
        'std': list(config['std']),
        'dataset': space.dataset,
        'split': images.split,
        'num_classes': space.num_outputs,
        'data': images.path,
        'layout': images.layout,
        'labels': images.label_source,
        'weights': loaded.weights,
        'checkpoint': options.checkpoint,
        'checkpoint_sha256': loaded.sha256,
        'batch_size': options.batch_size,
        'amp': options.amp,
        'channels_last': options.channels_last,
        'compile': options.compile,
        'compile_mode': options.compile_mode,
        'device': str(context.device),
        'world_size': context.world_size,
        'eval_seconds': round(elapsed, 3),
        'samples_per_sec': round(counts.images / elapsed, 3) if elapsed > 0 else None,
        'versions': software_versions(),
    }


def _verify(result: Dict[str, Any], reference: Reference, options: EvalOptions, counts: Counts,
            context: distributed.DistContext) -> bool:
    tolerance = DEFAULT_TOLERANCE if options.tolerance is None else options.tolerance
    settings = {key: result[key] for key in EVAL_SETTING_KEYS}
    verdict = compare_with_reference(counts.top1, counts.top5, reference, tolerance, counts.images, settings)
    result['verify'] = verdict.to_dict()
    if context.is_main:
        print(format_verdict(verdict))
    return verdict.passed


def summary_line(result: Dict[str, Any]) -> str:
    """One line: model, data, top-1/top-5 (as recorded), loss and throughput."""
    loss = f'{result["loss"]:.4f}' if result['loss'] is not None else 'n/a'
    bad = f', {result["num_bad_images"]} unreadable skipped' if result['num_bad_images'] else ''
    counterpart = '' if result.get('attention') in ('srm', None) else f' (attention {result["attention"]})'
    return (f'{result["model"]}{counterpart} on {result["dataset"]}/{result["split"]}: '
            f'top-1 {result["top1"]:.{PERCENT_DECIMALS}f}  top-5 {result["top5"]:.{PERCENT_DECIMALS}f}  loss {loss}  '
            f'({result["num_images"]} images{bad}; {result["samples_per_sec"]:.1f} img/s)')
