"""``srm-zoo release MODEL.TAG --checkpoint FILE --data PATH (--embed | --out DIR [--repo-id ORG/NAME])``: measure trained weights and release them in one step."""
import argparse
from pathlib import Path
from typing import Any, Dict

from ..catalogue import get_entry_and_tag
from ..errors import UserError
from ..hub.export import check_export_dir, check_repo_id
from ..hub.publish import publish_folder
from ..manifest import MANIFEST_PATH, WEIGHTS_DIR, Metric, active_manifest_path, reload_manifest, write_release
from ..paths import check_output_dir
from ..releasing import embed_release, export_measured
from ..training.data import load_split
from .cards import add_readme_argument, readme_with_table, regenerate
from .publish import report_published


def _comparison(values) -> Dict[str, str]:
    compare = {}
    for value in values or ():
        attention, sep, path = value.partition('=')
        if not sep or attention not in ('none', 'se'):
            raise UserError(f'--compare takes ATTENTION=CHECKPOINT with ATTENTION none or se, got {value!r}.')
        compare[attention] = path
    return compare


def _check_embed_target() -> None:
    """Refuse --embed unless the active manifest is the package's own (the one in srm_zoo/weights) and that folder
    can be written (not so in a read-only installation)."""
    active = active_manifest_path()
    if active != MANIFEST_PATH:
        raise UserError(f'--embed writes the weights into the package (srm_zoo/weights) and records them in the '
                        f"package's manifest, but the active manifest is {active} (SRM_ZOO_MANIFEST). Unset "
                        'SRM_ZOO_MANIFEST to embed, or release to a Hub repository folder with --out DIR.')
    try:
        check_output_dir(WEIGHTS_DIR, '--embed')
    except UserError as error:
        raise UserError(f'{error} --embed writes the weights and the manifest into the installed package: embed '
                        'from a writable checkout (pip install -e .), or release to a Hub repository folder with '
                        '--out DIR.') from None


def _check_inputs(args: argparse.Namespace) -> Dict[str, str]:
    """Everything the release reads and where it writes, checked before any file is written; returns the
    --compare checkpoints by attention."""
    if args.embed and args.out:
        raise UserError('--embed and --out exclude each other: the release goes into the package or to a Hub '
                        'repository folder.')
    if args.embed and args.repo_id:
        raise UserError('--repo-id publishes a Hub repository folder written with --out; --embed puts the weights '
                        'into the package instead: leave --repo-id out, or use --out DIR.')
    if not (args.embed or args.out):
        raise UserError('Say where the release goes: --embed (weights in the package) or --out DIR (a Hub '
                        'repository folder; add --repo-id ORG/NAME to publish it).')
    get_entry_and_tag(args.model)
    compare = _comparison(args.compare)
    for path in (args.checkpoint, *compare.values()):
        if not Path(path).is_file():
            raise UserError(f'Checkpoint {path!r} does not exist or is not a file.')
    load_split(args.data, args.split, is_training=False)
    if args.embed or args.repo_id:
        check_output_dir(args.cards, '--cards')
        readme_with_table(args.readme)
    if args.embed:
        _check_embed_target()
    else:
        check_export_dir(args.out)
        if args.repo_id:
            check_repo_id(args.repo_id)
    return compare


def run(args: argparse.Namespace) -> int:
    compare = _check_inputs(args)
    recorded = _embed(args, compare) if args.embed else _hub(args, compare)
    if recorded:
        regenerate(Path(args.cards), readme_with_table(args.readme))
    return 0


def _report(name: str, metric: Metric, provenance: Dict[str, Any], where: str) -> None:
    """Print what a release measured (with its counterparts') and where its weights went."""
    print(f'{name}: top-1 {metric.top1:.2f}, top-5 {metric.top5:.2f} on {metric.num_images} {metric.split} '
          f'images of {metric.dataset}; {where}')
    for attention, result in provenance.get('comparison', {}).items():
        print(f'  {attention}: top-1 {result["top1"]:.2f}, top-5 {result["top5"]:.2f}')


def _embed(args: argparse.Namespace, compare: Dict[str, str]) -> bool:
    """Embed the release in the package and record it in the manifest; True: recorded."""
    release = embed_release(args.model, args.checkpoint, args.data, args.split, compare)
    write_release(release)
    reload_manifest()
    _report(release.name, release.metrics[0], release.provenance,
            f'weights in srm_zoo/weights/{release.embedded}, sha256 {release.sha256}')
    return True


def _hub(args: argparse.Namespace, compare: Dict[str, str]) -> bool:
    """Write the Hub repository folder, and publish it with --repo-id; True: recorded in the manifest."""
    exported = export_measured(args.model, args.checkpoint, args.data, args.split, Path(args.out),
                               repo_id=args.repo_id, compare=compare)
    _report(f'{exported.model}.{exported.tag}', exported.metrics[0], exported.provenance,
            f'Hub repository folder {args.out} (sha256 {exported.sha256})')
    if not args.repo_id:
        print(f'Publish it with: srm-zoo publish {args.out} --repo-id {exported.repo_id}')
        return False
    result = publish_folder(args.out, args.repo_id)
    report_published(result)
    reload_manifest()
    return result.manifest is not None


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        'release', help='measure trained weights and record them as a release (manifest entry + weight files)',
        description=__doc__.split(':', 1)[1].strip() + ' Accuracy is measured with timm\'s evaluation transform '
        "for the tag's pretrained cfg; the release record (the manifest entry, and srm_zoo_release.json with --out) "
        "holds it with the weights' sha256 and the provenance: CHECKPOINT's sha256, which of its weights (the EMA "
        'when it holds one), and the recipe, training command, seed and epochs when CHECKPOINT is an srm-zoo train '
        'checkpoint. CHECKPOINT must hold SRM weights of MODEL and every --compare checkpoint those of its '
        'counterpart: keys, shapes and the attention a train checkpoint records are checked before anything is '
        'measured.')
    parser.add_argument('model', help='model and tag, e.g. srm_resnet20_cifar.sklearn_digits')
    parser.add_argument('--checkpoint', required=True,
                        help='srm-zoo train checkpoint.pth (EMA weights when kept) or a weights file')
    parser.add_argument('--data', required=True, help='image folder root')
    parser.add_argument('--split', default='test', help='split folder to measure on')
    parser.add_argument('--embed', action='store_true', help='embed the weights in the package (srm_zoo/weights)')
    parser.add_argument('--compare', action='append', metavar='ATTENTION=CHECKPOINT',
                        help='a counterpart trained the same way (none or se) to measure alongside (with --embed '
                             'or --out); repeatable')
    parser.add_argument('--out', help='write a Hub repository folder here (instead of --embed)')
    parser.add_argument('--repo-id', help='with --out: publish the folder to this Hub repository and record it')
    parser.add_argument('--cards', default='model_cards',
                        help='folder of the model cards to regenerate once the release is recorded in the manifest '
                             '(--embed, or --out with --repo-id)')
    add_readme_argument(parser)
    parser.set_defaults(run=run)
