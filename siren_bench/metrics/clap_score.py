"""CLAP score: cosine similarity between each clip's audio embedding and its caption's text
embedding, paired by clip id. Reported raw (about 0.2-0.6 for real CLAP models); papers that
print it x 100 are matched by `x100`, labelled as such, never silently."""

from __future__ import annotations

import numpy as np

from siren_bench.metrics.base import MetricInputs, clip_level
from siren_bench.metrics.bootstrap import bootstrap
from siren_bench.registry import METRICS


def clap_scores(audio: dict[str, np.ndarray], text: dict[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """Per-clip raw cosine for every clip id present in both (ids must match exactly)."""
    if set(audio) != set(text):
        only_audio = sorted(set(audio) - set(text))
        only_text = sorted(set(text) - set(audio))
        raise ValueError(f"CLAP score pairs audio and captions by clip id: {len(only_audio)} clips without a caption "
                         f"(e.g. {only_audio[:3]}), {len(only_text)} captions without audio (e.g. {only_text[:3]})")
    ids = sorted(audio)
    a = np.stack([np.asarray(audio[i], dtype=np.float64).reshape(-1) for i in ids])
    t = np.stack([np.asarray(text[i], dtype=np.float64).reshape(-1) for i in ids])
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(t, axis=1)
    if np.any(norms == 0):
        raise ValueError("a zero audio or text embedding has no direction: cosine undefined")
    return ids, np.sum(a * t, axis=1) / norms


def score_clap(inputs: MetricInputs) -> dict:
    """Mean cosine between each generated clip's audio embedding and its caption's text embedding."""
    if inputs.text is None:
        raise ValueError("clap: caption text embeddings are needed")
    ids = inputs.ids
    audio = {i: clip_level(inputs.generated[i].frames)[0] for i in ids}
    missing = sorted(set(ids) - set(inputs.text))
    if missing:
        raise ValueError(f"clap: {len(missing)} generated clips have no caption embedding (e.g. {missing[:3]})")
    clip_ids, cosines = clap_scores(audio, {i: inputs.text[i] for i in ids})
    if inputs.value_only:
        return {"value": float(cosines.mean())}
    out = bootstrap(lambda idx: float(cosines[idx].mean()), len(clip_ids), inputs.n_boot, inputs.seed).as_dict()
    out.update(scale="raw cosine", value_x100=100.0 * out["value"], per_clip=dict(zip(clip_ids, cosines.tolist())))
    return out


# Registered by call, not by decorator: mutation testing (mutmut) skips decorated functions.
METRICS.add("clap", score_clap)
