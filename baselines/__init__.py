"""Baseline text-to-audio generators trained by the pipeline on Siren's tokens and captions."""
