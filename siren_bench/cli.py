"""The `siren-bench` command line; each DVC stage calls one sub-command."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from siren_bench.weights import CheckpointError
from siren_bench.config import ConfigError
from siren_bench.data.audiocaps import AudioCapsError
from siren_bench.data.manifest import ManifestError
from siren_bench.io import AudioFileError

# Errors that describe bad input: printed as one clear message, not a traceback.
USER_ERRORS = (ConfigError, AudioCapsError, ManifestError, AudioFileError, CheckpointError, FileNotFoundError)


STAGES = {
    "prepare": "build the clip manifest (SynthCaps or AudioCaps)",
    "codec": "train the small RVQ codec, or import pretrained codec weights",
    "tokenize": "encode every clip to RVQ codes",
    "diagnose": "fidelity vs depth, cross-layer orthogonality, semantic richness per layer",
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="siren-bench", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in STAGES.items():
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("--params", default="params.yaml", help="composed params file (default: params.yaml)")
        command.set_defaults(handler=_stage)
    params = commands.add_parser("params", help="compose conf/ into params.yaml (Hydra overrides as arguments)")
    params.add_argument("overrides", nargs="*", help="e.g. profile=ci data.n_clips=64")
    params.add_argument("--conf", default="conf", help="Hydra config folder (default: conf)")
    params.add_argument("--out", default="params.yaml", help="file to write (default: params.yaml)")
    params.set_defaults(handler=_params)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.handler(args)
    except USER_ERRORS as exc:
        print(f"siren-bench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
