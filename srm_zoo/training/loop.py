"""``srm-zoo train``: one training run from a recipe, on one process or under ``torchrun``.

Each epoch ends with an evaluation, then an atomic checkpoint (``checkpoint.pth``: model,
optimiser, scheduler, grad scaler, EMA, epoch, every process's RNG states, the recipe, the
settings and the log so far) and the logs (``log.csv``, ``log.jsonl``). ``resume=True`` continues
from the checkpoint and reproduces the uninterrupted run exactly (same settings, same number of
processes and loader workers). At the end, the weights to publish (the EMA's when the recipe
keeps one) are written with timm's ``save_for_hf`` to ``<output>/model``.
"""
import math
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import timm
import torch
import torch.nn as nn
from timm.data import Mixup, resolve_data_config
from timm.loss import SoftTargetCrossEntropy
from timm.utils import ModelEmaV3, distribute_bn
from torch.nn.parallel import DistributedDataParallel

from ..catalogue import attention_kwargs, resolve_name
from ..checkpoint import load_state_dict_for, read_state_dict
from ..compiling import check_compile_mode, cudagraph_skips, describe_skips, replays_cuda_graphs
from ..conversion.state import save_hf_folder
from ..distributed import (DistContext, all_gather_objects, all_reduce_sum, all_sum, barrier, close_distributed,
                           init_distributed)
from ..errors import UserError
from ..paths import check_output_dir
from ..evaluation.data import EvalImages
from ..evaluation.metrics import Counts, score_batch
from ..evaluation.results import software_versions
from .config import TrainConfig
from .data import check_readable, class_names, eval_loader, image_paths, load_split, split_images, train_loader
from .log import LOG_FILES, progress, write_log
from .optim import create_optimizer, create_scheduler
from .recipes import Recipe, get_recipe
from .state import CHECKPOINT_NAME, load_checkpoint, rng_state, save_checkpoint, set_rng_state

__all__ = ['train', 'evaluate']

