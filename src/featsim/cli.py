"""The `featsim` command line: inspect outputs and validate configs."""

from __future__ import annotations

import argparse
import json
import sys

from featsim import __version__


def _inspect(args: argparse.Namespace) -> int:
    from featsim.inspect import describe, format_text

    status = 0
    for path in args.paths:
        try:
            info = describe(path)
        except (FileNotFoundError, ValueError) as exc:
            print(f"featsim inspect: {exc}", file=sys.stderr)
            status = 2
            continue
        print(json.dumps(info, indent=2, default=str) if args.json else format_text(info))
        if info.get("complete") is False:
            status = max(status, 1)
    return status


def _validate(args: argparse.Namespace) -> int:
    from featsim.config import load_config
    from featsim.errors import ConfigError

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"featsim validate: {args.config}: {exc}", file=sys.stderr)
        return 1
    print(f"{args.config}: valid ({len(config['models'])} models, {len(config['comparisons'])} comparisons)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="featsim", description="Cross-model SAE feature-space similarity.")
    parser.add_argument("--version", action="version", version=f"featsim {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    inspect_cmd = commands.add_parser("inspect", help="describe a featsim store or result file")
    inspect_cmd.add_argument("paths", nargs="+", help="a .zarr store, .parquet/.csv/.json/.npy result")
    inspect_cmd.add_argument("--json", action="store_true", help="machine-readable output")
    inspect_cmd.set_defaults(func=_inspect)

    validate_cmd = commands.add_parser("validate", help="check a config file against the schema")
    validate_cmd.add_argument("config")
    validate_cmd.set_defaults(func=_validate)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
