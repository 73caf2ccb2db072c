"""``srm-zoo train``: train an SRM model from a recipe (``torchrun`` for several processes or nodes)."""
import argparse
import sys

from ..compiling import COMPILE_MODES
from ..training import ATTENTIONS, RECIPES, TrainConfig, train
from ._help import DefaultsHelpFormatter
from ._output import write_rows
from ._types import non_negative_int, positive_float, positive_int, random_seed


def run(args: argparse.Namespace) -> int:
    if args.list_recipes:
        write_rows([dict(recipe=r.name, epochs=r.epochs, batch_size=r.batch_size, opt=r.opt, lr=r.lr,
                         sched=r.sched, description=r.description) for r in RECIPES.values()], args.format or 'table',
                   stream=sys.stdout)
        return 0
    if args.format is not None:
        args.parser.error('--format says how --list-recipes prints the recipes: add --list-recipes.')
    missing = [flag for flag, value in (('--model', args.model), ('--data', args.data)) if not value]
    if missing:
        args.parser.error(f'{" and ".join(missing)} required (or --list-recipes)')
    config = TrainConfig(
        model=args.model, data=args.data, recipe=args.recipe, output=args.output, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, grad_accum=args.grad_accum, seed=args.seed,
        attention=args.attention, img_size=args.img_size, train_split=args.train_split,
        val_split=args.val_split, workers=args.workers, amp=args.amp, channels_last=args.channels_last,
        compile=args.compile, compile_mode=args.compile_mode, sync_bn=args.sync_bn,
        initial_checkpoint=args.initial_checkpoint, device=args.device, resume=args.resume)
    train(config)
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        'train', help='train a model from a recipe (single process or torchrun DDP)',
        description=__doc__.split(':', 1)[1].strip() + ' Writes OUTPUT/checkpoint.pth every epoch (atomically), '
        'OUTPUT/log.csv and log.jsonl, and at the end OUTPUT/model/ (model.safetensors + config.json). '
        'Example: torchrun --nproc_per_node 8 -m srm_zoo train --model srm_resnet50 --data /imagenet '
        '--recipe official --amp bf16 --channels-last --output runs/srm50',
        formatter_class=DefaultsHelpFormatter)
    parser.add_argument('--model', help='model name, optionally with a tag (its pretrained cfg sets the data '
                        'preprocessing), e.g. srm_resnet50 or srm_resnet20_cifar.sklearn_digits')
    parser.add_argument('--data', help='image folder root with one sub-folder per split, each with one folder per class')
    parser.add_argument('--recipe', default='official', choices=sorted(RECIPES), help='training recipe')
    parser.add_argument('--list-recipes', action='store_true', help='describe the recipes and exit')
    parser.add_argument('--format', choices=('table', 'csv', 'json'), default=None,
                        help='--list-recipes format (default: table)')
    parser.add_argument('--output', default='output/train', help='run folder (checkpoint, logs, final model)')
    parser.add_argument('--resume', action='store_true', help='continue the run in --output from its checkpoint')
    parser.add_argument('--epochs', type=positive_int, default=None, help="epochs (default: the recipe's)")
    parser.add_argument('--batch-size', type=positive_int, default=None,
                        help="images per process per step, at least 2 (default: the recipe's global batch / processes / "
                        'accumulation); the last incomplete batch of an epoch is dropped')
    parser.add_argument('--lr', type=positive_float, default=None,
                        help="learning rate (default: the recipe's, scaled linearly to the global batch)")
    parser.add_argument('--grad-accum', type=positive_int, default=1,
                        help="batches accumulated per optimiser step (an epoch's last, incomplete group averages over the "
                        'batches it has)')
    parser.add_argument('--seed', type=random_seed, default=0, help='random seed (each process adds its rank)')
    parser.add_argument('--attention', choices=ATTENTIONS, default='srm',
                        help='block attention: SRM, or the SE / plain counterpart for comparisons')
    parser.add_argument('--img-size', type=positive_int, default=None,
                        help="input size (default: the model's pretrained cfg)")
    parser.add_argument('--train-split', default='train', help='training split folder')
    parser.add_argument('--val-split', default='validation', help='evaluation split folder (timm synonyms: val, ...)')
    parser.add_argument('--workers', type=non_negative_int, default=4, help='data loading workers per process')
    parser.add_argument('--amp', choices=('none', 'bf16', 'fp16'), default='none', help='mixed precision')
    parser.add_argument('--channels-last', action='store_true', help='channels_last memory format')
    parser.add_argument('--compile', action='store_true', help='torch.compile the model for training')
    parser.add_argument('--compile-mode', choices=COMPILE_MODES, default=None,
                        help="mode of --compile (default: torch.compile's); on CUDA, reduce-overhead replays each "
                        'step as CUDA graphs (the gradients then stay allocated between steps)')
    parser.add_argument('--sync-bn', action='store_true', help='SyncBatchNorm across processes (CUDA only)')
    parser.add_argument('--initial-checkpoint', default=None,
                        help='start from these weights (.safetensors or torch state dict), e.g. from srm-zoo graft')
    parser.add_argument('--device', choices=('cpu', 'cuda'), default=None, help='default: cuda when available')
    parser.set_defaults(run=run, parser=parser)
