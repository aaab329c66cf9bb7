"""The `siren-bench` command line; each DVC stage calls one sub-command."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path

# Only this light module at the top: what cli.py imports at module level is in every stage's
# dvc deps (siren_bench/dvc_deps.py); each sub-command imports what it needs when it runs.
from siren_bench.errors import ConfigError, USER_ERRORS


STAGES = {
    "prepare": "build the clip manifest (SynthCaps or AudioCaps)",
    "codec": "train the small RVQ codec, or import pretrained codec weights",
    "tokenize": "encode every clip to RVQ codes",
    "diagnose": "fidelity vs depth, cross-layer orthogonality, semantic richness per layer",
    "evaluators": "train the smoke profile's metric models (SynthCaps tagger, small CLAP)",
    "train_siren": "Siren Stage 1: train each expert on the train split's codes and captions",
    "train_baselines": "train the baselines listed in eval.systems on Siren's tokens and captions",
    "align_siren": "anti-causal alignment: tune the coarse expert against a reward on the decoded audio",
    "sweep": "fidelity-capacity sweep: Siren and the shared LM retrained and scored at each RVQ depth",
    "report": "write reports/<profile>/ from the stage outputs that exist",
}


def _stage(args: argparse.Namespace) -> None:
    module = importlib.import_module(f"siren_bench.stages.{args.command}")
    out = module.run(args.params)
    print(f"{args.command}: wrote {out}")


def _params(args: argparse.Namespace) -> None:
    """Compose conf/ into params.yaml, as `dvc exp run -S ...` does before running."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from siren_bench.io import write_text_atomic

    with initialize_config_dir(config_dir=str(Path(args.conf).resolve()), version_base=None):
        composed = compose(config_name="config", overrides=args.overrides)
    write_text_atomic(args.out, OmegaConf.to_yaml(composed))
    print(f"params: wrote {args.out} ({' '.join(args.overrides) or 'defaults'})")


def _match_baselines(args: argparse.Namespace) -> None:
    """Each baseline's depth at which it has Siren's trainable parameters (baselines/sizing.py)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from baselines import sizing
    from siren_bench.config import baselines_config, model_config

    with initialize_config_dir(config_dir=str(Path(args.conf).resolve()), version_base=None):
        composed = compose(config_name="config", overrides=args.overrides)
    params = OmegaConf.create(OmegaConf.to_container(composed, resolve=True))
    architectures = baselines_config(params)
    matched = sizing.match_depths(sizing.siren_of(model_config(params)), architectures, list(architectures))
    print(f"Siren: {matched['siren_trainable_parameters']:,} trainable parameters")
    for name, m in matched["baselines"].items():
        flag = "" if abs(m["ratio"] - 1) <= sizing.TOLERANCE else "  (outside 10 %: change its width)"
        print(f"{name}: {', '.join(m['fields'])} = {m['depth']}: {m['parameters']:,} ({m['ratio']:.3f}x){flag}")
    print(OmegaConf.to_yaml(OmegaConf.create(sizing.overrides(matched, architectures))), end="")


def _recipe_and_loader(args: argparse.Namespace):
    """The recipe, the --metrics subset (None: all) and an embedder loader with the --pin'ned
    checkpoints, from the options `score` and `stats export` share."""
    from siren_bench.evaluation.embedding import EmbedderLoader, resolve_compute
    from siren_bench.recipes import get_recipe

    try:
        recipe = get_recipe(args.recipe)
    except KeyError as exc:
        raise ConfigError(exc.args[0]) from exc
    pins = {}
    for pin in args.pin:
        name, sep, digest = pin.partition("=")
        if not sep or not name or not digest:
            raise ConfigError(f"--pin takes CHECKPOINT=SHA256, got {pin!r}")
        pins[name] = digest
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    used = sorted({s.checkpoint for s in recipe.metrics if metrics is None or s.metric in metrics})
    unknown = sorted(set(pins) - set(used))
    if unknown:
        raise ConfigError(f"--pin {', '.join(unknown)}: the recipe {recipe.id} (metrics {metrics or 'all'}) uses no such "
                          f"checkpoint; it uses {used}")
    compute = resolve_compute(args.device, args.batch, args.loader_threads, f"siren-bench {args.command}")
    return recipe, metrics, EmbedderLoader(args.weights_dir, pins, compute)


@contextmanager
def _ranks(loader):
    """Under torchrun: the process group on the embedders' device (NCCL with cuda:LOCAL_RANK, gloo
    on the CPU) for the block; yields this process's rank (0 without torchrun) and the loader on
    the rank's device."""
    import torch

    from siren_bench.distributed import rank_and_world, torchrun_group

    with torchrun_group(torch.device(loader.compute.device)) as device:
        yield rank_and_world()[0], loader.on_device(device)


