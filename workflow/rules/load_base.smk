# The wmdp setting starts from pretrained Hugging Face models: these rules take the place of pretraining.
rule load_base:
    input:
        tokenizer=rules.make_data.output.tokenizer,
    output:
        out=ckpt("base"),
    log:
        f"{S}/logs/load_base.log",
    params:
        stage="load_base",
        name=config["wmdp"]["base"],
        revision=config["wmdp"].get("revision"),
        pretrain_tokens=config["wmdp"].get("pretrain_tokens", 0.0),
        role="base",
    threads: ONE_CPU
    resources: **job_resources(MEM_TRAIN, 60)
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/stage.py"


use rule load_base as load_oracle with:
    output:
        out=ckpt("oracle"),
    log:
        f"{S}/logs/load_oracle.log",
    params:
        stage="load_base",
        name=config["wmdp"].get("oracle"),
        revision=config["wmdp"].get("revision"),
        pretrain_tokens=config["wmdp"].get("pretrain_tokens", 0.0),
        role="oracle",
