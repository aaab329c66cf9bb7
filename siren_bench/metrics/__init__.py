"""Metric arithmetic on embeddings and class probabilities, in float64, with no hidden randomness.

Each function takes arrays (not audio) so it can be checked against known answers; the recipes
(siren_bench/eval/recipes.py) decide which embedder, framing and options produce those arrays.
"""
