"""The paper's RVQ diagnostics: fidelity vs depth, cross-layer orthogonality, semantic richness."""