_AMP_DTYPES = {'none': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
_TAG_FIELDS = ('tag', 'description', 'notes', 'license', 'file', 'url', 'hf_hub_id', 'label_names',
               'label_descriptions')
"""Pretrained-cfg fields that describe a weight tag's weights, not the architecture."""
MODEL_FOLDER = 'model'
"""The run folder's final weights, as timm's ``save_for_hf`` writes them."""


def train(config: TrainConfig) -> Dict[str, Any]:
    """Run (or resume) a training run; returns the last epoch's log row."""
    recipe = get_recipe(config.recipe)
    if config.amp not in _AMP_DTYPES:
        raise UserError(f'--amp must be one of {", ".join(_AMP_DTYPES)}, got {config.amp!r}.')
    check_compile_mode(config.compile, config.compile_mode)
    device = config.device  # as named: a single process runs on the GPU it names
    config = config.resolved()  # recorded as it acts: a resumed run compares paths and devices by meaning
    check_output_dir(config.output, '--output')
    if config.sync_bn and config.device == 'cpu':
        raise UserError('--sync-bn synchronises BatchNorm across GPU processes and needs CUDA, but this run trains '
                        'on the CPU; leave out --sync-bn.')
    ctx = init_distributed(device)
    try:
        return _Run(config, recipe, ctx).fit()
    finally:
        close_distributed(ctx)


class _Run:
    """The state of one run: model, data, optimiser, schedule, EMA and log."""

    def __init__(self, config: TrainConfig, recipe: Recipe, ctx: DistContext) -> None:
        self.config, self.recipe, self.ctx = config, recipe, ctx
        self.output = Path(config.output)
        self.checkpoint_path = self.output / CHECKPOINT_NAME
        resumed = self._read_resume_checkpoint()
        self._seed((config.seed + ctx.rank) % 2 ** 32)  # numpy takes seeds below 2**32

        self.class_names, self.train_images, self.val_images = self._load_data(resumed)
        self.batch_size = config.batch_size if config.batch_size is not None else \
            recipe.batch_size // (ctx.world_size * config.grad_accum)
        _check_step_batch(self.batch_size, config, recipe, ctx.world_size)

        self.model = self._create_model(initial_weights=resumed is None)
        self.data_config = resolve_data_config(
            {'input_size': (3, config.img_size, config.img_size)} if config.img_size is not None else {},
            model=self.model)
        self.epochs = config.epochs if config.epochs is not None else recipe.epochs
        global_batch = self.batch_size * ctx.world_size * config.grad_accum
        self.lr = config.lr if config.lr is not None else recipe.lr * global_batch / recipe.batch_size
        if (recipe.mixup or recipe.cutmix) and self.batch_size % 2:
            raise UserError(f'Recipe {recipe.name!r} uses mixup/cutmix, which needs an even --batch-size.')
        self.train_loader, self.sampler = train_loader(
            self.train_images, recipe, self.data_config, self.batch_size, config.workers, config.seed, ctx)
        self.val_loader = eval_loader(self.val_images, self.data_config, self.batch_size, config.workers, ctx)

        self.optimizer = create_optimizer(self.model, recipe, self.lr)
        self.scheduler = create_scheduler(self.optimizer, recipe, self.epochs)
        self.amp_dtype = _AMP_DTYPES[config.amp]
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=self.amp_dtype == torch.float16)
        num_classes = len(self.class_names)
        self.mixup = Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix,
                           label_smoothing=recipe.label_smoothing, num_classes=num_classes) \
            if recipe.mixup or recipe.cutmix else None
        self.criterion = SoftTargetCrossEntropy() if self.mixup else nn.CrossEntropyLoss(
            label_smoothing=recipe.label_smoothing)

        self.start_epoch, self.history = 0, []
        if resumed is not None:
            self._restore(resumed)
        # CUDA graphs overwrite a replay's outputs on the next replay, gradients included, so that
        # gradients must be accumulated into buffers of their own (see _keep_grads_allocated)
        self.cuda_graphs = config.compile and replays_cuda_graphs(config.compile_mode)
        if self.cuda_graphs:
            self._keep_grads_allocated()
        self.train_model = self._wrap(self.model)  # under torchrun, every process now holds rank 0's weights
        self.ema = self._create_ema(resumed)

    # -- set-up -----------------------------------------------------------------------------------
    def _read_resume_checkpoint(self) -> Optional[Dict[str, Any]]:
        if not self.checkpoint_path.exists():
            earlier = [name for name in (*LOG_FILES, MODEL_FOLDER) if (self.output / name).exists()]
            if earlier:
                raise UserError(f'{self.output} holds {", ".join(earlier)} of an earlier run but no checkpoint to '
                                'resume, and a new run would replace them: choose another --output.')
            if self.config.resume and self.ctx.is_main:
                print(f'srm-zoo train: no checkpoint in {self.output}; starting a new run.', flush=True)
            return None
        if not self.config.resume:
            raise UserError(f'{self.output} already holds a training checkpoint. Pass --resume to continue that '
                            'run, or choose another --output.')
        checkpoint = load_checkpoint(self.checkpoint_path)
        differences = self.config.differences(checkpoint.get('config', {}))
        if differences:
            raise UserError(f'--resume needs the settings of the checkpointed run; these differ: '
                            f'{"; ".join(differences)}.')
        workers = checkpoint.get('config', {}).get('workers', self.config.workers)
        if workers != self.config.workers and self.ctx.is_main:
            print(f'srm-zoo train: warning: --workers {self.config.workers} differs from the run\'s {workers}; the '
                  "remaining epochs' data order differs from an uninterrupted run's.", file=sys.stderr, flush=True)
        rng_states = checkpoint.get('rng', [])
        if len(rng_states) != self.ctx.world_size:
            raise UserError(f'The checkpoint was written by {len(rng_states)} process(es); resume it with the same '
                            f'number (now {self.ctx.world_size}) to reproduce the run.')
        return checkpoint

    def _load_data(self, resumed: Optional[Dict[str, Any]]) -> Tuple[List[str], EvalImages, EvalImages]:
        """The class names and the training and validation images, checked: both splits (and the checkpoint
        of a resumed run) have the same classes, and each split has a readable image."""
        config = self.config
        train_set = load_split(config.data, config.train_split, is_training=True)
        val_set = load_split(config.data, config.val_split, is_training=False)
        names = class_names(train_set, config.train_split)
        if class_names(val_set, config.val_split) != names:
            raise UserError(f'The classes of split {config.val_split!r} differ from those of {config.train_split!r}.')
        if resumed is not None:
            _check_resumed_classes(names, list(resumed.get('class_names') or []), config.train_split)
        images = split_images(train_set, config.train_split), split_images(val_set, config.val_split)
        for split in images:
            check_readable(split)
        return (names, *images)

    @staticmethod
    def _seed(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _create_model(self, initial_weights: bool) -> nn.Module:
        """The model, with the --initial-checkpoint weights when ``initial_weights`` (a resumed run has
        its weights in the training checkpoint)."""
        config = self.config
        resolve_name(config.model)  # an unknown model or tag is a clear error
        model = timm.create_model(config.model, num_classes=len(self.class_names),
                                  zero_init_last=self.recipe.zero_init_last,
                                  **attention_kwargs(config.model, config.attention))
        if config.initial_checkpoint and initial_weights:
            state = read_state_dict(config.initial_checkpoint)
            load_state_dict_for(model, state, f'--initial-checkpoint {config.initial_checkpoint}', config.model)
        model.to(self.ctx.device)
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        if config.sync_bn and self.ctx.distributed:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model

    def _keep_grads_allocated(self) -> None:
        """Zero gradients for every trainable parameter, made once at set-up and kept from step to step
        (zeroed in place).

        Autograd accumulates into an existing gradient in place; a parameter without one would take
        the backward graph's output itself as its gradient, memory that the next CUDA-graph replay
        overwrites, losing what was accumulated in gradient accumulation."""
        for param in self.model.parameters():
            if param.requires_grad:
                param.grad = torch.zeros_like(param)

    def _wrap(self, model: nn.Module) -> nn.Module:
        if self.ctx.distributed:
            model = DistributedDataParallel(
                model, device_ids=[self.ctx.device.index] if self.ctx.device.type == 'cuda' else None)
        self.ddp = model if self.ctx.distributed else None
        return torch.compile(model, mode=self.config.compile_mode) if self.config.compile else model

    def _create_ema(self, resumed: Optional[Dict[str, Any]]) -> Optional[ModelEmaV3]:
        """The recipe's EMA (None without one), from the weights every process shares or from the checkpoint."""
        if not self.recipe.ema_decay:
            return None
        ema = ModelEmaV3(self.model, decay=self.recipe.ema_decay)
        if resumed is not None:
            ema.load_state_dict(resumed['ema'])
        return ema

    def _restore(self, checkpoint: Dict[str, Any]) -> None:
        self.model.load_state_dict(checkpoint['model'])
        self.optimizer.load_state_dict(checkpoint['optimizer'])
        self.scheduler.load_state_dict(checkpoint['scheduler'])
        self.scaler.load_state_dict(checkpoint['scaler'])
        self.start_epoch = checkpoint['epoch']
        self.history = list(checkpoint.get('history', []))
        self.resumed_rng = checkpoint['rng'][self.ctx.rank]

    # -- the run ----------------------------------------------------------------------------------
    def fit(self) -> Dict[str, Any]:
        if self.ctx.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
            print(f'srm-zoo train: {self.config.model} ({self.config.attention}), recipe {self.recipe.name}, '
                  f'{self.epochs} epochs, {self.ctx.world_size} process(es) x batch {self.batch_size} x accumulation '
                  f'{self.config.grad_accum}, lr {self.lr:g}, {len(self.class_names)} classes, on {self.ctx.device}'
                  + (f', resuming after epoch {self.start_epoch}' if self.start_epoch else ''), flush=True)
        if self.start_epoch:
            set_rng_state(self.resumed_rng)
        for epoch in range(self.start_epoch, self.epochs):
            row = self._epoch(epoch)
            self.history.append(row)
            self._save(epoch + 1)
            if self.ctx.is_main:
                print(_describe(row, self.epochs), flush=True)
        if self.ctx.is_main:
            self._export()
        barrier(self.ctx)
        return self.history[-1] if self.history else {}

    def _epoch(self, epoch: int) -> Dict[str, Any]:
        self.scheduler.step(epoch)
        self.sampler.set_epoch(epoch)
        lr = self.optimizer.param_groups[-1]['lr']
        train_loss, images_per_sec, replaced = self._train_one_epoch(epoch)
        row = dict(epoch=epoch + 1, train_loss=train_loss, lr=lr, train_samples_per_sec=images_per_sec)
        self._distribute_bn()
        counts, skipped = evaluate(self.model, self.val_loader, self.ctx, self.amp_dtype, self.config.channels_last)
        row.update(_metrics('eval', counts))
        if self.ema is not None:
            row.update(_metrics('ema_eval', evaluate(self.ema.module, self.val_loader, self.ctx, self.amp_dtype,
                                                     self.config.channels_last)[0]))
        row['train_bad_images'] = self._count_unreadable(replaced, self.train_images, epoch,
                                                         'replaced by the next readable image')
        row['eval_bad_images'] = self._count_unreadable(skipped, self.val_images, epoch, 'skipped in evaluation')
        return row

    def _distribute_bn(self) -> None:
        """Average the BatchNorm running statistics of the model and of the EMA over the processes (timm's
        ``--dist-bn reduce``), so that every process evaluates the weights that the checkpoint keeps."""
        if self.ctx.distributed:
            for model in (self.model, self.ema):
                if model is not None:
                    distribute_bn(model, self.ctx.world_size, reduce=True)

    def _count_unreadable(self, local: List[int], images: EvalImages, epoch: int, fate: str) -> int:
        """The number of distinct unreadable images that the processes met (``local``: this process's indices);
        a warning names a few."""
        indices = sorted(set().union(*all_gather_objects(sorted(set(local)), self.ctx)))
        if indices and self.ctx.is_main:
            more = ', ...' if len(indices) > 5 else ''
            print(f'srm-zoo train: warning: epoch {epoch + 1}: {len(indices)} unreadable {images.split} image(s) '
                  f'{fate}: {", ".join(image_paths(images, indices[:5]))}{more}', file=sys.stderr, flush=True)
        return len(indices)

    def _train_one_epoch(self, epoch: int) -> Tuple[float, float, List[int]]:
        """The epoch's mean training loss, images per second and this process's unreadable training images."""
        model, device, accum = self.train_model, self.ctx.device, self.config.grad_accum
        model.train()
        skips_before = cudagraph_skips() if self.cuda_graphs else 0
        num_batches = len(self.train_loader)
        totals = torch.zeros(2, dtype=torch.float64, device=device)
        replaced: List[int] = []
        start = time.perf_counter()
        batches = progress(self.train_loader, num_batches, f'epoch {epoch + 1}/{self.epochs}', self.ctx.is_main)
        for index, (images, targets, unreadable) in enumerate(batches):
            replaced += unreadable
            images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            if self.config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            if self.mixup is not None:
                images, targets = self.mixup(images, targets)
            boundary = (index + 1) % accum == 0 or index + 1 == num_batches
            sync = nullcontext() if boundary or self.ddp is None else self.ddp.no_sync()
            if self.cuda_graphs:  # a new generation of CUDA graphs: the last one's outputs are no longer read
                torch.compiler.cudagraph_mark_step_begin()
            with sync:
                with torch.autocast(device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    loss = self.criterion(model(images), targets)
                self.scaler.scale(loss / _group_size(index, num_batches, accum)).backward()
            if boundary:
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=not self.cuda_graphs)
                if self.ema is not None:
                    self.ema.update(self.model)
            totals += torch.stack((loss.detach().double() * images.shape[0],
                                   torch.tensor(float(images.shape[0]), dtype=torch.float64, device=device)))
        elapsed = time.perf_counter() - start
        skipped = cudagraph_skips() - skips_before if self.cuda_graphs else 0
        if skipped and self.ctx.is_main:
            print(f'srm-zoo train: epoch {epoch + 1}: {describe_skips(skipped)}', flush=True)
        all_reduce_sum(totals, self.ctx)
        train_loss = float(totals[0] / totals[1])
        if not math.isfinite(train_loss):
            raise UserError(f'The training loss became {train_loss} in epoch {epoch + 1}; lower the learning rate '
                            'or check the data.')
        return train_loss, float(totals[1]) / elapsed, replaced

    def _checkpoint(self, epoch: int) -> Dict[str, Any]:
        return dict(
            epoch=epoch, model_name=self.config.model, model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(), ema=self.ema.state_dict() if self.ema is not None else None,
            recipe=self.recipe.to_dict(), config=self.config.to_dict(), class_names=self.class_names,
            data_config=dict(self.data_config), history=self.history,
            rng=all_gather_objects(rng_state(), self.ctx), versions=software_versions(),
        )

    def _save(self, epoch: int) -> None:
        checkpoint = self._checkpoint(epoch)  # every rank joins the RNG gather
        if self.ctx.is_main:
            save_checkpoint(checkpoint, self.checkpoint_path)
            write_log(self.history, self.output)
        barrier(self.ctx)

    def _export(self) -> None:
        model = self.ema.module if self.ema is not None else self.model
        model.to(memory_format=torch.contiguous_format)  # safetensors stores contiguous tensors only
        # no weight tag's description applies to this run's weights (a tagged name gave only its preprocessing)
        model.pretrained_cfg = {k: v for k, v in model.pretrained_cfg.items() if k not in _TAG_FIELDS}
        model_args = attention_kwargs(self.config.model, self.config.attention) or None
        save_hf_folder(model, str(self.output / MODEL_FOLDER), model_args=model_args,
                       model_config=dict(label_names=self.class_names), data_config=dict(self.data_config))


@torch.no_grad()
def evaluate(model: nn.Module, loader, ctx: DistContext, amp_dtype: Optional[torch.dtype] = None,
             channels_last: bool = False) -> Tuple[Counts, List[int]]:
    """The counts over every readable image of an :func:`~.data.eval_loader`'s images, summed over the
    processes (unreadable images are skipped, as ``srm-zoo eval`` does), and this process's unreadable images."""
    was_training = model.training
    model.eval()
    counts, unreadable = Counts(), []
    for images, targets, _, bad in loader:
        unreadable += bad.tolist()
        if images is None:
            continue
        images = images.to(ctx.device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(ctx.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            counts += score_batch(model(images), targets)
    model.train(was_training)
    return Counts.from_tensor(all_sum(counts.to_tensor(), ctx)), unreadable


def _metrics(prefix: str, counts: Counts) -> Dict[str, Optional[float]]:
    """The log row's loss, top-1 and top-5 of one evaluation."""
    return {f'{prefix}_loss': counts.loss, f'{prefix}_top1': counts.top1, f'{prefix}_top5': counts.top5}


def _group_size(index: int, num_batches: int, accum: int) -> int:
    """The number of batches in the accumulation group of batch ``index``: ``accum``, or fewer in the epoch's
    last, incomplete group, whose losses timm's train.py averages over the batches it has."""
    return min(accum, num_batches - index // accum * accum)


def _check_step_batch(batch_size: int, config: TrainConfig, recipe: Recipe, world_size: int) -> None:
    """Refuse steps of a single image per process: BatchNorm in training mode (SRM's included) needs two."""
    if batch_size >= 2:
        return
    if config.batch_size is not None:
        how = 'Use --batch-size 2 or more.'
    else:
        how = (f"The recipe's global batch of {recipe.batch_size} over {world_size} process(es) x --grad-accum "
               f'{config.grad_accum} leaves {batch_size}; lower --grad-accum or give --batch-size 2 or more.')
    raise UserError(f'Each process needs at least 2 images per step (BatchNorm, SRM\'s included, normalises over '
                    f'the batch in training), not {batch_size}. {how}')


def _check_resumed_classes(names: List[str], recorded: List[str], split: str) -> None:
    """Refuse to resume a run on data whose classes (in label order) differ from the checkpoint's."""
    if names == recorded:
        return
    new, gone = [n for n in names if n not in recorded], [n for n in recorded if n not in names]
    differences = (([f'new in the data: {", ".join(map(repr, new))}'] if new else [])
                   + ([f'missing from the data: {", ".join(map(repr, gone))}'] if gone else [])) \
        or ['the same classes in another label order']
    raise UserError(f'--resume needs the classes of the checkpointed run; the class folders of split {split!r} '
                    f'differ from its {len(recorded)}: {"; ".join(differences)}. Restore them, or start a new run '
                    'with another --output.')


def _describe(row: Dict[str, Any], epochs: int) -> str:
    ema = f', EMA top-1 {row["ema_eval_top1"]:.2f}' if 'ema_eval_top1' in row else ''
    return (f'epoch {row["epoch"]}/{epochs}: train loss {row["train_loss"]:.4f}, eval top-1 {row["eval_top1"]:.2f} '
            f'top-5 {row["eval_top5"]:.2f}{ema}, lr {row["lr"]:.3g}, {row["train_samples_per_sec"]:.0f} img/s')
