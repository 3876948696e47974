"""Adapter: the `snakemake` object of a rule → one pipeline_py stage (named by params.stage)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821  (the repo root)
from pipeline_py.cli import call_stage  # noqa: E402

args = {**dict(snakemake.input.items()), **dict(snakemake.output.items()), **dict(snakemake.params.items())}  # noqa: F821
call_stage(args.pop("stage"), args, log_file=snakemake.log[0] if snakemake.log else None)  # noqa: F821
