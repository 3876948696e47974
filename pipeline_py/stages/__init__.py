"""The pipeline's stages: what the Snakemake rules run. Each is a plain function that reads files and writes
files, called alike by a rule (which names it by its dotted path), from the shell
(`python -m pipeline_py pipeline_py.stages.pretrain.pretrain k=v ...`) and from pytest. Every model-writing
stage writes a complete checkpoint or nothing."""
