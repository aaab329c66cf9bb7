"""Report building: each section turns one stage's outputs into numbers, figures and markdown."""
