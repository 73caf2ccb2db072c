"""``srm-zoo convert official CHECKPOINT --model NAME --out FILE.safetensors``: the SRM authors' checkpoints."""
import argparse

from ..catalogue import get_entry_and_tag
from ..conversion import convert_official, write_safetensors
from ..paths import check_output_file


def run(args: argparse.Namespace) -> int:
    get_entry_and_tag(args.model)  # an unknown name or tag or output path fails here, before any file is read
    check_output_file(args.out, '--out', inputs=(args.checkpoint,), suffix='.safetensors')
    model = convert_official(args.checkpoint, args.model)
    write_safetensors(model.state_dict(), args.out, metadata={
        'format': 'pt', 'source': 'srm-authors', 'architecture': args.model})
    print(f'{args.checkpoint} -> {args.out} ({args.model}, {model.num_classes} classes)')
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        'convert', help="convert the SRM authors' checkpoints to this zoo's models",
        description=__doc__.split(':', 1)[1].strip() + " The authors' checkpoint (their train script's "
        "checkpoint.pth.tar / model_best.pth.tar with 'module.' keys and '.rclb.' SRM layers) is loaded with "
        "weights_only=True; one that does not fit the model is refused with its first mismatching keys.")
    parser.add_argument('format', choices=('official',), help="checkpoint format: 'official' (the authors' code)")
    parser.add_argument('checkpoint', help="the authors' checkpoint file")
    parser.add_argument('--model', required=True, help='zoo model, e.g. srm_resnet50')
    parser.add_argument('--out', required=True, help='output .safetensors file')
    parser.set_defaults(run=run)
