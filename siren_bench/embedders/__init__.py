"""Audio (and text) embedders the metrics read: one interface, local weights, pinned hashes."""
