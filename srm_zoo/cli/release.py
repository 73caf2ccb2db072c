"""``srm-zoo release MODEL.TAG --checkpoint FILE --data PATH --embed``: measure trained weights and release them."""
import argparse
from pathlib import Path

from ..errors import UserError
from ..hub.cards import write_model_cards
from ..manifest import reload_manifest, write_release
from ..releasing import embed_release


def _comparison(values):
    compare = {}
    for value in values or ():
        attention, sep, path = value.partition('=')
        if not sep or attention not in ('none', 'se'):
            raise UserError(f'--compare takes ATTENTION=CHECKPOINT with ATTENTION none or se, got {value!r}.')
        compare[attention] = path
    return compare


def run(args: argparse.Namespace) -> int:
    if not args.embed:
        raise UserError('Only releases embedded in the package (--embed) are made by this command so far; '
                        'Hub releases go through `srm-zoo export` and `srm-zoo publish`.')
    release = embed_release(args.model, args.checkpoint, args.data, args.split, _comparison(args.compare))
    write_release(release)
    reload_manifest()
    changed = write_model_cards(Path(args.cards))
    metric = release.metrics[0]
    print(f'{release.name}: top-1 {metric.top1:.2f}, top-5 {metric.top5:.2f} on {metric.num_images} {metric.split} '
          f'images of {metric.dataset}; weights in srm_zoo/weights/{release.embedded}, sha256 {release.sha256}')
    for attention, result in release.provenance['comparison'].items():
        print(f'  {attention}: top-1 {result["top1"]:.2f}, top-5 {result["top5"]:.2f}')
    print(f'Updated {len(changed)} model card(s): {", ".join(changed) or "none"}')
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        'release', help='measure trained weights and record them as a release (manifest entry + weight files)',
        description=__doc__.split(':', 1)[1].strip() + ' Accuracy is measured with timm\'s evaluation transform '
        "for the tag's pretrained cfg; the manifest entry records it with the weights' sha256 and the provenance "
        '(recipe, training command and seed when CHECKPOINT is an srm-zoo train checkpoint).')
    parser.add_argument('model', help='model and tag, e.g. srm_resnet20_cifar.sklearn_digits')
    parser.add_argument('--checkpoint', required=True,
                        help='srm-zoo train checkpoint.pth (EMA weights when kept) or a weights file')
    parser.add_argument('--data', required=True, help='image folder root')
    parser.add_argument('--split', default='test', help='split folder to measure on')
    parser.add_argument('--embed', action='store_true', help='embed the weights in the package (srm_zoo/weights)')
    parser.add_argument('--compare', action='append', metavar='ATTENTION=CHECKPOINT',
                        help='a counterpart trained the same way (none or se) to measure alongside; repeatable')
    parser.add_argument('--cards', default='model_cards', help='folder of the model cards to regenerate')
    parser.set_defaults(run=run)
