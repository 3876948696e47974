# The UNDO study as a Snakemake workflow: pretrain base and oracle -> unlearn -> noise -> distill
# -> relearn (attack) -> evaluate -> summarize -> pareto_plot. Each rule names the pipeline_py function it
# runs (`params: call=`); workflow/scripts/call.py passes it the rule's inputs, outputs and params.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"  # --configfile files merge over it key by key (lists and values replace)


# The schema is generated from the typed sections of pipeline_py/config.py (python -m pipeline_py.config).
validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
# pretrained Hugging Face models stand in for pretraining in the wmdp setting
include: "workflow/rules/load_base.smk" if STUDY.setting == "wmdp" else "workflow/rules/pretrain.smk"
# pretrain_seed: the other seeds copy that seed's pretraining
if STUDY.pretrain_seed is not None:

    include: "workflow/rules/share.smk"


include: "workflow/rules/unlearn.smk"
include: "workflow/rules/distill.smk"
include: "workflow/rules/oracle_match.smk"
include: "workflow/rules/era.smk"
include: "workflow/rules/attack.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        rules.pareto_plot.output,
