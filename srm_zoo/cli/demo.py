"""``srm-zoo demo``: build an SRM model, run it on an input and show what SRM does."""
import argparse

import timm
import torch

from ..stats import model_stats


def run(args: argparse.Namespace) -> int:
    torch.manual_seed(0)
    model = timm.create_model(args.model).eval()
    size = model.pretrained_cfg['input_size']
    images = torch.randn(2, *size)
    with torch.no_grad():
        logits = model(images)
        gates = [m.gate(x) for m, x in _srm_inputs(model, images)]
    stats = model_stats(args.model)
    print(f'{args.model}: {stats.params_m:.3f}M params, {stats.gmacs:.3f} GMACs at {size}')
    print(f'logits {tuple(logits.shape)}, finite: {bool(torch.isfinite(logits).all())}')
    print(f'{len(gates)} SRM gates, mean gate at initialisation: {torch.cat([g.flatten() for g in gates]).mean():.3f}')
    return 0


def _srm_inputs(model, images):
    """(SRM module, its input) pairs seen in one forward pass."""
    from ..layers import SRM
    seen = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append((mod, inp[0])))
             for m in model.modules() if isinstance(m, SRM)]
    model(images)
    for hook in hooks:
        hook.remove()
    return seen


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser('demo', help='run an SRM model on an input', description=__doc__.split(':', 1)[1].strip())
    parser.add_argument('--model', default='srm_resnet20_cifar', help='model name')
    parser.set_defaults(run=run)
