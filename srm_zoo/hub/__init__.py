"""Weights on the Hugging Face Hub: verified loading, export to a Hub repository folder, model cards, publishing."""