def _stats_export(args: argparse.Namespace) -> None:
    """A reference set's statistics under a recipe, as FILE.npz + FILE.json (evaluation/reference_stats.py)."""
    from siren_bench.cache import ContentCache
    from siren_bench.evaluation.clipsets import clip_set
    from siren_bench.evaluation.reference_stats import export_reference_stats
    from siren_bench.evaluation.score import select_metrics

    recipe, metrics, loader = _recipe_and_loader(args)
    reference = clip_set(args.reference, args.split)
    with _ranks(loader) as (rank, loader):  # under torchrun the ranks share the embedding; rank 0 writes the file
        stats = export_reference_stats(reference, recipe, select_metrics(recipe, metrics), loader, ContentCache(args.cache_dir),
                                       args.out, allow_clipped=args.allow_clipped)
    if rank > 0:
        return
    print(f"stats export: wrote {stats.path} and {stats.path.with_suffix('.json')} ({', '.join(stats.metrics)} of "
          f"{len(stats.clip_ids)} clips under {recipe.id})")


def _score(args: argparse.Namespace) -> None:
    """Without --generated: the pipeline's score stage. With it: one folder against a reference."""
    if args.generated is None:
        if args.reference is not None or args.reference_stats is not None:
            raise ConfigError("--reference and --reference-stats need --generated (the folder of audio to score)")
        _stage(args)
        return
    from siren_bench.cache import ContentCache
    from siren_bench.evaluation.clipsets import clip_set, read_captions
    from siren_bench.evaluation.score import score_sets, write_score

    if (args.reference is None) == (args.reference_stats is None) or args.out is None:
        raise ConfigError("scoring a folder needs --out DIR and one of --reference DIR|MANIFEST or --reference-stats FILE.npz")
    from siren_bench.evaluation.reference_stats import read_reference_stats

    recipe, metrics, loader = _recipe_and_loader(args)
    generated = clip_set(args.generated)
    reference = clip_set(args.reference, args.split) if args.reference else read_reference_stats(args.reference_stats)
    captions = read_captions(args.captions) if args.captions else None
    with _ranks(loader) as (rank, loader):  # under torchrun the ranks share the embedding; rank 0 computes and writes the scores
        outcome = score_sets(generated, reference, recipe, loader, ContentCache(args.cache_dir),
                             metrics=metrics, n_boot=args.n_boot, captions=captions, captions_source=args.captions,
                             allow_clipped=args.allow_clipped)
    if rank > 0:
        return
    out = write_score(args.out, outcome)
    for metric, result in outcome.results["metrics"].items():
        print(f"{metric:8s} {result['value']:.6g}  [{result['ci_low']:.6g}, {result['ci_high']:.6g}]  n={result['n_generated']}")
    print(f"score: wrote {out} (recipe {recipe.id}; embeddings {outcome.cache_hits} cached, {outcome.cache_misses} computed)")


def _compare(args: argparse.Namespace) -> None:
    """A user's model (audio folder or generator) scored and reported beside the run's systems."""
    from siren_bench.comparison import compare

    report = compare(args.name, args.params, args.audio, args.entry_point)
    print(f"{args.name}: report in {report / 'report.md'}")


def _generate(args: argparse.Namespace) -> None:
    """Without --captions: the pipeline's generate stage. With it: one system renders a captions file."""
    if args.captions is None:
        if args.out is not None or args.system is not None:
            raise ConfigError("--system and --out go with --captions (a CSV of clip_id,caption to render)")
        _stage(args)
        return
    from siren_bench.stages.generate import generate_captions

    if args.system not in ("siren", "siren_aligned") or args.out is None:
        raise ConfigError("rendering a captions file needs --system siren|siren_aligned and --out DIR")
    out = generate_captions(args.params, args.captions, Path(args.out), args.seconds, args.system)
    print(f"generate: wrote {out}")


def _replicate_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--replicate", type=int, default=0,
                        help="which seed replicate: 0 = the configured seeds, k = every seed + 1000 k (k < eval.seeds)")


def _train_expert(args: argparse.Namespace) -> None:
    from siren_bench.stages.train_siren import train_one_expert

    state = train_one_expert(args.params, args.index, args.replicate)
    print(f"train-expert: expert {args.index} (replicate {args.replicate}) finished; its state {state} is what train_siren assembles")


