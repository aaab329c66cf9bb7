"""Data sources: SynthCaps (procedural) and AudioCaps (local files), and the manifest."""
