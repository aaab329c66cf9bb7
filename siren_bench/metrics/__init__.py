"""Metric arithmetic on embeddings and class probabilities, in float64, with no hidden randomness.

Each function takes arrays (not audio) so it can be checked against known answers; the recipes
(siren_bench/recipes.py) decide which embedder, framing and options produce those arrays.

Each metric name is registered by the module that computes it (siren_bench/registry.py METRICS);
siren_bench/scoring.py imports the modules, which registers them. This package's __init__ stays
empty so that code needing only the arithmetic (the report's paired bootstrap) imports no more.
"""
