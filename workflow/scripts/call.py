"""Adapter: a rule's named inputs, outputs and params -> the function its `params: call=` names."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821  (the repo root)
from pipeline_py.cli import call  # noqa: E402

args = {**dict(snakemake.input.items()), **dict(snakemake.output.items()), **dict(snakemake.params.items())}  # noqa: F821
args = {k: list(v) if type(v).__name__ == "Namedlist" else v for k, v in args.items()}
call(args.pop("call"), args, log_file=snakemake.log[0] if snakemake.log else None,  # noqa: F821
     where=f"rule {snakemake.rule}")  # noqa: F821
