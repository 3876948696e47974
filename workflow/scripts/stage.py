"""Adapter: the `snakemake` object of a rule → one pipeline_py stage (named by params.stage)."""
from pipeline_py.cli import call_stage

args = {**dict(snakemake.input.items()), **dict(snakemake.output.items()), **dict(snakemake.params.items())}  # noqa: F821
call_stage(args.pop("stage"), args, log_file=snakemake.log[0] if snakemake.log else None)  # noqa: F821
