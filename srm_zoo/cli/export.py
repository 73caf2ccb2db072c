"""``srm-zoo export MODEL --checkpoint FILE --out DIR``: write a Hugging Face Hub repository folder.

The folder gets model.safetensors and config.json in timm's format, a model card (README.md,
with the measured results of --results) and srm_zoo_release.json for `srm-zoo publish`.
"""
import argparse

from ..hub.export import export_release


def run(args: argparse.Namespace) -> int:
    release = export_release(args.model, args.checkpoint, args.out, results=args.results, repo_id=args.repo_id,
                             source=args.source, use_ema=args.use_ema)
    print(f'Exported {release.model}.{release.tag} to {args.out} (model.safetensors sha256 {release.sha256}, '
          f'{len(release.metrics)} measured result(s)).')
    print(f'Publish it with: srm-zoo publish {args.out} --repo-id {release.repo_id}')
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser('export', help='turn a checkpoint into a Hub repository folder with a model card',
                                   description=__doc__.split(':', 1)[1].strip(),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('model', help='model name, optionally with its tag (srm_resnet50 or srm_resnet50.official_in1k)')
    parser.add_argument('--checkpoint', required=True,
                        help='checkpoint file: a state dict (plain, or under state_dict/state_dict_ema/model), '
                             '.pth/.pth.tar or .safetensors, or an srm-zoo train checkpoint.pth')
    parser.add_argument('--out', required=True, help='folder to write (created if needed)')
    parser.add_argument('--results', default=None,
                        help='results JSON of `srm-zoo eval` on this checkpoint (one object or a list, one per dataset)')
    parser.add_argument('--repo-id', default=None, help='Hub repository the card names (default: <org>/<model>.<tag>)')
    parser.add_argument('--source', default=None,
                        help='where the weights come from, for the provenance record (default: the checkpoint file name)')
    parser.add_argument('--use-ema', action='store_true',
                        help='export the EMA weights of the checkpoint (under state_dict_ema, model_ema, or ema '
                        'in an srm-zoo train checkpoint): the weights to publish when the recipe keeps an EMA')
    parser.set_defaults(run=run)
