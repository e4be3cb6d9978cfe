"""The `featsim` command line: inspect and verify outputs, validate configs."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from featsim import __version__
from featsim.config import load_config
from featsim.errors import ConfigError
from featsim.hubnames import check_hub_names
from featsim.prefetch import plan_prefetch, prefetch
from featsim.preflight import require_preflight


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
        if info.get("complete") is False or "damaged" in info:
            status = max(status, 1)
    return status


def _workflow_dir() -> Path:
    """The workflow checkout whose files (concept lists) a config may name: $FEATSIM_WORKFLOW_DIR (the Snakefile
    and the conda environment set it), the checkout of an editable install, or else the working directory."""
    if os.environ.get("FEATSIM_WORKFLOW_DIR"):
        return Path(os.environ["FEATSIM_WORKFLOW_DIR"])
    checkout = Path(__file__).resolve().parents[2]
    return checkout if (checkout / "Snakefile").exists() else Path.cwd()


def _validate(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        require_preflight(config, args.root, warn=lambda line: print(f"featsim validate: {line}", file=sys.stderr),
                          workflow_dir=_workflow_dir())
    except ConfigError as exc:
        print(f"featsim validate: {args.config}: {exc}", file=sys.stderr)
        return 1
    print(f"{args.config}: valid ({len(config['models'])} models, {len(config['comparisons'])} comparisons)")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from featsim.verify import verify_paths

    counts: dict[str, int] = {}
    problems = 0
    store_log = logging.getLogger("featsim.stores")
    level = store_log.level
    store_log.setLevel(logging.ERROR)  # its warning about old-format stores is a finding here
    try:
        for finding in verify_paths(args.paths, clean_orphans=args.clean_orphans):
            counts[finding.status] = counts.get(finding.status, 0) + 1
            problems += finding.is_problem
            print(f"{finding.status.upper():12} {finding.path}: {finding.message}", flush=True)
    finally:
        store_log.setLevel(level)
    tally = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    print(f"featsim verify: {tally or 'no stores found'}")
    return 1 if problems else 0


def _prefetch(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        problems = check_hub_names(config)
        if problems:
            raise ConfigError("models", "unknown hub names:\n  " + "\n  ".join(problems))
        plan = plan_prefetch(config)
    except ConfigError as exc:
        print(f"featsim prefetch: {args.config}: {exc}", file=sys.stderr)
        return 1
    for fetch in plan:
        print(f"{fetch.repo_type} {fetch.repo_id}@{fetch.revision or 'main'}: "
              f"{', '.join(fetch.allow_patterns) if fetch.allow_patterns else 'all files'}  ({fetch.key})")
    if args.dry_run:
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for fetch, path in prefetch(config):
        print(f"cached {fetch.repo_id}: {path}")
    print("featsim prefetch: done; run the workflow with HF_HUB_OFFLINE=1 and the same HF_HOME")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="featsim", description="Cross-model SAE feature-space similarity.")
    parser.add_argument("--version", action="version", version=f"featsim {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    inspect_cmd = commands.add_parser("inspect", help="describe a featsim store or result file")
    inspect_cmd.add_argument("paths", nargs="+", help="a .zarr store, .parquet/.csv/.json/.npy result")
    inspect_cmd.add_argument("--json", action="store_true", help="machine-readable output")
    inspect_cmd.set_defaults(func=_inspect)

    validate_cmd = commands.add_parser("validate", help="check a config: the schema and every start-up check of the workflow")
    validate_cmd.add_argument("config")
    validate_cmd.add_argument("--root", default=None, help="directory that relative paths in the config are read "
                                                          "from (default: the current one, as for snakemake)")
    validate_cmd.set_defaults(func=_validate)

    verify_cmd = commands.add_parser("verify", help="read every chunk of stores or a results tree; report damaged, "
                                                    "incomplete and orphaned stores (exit 1 if any)")
    verify_cmd.add_argument("paths", nargs="+", help="a .zarr store or a results directory")
    verify_cmd.add_argument("--clean-orphans", action="store_true",
                            help="remove temporary paths (<target>.tmp-<pid>) of writers no longer running")
    verify_cmd.set_defaults(func=_verify)

    prefetch_cmd = commands.add_parser("prefetch", help="download into the HF cache every model, tokenizer, SAE and "
                                                        "dataset file a config reads (then run with HF_HUB_OFFLINE=1)")
    prefetch_cmd.add_argument("config", nargs="?", default="config.yaml")
    prefetch_cmd.add_argument("--dry-run", action="store_true", help="list the downloads without fetching")
    prefetch_cmd.set_defaults(func=_prefetch)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