def _generate_shard(args: argparse.Namespace) -> None:
    from siren_bench.stages.generate import render_shard

    folder = render_shard(args.params, args.system, args.replicate)
    if os.environ.get("RANK", "0") == "0":
        print(f"generate-shard: {args.system}'s batches are in {folder}; `dvc repro` (the generate stage) links them")


def _train_baseline(args: argparse.Namespace) -> None:
    from siren_bench.stages.train_baselines import train_one_baseline

    state = train_one_baseline(args.params, args.name, args.replicate)
    print(f"train-baseline: {args.name} (replicate {args.replicate}) finished; its state {state} is what train_baselines assembles")


def _audit(args: argparse.Namespace) -> int:
    from siren_bench.evaluation.audit import audit

    report = audit(args.results, args.cache_dir, args.weights_dir)
    print(report.text())
    return 0 if report.ok else 1


def _selftest(args: argparse.Namespace) -> int:
    from siren_bench import selftest

    passed, text = selftest.main(args.fadtk_wheel)
    print(text)
    return 0 if passed else 1


def _dvc_deps(args: argparse.Namespace) -> int:
    """Compare (or rewrite) dvc.yaml's code deps with each stage's import closure."""
    from siren_bench import dvc_deps

    root = Path(args.repo)
    if args.write:
        changed = dvc_deps.write(root)
        print(f"dvc-deps: rewrote the code deps of {', '.join(changed)}" if changed else "dvc-deps: dvc.yaml already matches")
        return 0
    problems = dvc_deps.check(root)
    for line in problems:
        print(line)
    print(f"dvc-deps: {len(problems)} problem(s); `siren-bench dvc-deps --write` fixes them" if problems
          else "dvc-deps: every stage's code deps equal its import closure")
    return 1 if problems else 0


