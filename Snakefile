# The UNDO study as a Snakemake workflow: pretrain base and oracle -> unlearn -> noise -> distill
# -> relearn (attack) -> evaluate -> summarize -> pareto_plot. Logic lives in pipeline_py/; rules only wire files.
import yaml
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


# Config files are merged key by key over config.yaml, except two blocks that a config file brings
# whole (the last given file that has them wins): `data` (it belongs to one setting) and
# `unlearn.methods` (a study names the methods it compares).
for _file in workflow.config_settings.configfiles or []:
    _given = yaml.safe_load(open(_file)) or {}
    if "data" in _given:
        config["data"] = dict(_given["data"])
    if "methods" in (_given.get("unlearn") or {}):
        config["unlearn"]["methods"] = dict(_given["unlearn"]["methods"])


validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
# pretrained Hugging Face models stand in for pretraining in the wmdp setting
include: "workflow/rules/load_base.smk" if config["setting"] == "wmdp" else "workflow/rules/pretrain.smk"
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
