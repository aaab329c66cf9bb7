"""The real run's GPU benchmark, in one command, for a lent GPU (`python benchmarks/gpu/run.py`).

Random weights at the official sizes (conf/model/siren_1_6b.yaml; DAC 16 kHz's architecture):
these time the computation, not the quality. What it measures, and the issue's targets:

  train      one Siren expert's training step through the one engine (siren_bench/trainer.py:
             bf16 autocast, AdamW, clipping) at the official batch (24 clips x 300 frames):
             tokens/s (frames x the expert's codebooks), model FLOPs utilisation (FLOPs counted
             exactly by torch's FlopCounterMode on the meta device, over the GPU's dense bf16
             peak) and peak memory. Target: MFU >= 40 % on an H100-class GPU.
  generate   the full six-expert Siren generating with its KV caches under bf16 autocast, at
             batch 1 and 64: real-time factor = seconds of audio made per second (50 frames/s).
             Targets: >= 10x at batch 1, >= 200x at batch 64.
  memory     each baseline matched to Siren 1.6B (conf/baselines/matched_1_6b.yaml, one model of
             about 1.6 B parameters) trained one step in one process at the official batch: peak
             memory, or where it runs out, the largest batch (halving) that fits one GPU, which
             says how many data-parallel ranks (or model.activation_checkpointing) it needs.
  tokenize   DAC 16 kHz encoding batches of 10 s clips: clips/s.
  estimate   no GPU needed: the GPU-hours of each stage of the full AudioCaps run, from the
             counted FLOPs and stated assumptions (utilisation, peak, epochs). An estimate, and
             labelled so wherever it is quoted.

`--tiny --device cpu` runs every part at toy size (tests/test_gpu_benchmark.py does, so the
script keeps working while no GPU is lent). Results go to stdout and, as JSON, to --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from siren_bench.config import ModelConfig, SirenConfig  # noqa: E402
from siren_bench.models.collaborative import Siren  # noqa: E402
from siren_bench.models.sampling import SamplingConfig  # noqa: E402
from siren_bench.models.siren import SirenExpert, Text  # noqa: E402
from siren_bench.models.train import optimizer_for  # noqa: E402
from siren_bench.trainer import Trainer  # noqa: E402

FRAMES_PER_SECOND = 50  # DAC 16 kHz: hop 320
# Dense bf16 tensor-core peaks from the vendors' datasheets (TFLOP/s, without sparsity).
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0}
TRAIN_CLIPS = 49_838  # AudioCaps 1.0 train list
TEST_CLIPS = 975
SYSTEMS_RENDERED = 7  # siren, siren_aligned and the four baselines at about Siren's size, + resynthesis (cheap)


def siren_config(tiny: bool) -> SirenConfig:
    if tiny:
        return SirenConfig(n_codebooks=4, codebook_size=64, code_dim=16, text_dim=32, dim=64, n_heads=4, n_kv_heads=2,
                           temporal_layers=2, depth_layers=1)
    values = yaml.safe_load((REPO / "conf" / "model" / "siren_1_6b.yaml").read_text())
    return SirenConfig(**{k: v for k, v in values.items() if k in SirenConfig.__dataclass_fields__})


def dac_model(tiny: bool):
    from transformers import DacConfig, DacModel

    if tiny:
        return DacModel(DacConfig(encoder_hidden_size=8, downsampling_ratios=[2, 4, 5, 8], decoder_hidden_size=32,
                                  n_codebooks=4, codebook_size=64, codebook_dim=8, sampling_rate=16000))
    return DacModel(DacConfig(encoder_hidden_size=64, downsampling_ratios=[2, 4, 5, 8], decoder_hidden_size=1536,
                              n_codebooks=12, codebook_size=1024, codebook_dim=8, sampling_rate=16000))


def random_batch(config: SirenConfig, batch: int, frames: int, text_tokens: int, device, generator=None):
    codes = torch.randint(0, config.codebook_size, (batch, config.n_codebooks, frames), generator=generator).to(device)
    text = Text(torch.randn(batch, text_tokens, config.text_dim, generator=generator).to(device),
                torch.ones(batch, text_tokens, dtype=torch.bool, device=device),
                torch.randn(batch, config.text_dim, generator=generator).to(device))
    return codes, text


def training_flops_per_frame(config: SirenConfig, frames: int, text_tokens: int) -> float:
    """FLOPs of one expert's forward and backward per frame, counted on the meta device."""
    with torch.device("meta"):
        expert = SirenExpert(config, config.expert_groups()[0])
        codes = torch.zeros(1, config.n_codebooks, frames, dtype=torch.long)
        text = Text(torch.zeros(1, text_tokens, config.text_dim), torch.ones(1, text_tokens, dtype=torch.bool),
                    torch.zeros(1, config.text_dim))
        with FlopCounterMode(display=False) as counter:
            expert.loss(codes, text).backward()
    return counter.get_total_flops() / frames