def _embedding_options(command: argparse.ArgumentParser, metrics_help: str) -> None:
    """The options saying how a set is embedded: recipe, checkpoints, cache, device, batches."""
    command.add_argument("--split", help="with a manifest: this split only (e.g. test)")
    command.add_argument("--recipe", default="clean", help="recipe name or name@version (default: clean)")
    command.add_argument("--metrics", help=f"comma-separated subset of {metrics_help}")
    command.add_argument("--weights-dir", help="folder holding the checkpoint files the recipe names")
    command.add_argument("--pin", action="append", default=[], metavar="CHECKPOINT=SHA256", help="pin a checkpoint's SHA-256")
    command.add_argument("--allow-clipped", action="store_true", help="embed clipped clips (listed in the output)")
    command.add_argument("--cache-dir", default="artifacts/cache/embeddings", help="embedding cache (default: artifacts/cache/embeddings)")
    command.add_argument("--device", default="auto", help="where the embedders run: auto (CUDA when present), cpu, cuda[:N]")
    command.add_argument("--batch", type=int, help="clips per embedder call (default: 1 on the CPU, 32 on CUDA); in the cache keys")
    command.add_argument("--loader-threads", type=int, default=2, help="threads decoding the next clips while the model runs (default: 2)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="siren-bench", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in STAGES.items():
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("--params", default="params.yaml", help="composed params file (default: params.yaml)")
        command.set_defaults(handler=_stage)
    score = commands.add_parser("score", help="score a folder of audio under a recipe (or, without --generated, run the score stage)")
    score.add_argument("--params", default="params.yaml", help="stage mode: composed params file")
    score.add_argument("--generated", help="folder of audio files named <clip_id>.<ext>")
    score.add_argument("--reference", help="folder of audio files, or a manifest .csv (captions come from it)")
    score.add_argument("--reference-stats", help="instead of --reference: FILE.npz from `siren-bench stats export` (FAD, FD, FAD-inf, IS)")
    score.add_argument("--captions", help="CSV with clip_id,caption for the CLAP score")
    score.add_argument("--n-boot", type=int, help="bootstrap resamples (default: the recipe's)")
    score.add_argument("--out", help="folder for results.json and per_clip.csv")
    _embedding_options(score, "the recipe's metrics (default: all)")
    score.set_defaults(handler=_score)
    stats = commands.add_parser("stats", help="reference statistics as files (FILE.npz + FILE.json)")
    stats_commands = stats.add_subparsers(dest="stats_command", required=True)
    export = stats_commands.add_parser("export", help="write a reference set's statistics under a recipe, for score --reference-stats")
    export.add_argument("--reference", required=True, help="folder of audio files, or a manifest .csv")
    export.add_argument("--out", required=True, help="FILE.npz to write (FILE.json is written beside it)")
    _embedding_options(export, "the recipe's FAD / FD / FAD-inf (default: those it has)")
    export.set_defaults(handler=_stats_export)
    generate = commands.add_parser("generate", help="render each system's audio for the test clips (or, with --captions, one system for a captions file)")
    generate.add_argument("--params", default="params.yaml", help="composed params file (default: params.yaml)")
    generate.add_argument("--system", help="with --captions: the system to render (siren or siren_aligned)")
    generate.add_argument("--captions", help="CSV with clip_id,caption: render these instead of the test split")
    generate.add_argument("--out", help="with --captions: folder for <clip_id>.wav (must not exist)")
    generate.add_argument("--seconds", type=float, default=None, help="with --captions: clip length (default: data.clip_seconds)")
    generate.set_defaults(handler=_generate)
    comparing = commands.add_parser("compare", help="score your model under the run's protocol and report it beside the run's systems")
    comparing.add_argument("name", help="your model's name (a table row; with neither option, an installed siren_bench.generators entry point)")
    comparing.add_argument("--audio", help="folder of rendered test clips, <clip_id>.wav")
    comparing.add_argument("--entry-point", help="module:function returning one waveform per test caption (see siren_bench/comparison.py)")
    comparing.add_argument("--params", default="params.yaml", help="composed params file (default: params.yaml)")
    comparing.set_defaults(handler=_compare)
    expert = commands.add_parser("train-expert", help="train one Siren expert outside DVC (one job per GPU; torchrun for data parallelism)")
    expert.add_argument("--index", type=int, required=True, help="which expert (0-based)")
    expert.add_argument("--params", default="params.yaml", help="composed params file (default: params.yaml)")
    _replicate_option(expert)
    expert.set_defaults(handler=_train_expert)
    shard = commands.add_parser("generate-shard", help="render one trained system's batches outside DVC (torchrun: each rank its share)")
    shard.add_argument("--system", required=True, help="siren, siren_aligned or a baseline of eval.systems")
    _replicate_option(shard)
    shard.add_argument("--params", default="params.yaml", help="composed params file (default: params.yaml)")
    shard.set_defaults(handler=_generate_shard)
    baseline = commands.add_parser("train-baseline", help="train one baseline outside DVC (torchrun for data parallelism)")
    baseline.add_argument("--name", required=True, help="which baseline (a name in eval.systems)")
    baseline.add_argument("--params", default="params.yaml", help="composed params file (default: params.yaml)")
    _replicate_option(baseline)
    baseline.set_defaults(handler=_train_baseline)
    audit = commands.add_parser("audit", help="recompute a results.json from its inputs and cached embeddings; say what differs")
    audit.add_argument("results", help="results.json, or the folder holding it")
    audit.add_argument("--cache-dir", help="embedding cache (default: the one recorded)")
    audit.add_argument("--weights-dir", help="checkpoint folder (default: the one recorded)")
    audit.set_defaults(handler=_audit)
    check = commands.add_parser("selftest", help="check the metric code against textbook, closed-form and published values")
    check.add_argument("--fadtk-wheel", help="a downloaded fadtk 1.1.0 wheel: FD on its shipped FMA-Pop statistics")
    check.set_defaults(handler=_selftest)
    params = commands.add_parser("params", help="compose conf/ into params.yaml (Hydra overrides as arguments)")
    params.add_argument("overrides", nargs="*", help="e.g. profile=ci data.n_clips=64")
    params.add_argument("--conf", default="conf", help="Hydra config folder (default: conf)")
    params.add_argument("--out", default="params.yaml", help="file to write (default: params.yaml)")
    params.set_defaults(handler=_params)
    match = commands.add_parser("match-baselines", help="each baseline's depth at Siren's parameter count (Hydra overrides as arguments)")
    match.add_argument("overrides", nargs="*", help="e.g. model=siren_1_6b baselines=paper")
    match.add_argument("--conf", default="conf", help="Hydra config folder (default: conf)")
    match.set_defaults(handler=_match_baselines)
    deps = commands.add_parser("dvc-deps", help="check (default) or rewrite dvc.yaml's code deps against each stage's import closure")
    deps.add_argument("--write", action="store_true", help="rewrite the code deps in dvc.yaml (comments and other deps kept)")
    deps.add_argument("--check", action="store_true", help="only report differences, exit 1 if any (the default)")
    deps.add_argument("--repo", default=".", help="repository root holding dvc.yaml (default: .)")
    deps.set_defaults(handler=_dvc_deps)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        status = args.handler(args)
    except USER_ERRORS as exc:
        print(f"siren-bench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
