"""siren-bench: a reproducibility harness for LM-based text-to-audio generation around Siren."""

__version__ = "0.1.0"
