"""Training SRM networks: declarative recipes and a torchrun-ready training loop."""
from .config import ATTENTIONS, TrainConfig
from .loop import attention_kwargs, evaluate, train
from .recipes import RECIPES, Recipe, get_recipe

__all__ = ['ATTENTIONS', 'TrainConfig', 'train', 'evaluate', 'attention_kwargs', 'RECIPES', 'Recipe', 'get_recipe']
