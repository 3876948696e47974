# The wmdp setting starts from pretrained Hugging Face models: these rules take the place of pretraining.
rule load_base:
    input:
        tokenizer=rules.make_data.output.tokenizer,
    output:
        out=ckpt("base"),
    wildcard_constraints:
        seed=PRETRAINED_SEED,
    log:
        f"{S}/logs/load_base.log",
    params:
        call="pipeline_py.wmdp.load_base",
        name=STUDY.wmdp.base,
        revision=STUDY.wmdp.revision,
        pretrain_tokens=STUDY.wmdp.pretrain_tokens,
        role="base",
    threads: ONE_CPU
    resources: **job_resources(MEM_TRAIN, 60)
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/call.py"


use rule load_base as load_oracle with:
    output:
        out=ckpt("oracle"),
    log:
        f"{S}/logs/load_oracle.log",
    params:
        call="pipeline_py.wmdp.load_base",
        name=STUDY.wmdp.oracle,
        revision=STUDY.wmdp.revision,
        pretrain_tokens=STUDY.wmdp.pretrain_tokens,
        role="oracle",
