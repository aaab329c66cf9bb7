"""Scoring audio folders under a named recipe: clip sets, cached embeddings, results, audit."""
