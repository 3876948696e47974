# ERA (gradient routing): a routed pretraining with the base's recipe, then ablation of the extra neurons.
# Each rule gets only the era keys it reads, so changing the finetune reruns only what follows ablate.
from pipeline_py.routing import stage_keys


rule pretrain_routed:
    input:
        data=rules.make_data.output.train,
        tokenizer=rules.make_data.output.tokenizer,
    output:
        out=f"{S}/models/routed/routed.safetensors",
    wildcard_constraints:
        seed=PRETRAINED_SEED,
    log:
        f"{S}/logs/pretrain_routed.log",
    benchmark:
        f"{S}/benchmarks/pretrain_routed.tsv"
    params:
        call="pipeline_py.stages.era.pretrain_routed",
        model=section("model"),
        train_cfg=section("pretrain"),
        era=stage_keys(config.get("era") or {}, "pretrain_routed"),
        runtime=runtime,
        seed=lambda w: int(w.seed),
    priority: 10  # like pretrain: ablate, ERA's finetune and its students wait on it
    threads: HALF
    resources: mem_mb=MEM_TRAIN, runtime=60, gpu=GPU
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/call.py"


rule ablate:
    input:
        routed=rules.pretrain_routed.output.out,
        retain=rules.filter_data.output.retain,
    output:
        out=ckpt("routed/era"),
    log:
        f"{S}/logs/ablate.log",
    benchmark:
        f"{S}/benchmarks/ablate.tsv"
    params:
        call="pipeline_py.stages.era.ablate",
        era=stage_keys(config.get("era") or {}, "ablate"),
        runtime=runtime,
        seed=lambda w: int(w.seed),
    threads: ONE_CPU
    resources: mem_mb=MEM_TRAIN, runtime=30, gpu=GPU
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/call.py"
