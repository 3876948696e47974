ABLATE_KEYS = ("finetune_steps", "finetune_lr")  # the era keys only ablate reads (others: pretrain_routed)


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
        stage="pretrain_routed",
        model=config["model"],
        train_cfg=config["pretrain"],
        era={k: v for k, v in ERA.items() if k not in ABLATE_KEYS + ("undo_alphas",)},
        precision=config["precision"],
        device=config["device"],
        seed=lambda w: int(w.seed),
        threads=torch_threads,
    threads: HALF
    resources: mem_mb=MEM_TRAIN, runtime=60, gpu=GPU
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/stage.py"


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
        stage="ablate",
        era={k: v for k, v in ERA.items() if k in ABLATE_KEYS},
        precision=config["precision"],
        device=config["device"],
        seed=lambda w: int(w.seed),
        threads=torch_threads,
    threads: ONE_CPU
    resources: mem_mb=MEM_TRAIN, runtime=30, gpu=GPU
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/stage.py"