def dac_flops_per_second(tiny: bool) -> float:
    """FLOPs of DAC's encoder (and quantizer) per second of 16 kHz audio, counted on the meta device."""
    with torch.device("meta"):
        model = dac_model(tiny)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model.encode(torch.zeros(1, 1, 16000))
    return float(counter.get_total_flops())


def peak_tflops(device: torch.device, override: float | None) -> tuple[float | None, str]:
    if override:
        return override, "given"
    if device.type != "cuda":
        return None, "no GPU"
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return value, name
    return None, name


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_train(config: SirenConfig, device, batch: int, frames: int, text_tokens: int, steps: int, peak) -> dict:
    torch.manual_seed(0)
    expert = SirenExpert(config, config.expert_groups()[0]).to(device).train()
    settings = ModelConfig(**{k: getattr(config, k) for k in SirenConfig.__dataclass_fields__})
    trainer = Trainer("bench expert", expert, optimizer_for(expert, settings), steps=steps + 3, grad_clip=1.0,
                      checkpoint_every=10**9, stream=[0], state_file=None, device=device, warmup_steps=1, bf16=True)
    codes, text = random_batch(config, batch, frames, text_tokens, device, torch.Generator().manual_seed(0))
    step = lambda: trainer.update(lambda: (expert.loss(codes, text), {}))  # noqa: E731
    for _ in range(3):  # warm-up: kernels, allocator
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    began = time.perf_counter()
    for _ in range(steps):
        row = step()
    sync(device)
    seconds = (time.perf_counter() - began) / steps
    flops = training_flops_per_frame(config, frames, text_tokens) * batch * frames
    out = {"batch": batch, "frames": frames, "seconds_per_step": seconds, "last_loss": row["loss"],
           "tokens_per_s": batch * frames * len(config.expert_groups()[0]) / seconds,
           "parameters": sum(p.numel() for p in expert.parameters()), "tflops_per_step": flops / 1e12,
           "achieved_tflops": flops / seconds / 1e12}
    if peak:
        out["mfu"] = out["achieved_tflops"] / peak
    if device.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def bench_baseline_memory(config: SirenConfig, tiny: bool, device, batch: int, frames: int, text_tokens: int) -> dict:
    from baselines import registry

    overrides = yaml.safe_load((REPO / "conf" / "baselines" / ("tiny.yaml" if tiny else "matched_1_6b.yaml")).read_text())
    shape = {"n_codebooks": config.n_codebooks, "codebook_size": config.codebook_size, "code_dim": config.code_dim,
             "latent_dim": config.code_dim, "text_dim": config.text_dim, "max_frames": config.max_frames}
    settings = ModelConfig(**{k: getattr(config, k) for k in SirenConfig.__dataclass_fields__})
    results = {}
    for name in registry.names():
        torch.manual_seed(0)
        model, _ = registry.build(name, registry.architecture(name, config, overrides.get(name, {})), shape)
        model.set_code_table(torch.randn(config.n_codebooks, config.codebook_size, config.code_dim))
        if hasattr(model, "fit_normaliser"):
            model.fit_normaliser([torch.randint(0, config.codebook_size, (config.n_codebooks, frames))])
        model.to(device).train()
        entry = {"parameters": sum(p.numel() for p in model.parameters() if p.requires_grad), "batch": batch, "frames": frames}
        trainer = Trainer(f"memory {name}", model, optimizer_for(model, settings), steps=2, grad_clip=1.0,
                          checkpoint_every=10**9, stream=[0], state_file=None, device=device, bf16=True)
        size = batch
        while size >= 1:
            codes, text = random_batch(config, size, frames, text_tokens, device, torch.Generator().manual_seed(0))
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            try:
                trainer.update(lambda: (model.loss(codes, text), {}))
            except torch.OutOfMemoryError:
                entry.setdefault("out_of_memory_at_batch", []).append(size)
                trainer.optimizer.zero_grad(set_to_none=True)
                del codes, text
                size //= 2
                continue
            sync(device)
            entry["fits_batch"] = size
            if device.type == "cuda":
                entry["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            break
        results[name] = entry
        del model, trainer
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


def bench_generate(config: SirenConfig, device, batches: list[int], frames: int, text_tokens: int) -> dict:
    torch.manual_seed(0)
    model = Siren(config).to(device).eval()
    model.set_code_table(torch.randn(config.n_codebooks, config.codebook_size, config.code_dim).to(device))
    results = {}
    for batch in batches:
        _, text = random_batch(config, batch, 1, text_tokens, device, torch.Generator().manual_seed(batch))
        generator = torch.Generator(device).manual_seed(0)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            model.generate(text, 2, SamplingConfig(guidance=3.0), generator)  # warm-up
            sync(device)
            began = time.perf_counter()
            model.generate(text, frames, SamplingConfig(guidance=3.0), generator)
            sync(device)
        seconds = time.perf_counter() - began
        results[f"batch_{batch}"] = {"frames": frames, "seconds": seconds,
                                     "real_time_factor": batch * frames / FRAMES_PER_SECOND / seconds}
    return results


def bench_tokenize(tiny: bool, device, batch: int, clip_seconds: float, repeats: int) -> dict:
    from siren_bench.codecs import DacCodec

    torch.manual_seed(0)
    codec = DacCodec(dac_model(tiny).to(device).eval(), "dac_16khz (random weights)", "0" * 64)
    waves = torch.randn(batch, int(clip_seconds * 16000), generator=torch.Generator().manual_seed(0)).mul(0.1).to(device)
    with torch.no_grad():
        codec.encode(waves)  # warm-up
        sync(device)
        began = time.perf_counter()
        for _ in range(repeats):
            codes = codec.encode(waves)
        sync(device)
    seconds = time.perf_counter() - began
    return {"batch": batch, "clip_seconds": clip_seconds, "codes_shape": list(codes.shape),
            "clips_per_s": batch * repeats / seconds}


def bench_embed(tiny: bool, device, clips: int, batch: int) -> dict:
    """Scoring's embedding path from cold (decoding and resampling in threads, batched forwards,
    cache writes: evaluation/embedding.py), random weights of the clean recipe's VGGish and PANNs
    Cnn14 32 kHz, 10 s clips: clips/s per embedder."""
    import tempfile

    import numpy as np
    import soundfile as sf

    from siren_bench.cache import ContentCache
    from siren_bench.embedders.panns import CNN14_CONFIGS, Cnn14, PannsEmbedder
    from siren_bench.embedders.vggish import VGGishEmbedder, VGGishNetwork
    from siren_bench.evaluation.clipsets import folder_clips
    from siren_bench.evaluation.embedding import EmbeddingCompute, embed_clips
    from siren_bench.recipes import get_recipe

    seconds, recipe, results = (2.0 if tiny else 10.0), get_recipe("clean"), {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "clips"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for i in range(clips):
            sf.write(folder / f"c{i:04d}.wav", (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32), 16000)
        listed = [clip for _, clip in sorted(folder_clips(folder).clips.items())]
        torch.manual_seed(0)
        embedders = {"vggish": (VGGishEmbedder(VGGishNetwork(), "0" * 64, device=device), recipe.spec("fad")),
                     "panns_cnn14_32k": (PannsEmbedder(Cnn14(CNN14_CONFIGS[32000]), "1" * 64, device=device), recipe.spec("kl"))}
        for name, (embedder, spec) in embedders.items():
            sync(device)
            began = time.perf_counter()
            embed_clips(listed, spec, embedder, ContentCache(Path(tmp) / f"cache-{name}"),
                        compute=EmbeddingCompute(str(device), batch, loader_threads=2))
            sync(device)
            elapsed = time.perf_counter() - began
            results[name] = {"clips": clips, "clip_seconds": seconds, "batch_clips": batch, "seconds": elapsed,
                             "clips_per_s": clips / elapsed}
    return results


def estimate(config: SirenConfig, tiny: bool, peak: float, mfu: float, generation_mfu: float, epochs: float,
             seeds: int, text_tokens: int) -> dict:
    """GPU-hours of the full run's stages from counted FLOPs: an estimate, with its assumptions."""
    per_frame = training_flops_per_frame(config, 300, text_tokens)
    experts = len(config.expert_groups())
    train_frames = TRAIN_CLIPS * 300 * epochs  # 6 s crops, one per clip per epoch
    rate = peak * 1e12
    stage1 = per_frame * train_frames * experts / (rate * mfu) / 3600
    forward_per_frame = per_frame / 3  # backward ~ 2 x forward
    generated_frames = TEST_CLIPS * 10 * FRAMES_PER_SECOND * seeds * SYSTEMS_RENDERED
    generation = forward_per_frame * experts * generated_frames / (rate * generation_mfu) / 3600
    dac = dac_flops_per_second(tiny) * 10 * (TRAIN_CLIPS + 495 + TEST_CLIPS) / (rate * generation_mfu) / 3600
    return {
        "is_estimate": True,
        "assumptions": {"peak_bf16_tflops": peak, "training_mfu": mfu, "generation_and_tokenize_utilisation": generation_mfu,
                        "epochs_per_expert": epochs, "crop_frames": 300, "generation_seeds": seeds,
                        "systems_rendered": SYSTEMS_RENDERED, "train_clips": TRAIN_CLIPS,
                        "baselines": "each about Siren's size, so each costs about what Siren costs",
                        "alignment": "not estimated: its rollout count is a setting, not the paper's"},
        "training_tflops_per_frame_one_expert": per_frame / 1e12,
        "gpu_hours": {"stage1_siren_all_experts": stage1, "four_baselines": 4 * stage1,
                      "generation_all_systems": generation, "tokenize_dac_all_splits": dac},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="train,generate,memory,tokenize,embed,estimate")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="toy sizes (CPU check that the script runs)")
    parser.add_argument("--batch", type=int, default=24, help="training clips per step (official: 24 per GPU)")
    parser.add_argument("--frames", type=int, default=300, help="training crop in frames (official: 300 = 6 s)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--gen-frames", type=int, default=250, help="frames generated per run (50 = 1 s)")
    parser.add_argument("--gen-batches", default="1,64")
    parser.add_argument("--text-tokens", type=int, default=128)
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak, if the GPU is not in the table")
    parser.add_argument("--mfu", type=float, default=0.40, help="estimate: training utilisation assumed")
    parser.add_argument("--generation-utilisation", type=float, default=0.10, help="estimate: generation / DAC utilisation")
    parser.add_argument("--epochs", type=float, default=10.0, help="estimate: passes over the train list per expert")
    parser.add_argument("--seeds", type=int, default=3, help="estimate: generation seeds per system")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    config = siren_config(args.tiny)
    peak, gpu = peak_tflops(device, args.peak_tflops)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    results = {"device": str(device), "gpu": gpu, "torch": torch.__version__, "python": platform.python_version(),
               "config": "tiny" if args.tiny else "siren_1_6b", "peak_bf16_tflops": peak}
    if "train" in parts:
        results["train"] = bench_train(config, device, args.batch, args.frames, args.text_tokens, args.steps, peak)
    if "generate" in parts:
        results["generate"] = bench_generate(config, device, [int(b) for b in args.gen_batches.split(",")], args.gen_frames,
                                             args.text_tokens)
    if "memory" in parts:
        results["memory"] = bench_baseline_memory(config, args.tiny, device, args.batch, args.frames, args.text_tokens)
    if "tokenize" in parts:
        results["tokenize"] = bench_tokenize(args.tiny, device, 16 if device.type == "cuda" else 2, 10.0, 5 if device.type == "cuda" else 1)
    if "embed" in parts:  # the target: VGGish + PANNs + CLAP over 975 clips in under 60 s on one H100-class GPU
        results["embed"] = bench_embed(args.tiny, device, 975 if device.type == "cuda" else 4,
                                       32 if device.type == "cuda" else 2)
    if "estimate" in parts:
        results["estimate"] = estimate(config, args.tiny, peak or PEAK_BF16_TFLOPS["H100"], args.mfu,
                                       args.generation_utilisation, args.epochs, args.seeds, args.text_tokens)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return results


if __name__ == "__main__":
    main()
