"""Training SRM networks: declarative recipes and a torchrun-ready training loop."""
from ..catalogue import ATTENTIONS, attention_kwargs
from .config import TrainConfig
from .loop import evaluate, train
from .recipes import RECIPES, Recipe, get_recipe

__all__ = ['ATTENTIONS', 'TrainConfig', 'train', 'evaluate', 'attention_kwargs', 'RECIPES', 'Recipe', 'get_recipe']
