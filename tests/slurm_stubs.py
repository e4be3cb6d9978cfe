"""Stand-ins for the SLURM commands snakemake-executor-plugin-slurm calls (sbatch, squeue, sacct, scontrol,
sinfo, sacctmgr), so a test can submit a real workflow through the real plugin without a cluster.

Every call is recorded under `<state>/calls/` (read back with `calls`/`submissions`). `sbatch` prints a job
id; `squeue`/`sacct` report every submitted job in the state given by SLURM_STUB_JOB_STATE (default
OUT_OF_MEMORY), so each job fails after its submission is captured and Snakemake's retries resubmit it.
With SLURM_STUB_SBATCH_REJECTS set, sbatch records the call and then refuses it: the job fails at once
(no status polling, whose interval the plugin grows by 10 s a round), which keeps tests fast.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

COMMANDS = ("sbatch", "squeue", "sacct", "scontrol", "sinfo", "sacctmgr")

# POSIX sh, not Python: the plugin runs several of these per submission (sacctmgr, sbatch), and an
# interpreter start each would dominate the test. One file per call, named <ns time>-<pid>-<command>,
# holding the arguments NUL-separated; sbatch's job id is its pid.
_STUB = r"""#!/bin/sh
command=$(basename "$0")
record="$SLURM_STUB_STATE/calls/$(date +%s%N)-$$-$command"
printf '%s\0' "$@" > "$record"
case "$command" in
  sbatch)
    if [ -n "$SLURM_STUB_SBATCH_REJECTS" ]; then
      echo "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy" >&2
      exit 1
    fi
    echo $$ ;;
  squeue|sacct)
    case " $* " in
      *" --name "*)
        for call in "$SLURM_STUB_STATE"/calls/*-sbatch; do
          [ -e "$call" ] || continue
          jobid=${call##*/}; jobid=${jobid#*-}; jobid=${jobid%-sbatch}
          echo "$jobid|${SLURM_STUB_JOB_STATE:-OUT_OF_MEMORY}"
        done ;;
    esac ;;
  scontrol) printf 'MinJobAge               = 300 sec\nMaxArraySize            = 1001\n' ;;
  sinfo) printf 'PARTITION\ncpu*\ngpu\n' ;;
  sacctmgr) echo "$SLURM_STUB_ACCOUNTS" ;;
esac
"""


def install(bin_dir: Path, state_dir: Path) -> dict[str, str]:
    """Write the stub commands into `bin_dir`; return the environment that puts them first on PATH."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "calls").mkdir(parents=True, exist_ok=True)
    for command in COMMANDS:
        path = bin_dir / command
        path.write_text(_STUB)
        path.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_STUB_STATE": str(state_dir)}


def calls(state_dir: Path) -> list[tuple[str, list[str]]]:
    """Every stub call as (command, arguments), in call order."""
    records = sorted((state_dir / "calls").iterdir(), key=lambda path: path.name)
    return [(path.name.rsplit("-", 1)[1], path.read_bytes().decode().split("\0")[:-1]) for path in records]


def submissions(state_dir: Path) -> list[dict]:
    """Each sbatch call as {"rule", "wildcards", "partition", "gpus", "gres", "mem_mb", "cpus", "account",
    "flags" (every flag given), "args"}, in order."""
    return [_parse_sbatch(args) for command, args in calls(state_dir) if command == "sbatch"]


def _parse_sbatch(args: list[str]) -> dict:
    """The placement an sbatch argument list asks for (flags as the SLURM plugin writes them)."""
    flags: dict[str, str] = {}
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg.startswith("--wrap"):
            continue
        if "=" in arg and arg.startswith("--"):
            key, value = arg.split("=", 1)
            flags[key] = value
        elif arg.startswith("-") and rest and not rest[0].startswith("-"):
            flags[arg] = rest.pop(0)
        else:
            flags[arg] = ""
    comment = flags.get("--comment", "")
    rule, _, wildcards = comment.removeprefix("rule_").partition("_wildcards_")
    return {
        "rule": rule,
        "wildcards": wildcards,
        "partition": flags.get("-p"),
        "gpus": flags.get("--gpus"),
        "gres": flags.get("--gres"),
        "mem_mb": int(flags["--mem"]) if "--mem" in flags else None,
        "cpus": flags.get("--cpus-per-task") or flags.get("--cpus-per-gpu"),
        "account": flags.get("-A"),
        "flags": sorted(flags),
        "args": shlex.join(args),
    }
