# pretrain_seed: every other seed's directory gets a copy of that seed's pretraining (data splits, base,
# oracle, routed model; a few MB), so its later stages read the one pretraining under their own paths.
OTHER_SEED = rf"(?!{P}(?:/|$))\d+"  # any seed but P


rule share_data:
    input:
        src=f"{R}/seed{P}/data/train.jsonl",
    output:
        out=[f"{S}/data/{name}" for name in ("train.jsonl", "eval.jsonl", "attack.jsonl", "tokenizer.json")],
    wildcard_constraints:
        seed=OTHER_SEED,
    log:
        f"{S}/logs/share_data.log",
    params:
        call="pipeline_py.stages.data.share",
    localrule: True
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/call.py"


use rule share_data as share_model with:
    input:
        src=f"{R}/seed{P}/models/{{pretrained}}.safetensors",
    output:
        out=f"{S}/models/{{pretrained}}.safetensors",
    wildcard_constraints:
        seed=OTHER_SEED,
        pretrained="base/model|oracle/model|routed/routed",
    log:
        f"{S}/logs/share_{{pretrained}}.log",
