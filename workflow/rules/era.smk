# ERA (gradient routing): a routed pretraining with the base's recipe, then ablation of the extra neurons.
# Each rule gets only the era keys it reads, so changing the finetune reruns only what follows ablate.
ROUTING_KEYS = [k for k in (config.get("era") or {}) if k not in ("finetune_steps", "finetune_lr", "undo_alphas")]


rule pretrain_routed:
    input:
        data=rules.make_data.output.train,
        tokenizer=rules.make_data.output.tokenizer,
    output:
        out=f"{S}/models/routed/routed.safetensors",
    log:
        f"{S}/logs/pretrain_routed.log",
    benchmark:
        f"{S}/benchmarks/pretrain_routed.tsv"
    params:
        call="pipeline_py.stages.era.pretrain_routed",
        model=section("model"),
        train_cfg=section("pretrain"),
        era={k: v for k, v in (config.get("era") or {}).items() if k in ROUTING_KEYS},
        runtime=runtime,
        seed=lambda w: int(w.seed),
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
        era={k: v for k, v in (config.get("era") or {}).items() if k in ("finetune_steps", "finetune_lr")},
        runtime=runtime,
        seed=lambda w: int(w.seed),
    threads: ONE_CPU
    resources: mem_mb=MEM_TRAIN, runtime=30, gpu=GPU
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/call.py"
