"""srm-zoo: Style-based Recalibration Module (SRM) networks as timm models.

``import srm_zoo`` registers every SRM model with timm, so that
``timm.create_model('srm_resnet50')`` and ``timm.list_models('srm_*')`` work.
"""
from .catalogue import CATALOGUE, get_entry
from .layers import SRM
from .models import CifarResNet, SRMResNet

__version__ = '0.1.0'
