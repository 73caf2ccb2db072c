"""``srm-zoo graft --from CHECKPOINT_OR_TIMM_NAME --model NAME --out FILE.safetensors``: SRM from a plain ResNet."""
import argparse

import timm

from ..catalogue import CATALOGUE, get_entry_and_tag
from ..conversion import graft, write_safetensors
from ..errors import UserError
from ..paths import check_output_file


def _check_srm_model(name: str) -> None:
    """Refuse a --model that is not an SRM model of the zoo, saying where a plain timm model goes."""
    arch = name.split('.', 1)[0]
    if arch not in CATALOGUE and timm.is_model(arch):
        example = f'srm_{arch}' if f'srm_{arch}' in CATALOGUE else 'srm_resnet50'
        raise UserError(f'--model takes the SRM model to build (e.g. {example}; `srm-zoo list` shows them), but '
                        f'{name!r} is a plain timm model: pass it as the source with --from {name}.')
    get_entry_and_tag(name)


def run(args: argparse.Namespace) -> int:
    _check_srm_model(args.model)  # an unknown name or output path fails here, before any file is read
    check_output_file(args.out, '--out', inputs=(args.source,), suffix='.safetensors')
    model = graft(args.source, args.model)
    write_safetensors(model.state_dict(), args.out, metadata={
        'format': 'pt', 'grafted_from': args.source, 'architecture': args.model})
    print(f'{args.source} -> {args.out} ({args.model}, gates start at 0.5; fine-tune with '
          f'`srm-zoo train --recipe graft_finetune --initial-checkpoint {args.out}`)')
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        'graft', help='initialise an SRM network from a pretrained plain ResNet (function-preserving)',
        description=__doc__.split(':', 1)[1].strip() + ' The grafted network computes the same function as the '
        "source in eval mode: every SRM gate starts at exactly 0.5 and the BatchNorm feeding it is doubled. "
        'Fine-tune it with `srm-zoo train --model NAME --recipe graft_finetune --initial-checkpoint FILE`.')
    parser.add_argument('--from', dest='source', required=True,
                        help='plain ResNet weights: a .safetensors / torch checkpoint, or a timm model name whose '
                             'pretrained weights are available (e.g. resnet50.a1_in1k)')
    parser.add_argument('--model', required=True, help='SRM model of the same shape, e.g. srm_resnet50')
    parser.add_argument('--out', required=True, help='output .safetensors file')
    parser.set_defaults(run=run)
