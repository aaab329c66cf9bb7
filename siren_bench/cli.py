"""The `siren-bench` command line; each DVC stage calls one sub-command."""

from __future__ import annotations

import argparse
import logging
import sys

from siren_bench.config import ConfigError
from siren_bench.data.audiocaps import AudioCapsError
from siren_bench.data.manifest import ManifestError
from siren_bench.io import AudioFileError

# Errors that describe bad input: printed as one clear message, not a traceback.
USER_ERRORS = (ConfigError, AudioCapsError, ManifestError, AudioFileError, FileNotFoundError)


def _prepare(args: argparse.Namespace) -> None:
    from siren_bench.stages import prepare

    out = prepare.run(args.params)
    print(f"prepare: wrote {out}")


def _report(args: argparse.Namespace) -> None:
    from siren_bench.stages import report

    out = report.run(args.params)
    print(f"report: wrote {out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="siren-bench", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, handler, text in (
        ("prepare", _prepare, "build the clip manifest (SynthCaps or AudioCaps)"),
        ("report", _report, "write reports/<profile>/ from the stage outputs that exist"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("--params", default="params.yaml", help="composed params file (default: params.yaml)")
        command.set_defaults(handler=handler)
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
