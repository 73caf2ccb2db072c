"""SRM models; importing this package registers them with timm."""
from .srm_resnet import SRMResNet
from .srm_resnet_cifar import CifarResNet
