"""torch.hub entry points of srm-zoo: ``torch.hub.load(<repo>, 'srm_resnet50', pretrained=False)``."""
dependencies = ['torch', 'timm']

from srm_zoo.hub_entries import hub_entrypoints as _hub_entrypoints  # noqa: E402

globals().update(_hub_entrypoints())
