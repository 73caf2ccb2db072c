"""Turning trained weights into a release: measured accuracy, weight files and a manifest entry."""
from .measure import measure_accuracy
from .release import embed_release, export_measured, load_trained

__all__ = ['measure_accuracy', 'load_trained', 'embed_release', 'export_measured']
