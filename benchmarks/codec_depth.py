"""Where the default codec's depth gain goes: its quantizer against its Griffin-Lim synthesis.

    python benchmarks/codec_depth.py [artifacts/smoke]

The mel codec (siren_bench/codecs/melrvq.py) quantizes log-mel frames and recovers the phase by
Griffin-Lim. For the test clips of a finished run, this decodes every depth 1..K, and the
unquantized latent, twice: with Griffin-Lim (what the codec does) and with each clip's own STFT
phase (an oracle no decoder has). The multi-scale mel distance to the original (the fidelity
diagnostic's) is printed per depth, with the full-depth gain over depth 1 and its 95 % interval
over clips. If the oracle-phase gain is much larger than Griffin-Lim's, phase recovery adds an
error that does not shrink with depth and dilutes the quantizer's gain. Nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from siren_bench.codecs.melrvq import MelRVQModel  # noqa: E402
from siren_bench.data.manifest import MANIFEST_NAME, load_waves, read_manifest  # noqa: E402
from siren_bench.diagnostics.fidelity import mel_distance, summarize  # noqa: E402


def distances(model: MelRVQModel, waves: np.ndarray) -> dict[str, np.ndarray]:
    """{"griffin_lim" | "oracle_phase": [depths + 1, clips] mel distances}; the last row is the unquantized latent."""
    wave = torch.from_numpy(waves)
    latent = model.encode_latent(wave)
    latents = [model.layer_vectors(model.quantize(latent, k)).sum(1).to(torch.float64) for k in range(1, model.config.n_codebooks + 1)]
    latents.append(latent)
    out = {}
    for name, decode in (("griffin_lim", model.synthesize), ("oracle_phase", lambda x: model.synthesize_with_phase(x, wave))):
        out[name] = np.array([[mel_distance(ref, est, model.config.sampling_rate) for ref, est in zip(waves, decode(x).numpy())]
                              for x in latents])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", nargs="?", default="artifacts/smoke", type=Path)
    args = parser.parse_args()
    model = MelRVQModel.from_pretrained(args.run_dir / "codec" / "model").eval()
    manifest = read_manifest(args.run_dir / "prepare" / MANIFEST_NAME)
    waves = load_waves(manifest[manifest["split"] == "test"], model.config.sampling_rate)
    waves = waves[:, : waves.shape[1] - waves.shape[1] % model.config.hop_length]
    torch.set_grad_enabled(False)
    table = distances(model, waves)
    depths = [str(k) for k in range(1, model.config.n_codebooks + 1)] + ["unquantized"]
    print(f"{len(waves)} test clips of {args.run_dir}; multi-scale mel distance (lower is better)\n")
    print("| synthesis | " + " | ".join(depths) + " | full-depth gain over depth 1 [95 % CI] |")
    print("| --- " * (len(depths) + 2) + "|")
    for name, rows in table.items():
        gain = summarize(1.0 - rows[-2] / rows[0])  # per clip: 1 - d_K / d_1
        print(f"| {name} | " + " | ".join(f"{r.mean():.4f}" for r in rows)
              + f" | {gain['mean']:.1%} [{gain['ci95_low']:.1%}, {gain['ci95_high']:.1%}] |")
    pooled = {name: 1.0 - rows[-2].mean() / rows[0].mean() for name, rows in table.items()}
    print("\nFull-depth gain of the mean distances: " + ", ".join(f"{k} {v:.1%}" for k, v in pooled.items()))


if __name__ == "__main__":
    main()
