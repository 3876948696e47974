rule noise:
    input:
        teacher=ckpt("{root}/{method}"),
    output:
        out=ckpt("{root}/{method}/noised_{init}"),
    log:
        f"{S}/logs/noise_{{root}}_{{method}}_{{init}}.log",
    params:
        stage="noise",
        alpha=lambda w: None if w.init == "fresh" else float(w.init[1:].split("_b")[0]),
        beta=config["noise"]["beta"],
        seed=lambda w: int(w.seed),
    threads: ONE_CPU
    resources: **job_resources(MEM_SMALL, 10)
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/stage.py"


rule distill:
    input:
        teacher=ckpt("{root}/{method}"),
        student=ckpt("{root}/{method}/noised_{init}"),
        data=rules.make_data.output.train,
        eval_data=rules.make_data.output.eval_data,
    output:
        out=ckpt("{root}/{method}/undo_{init}"),
    log:
        f"{S}/logs/distill_{{root}}_{{method}}_{{init}}.log",
    benchmark:
        f"{S}/benchmarks/distill_{{root}}_{{method}}_{{init}}.tsv"
    params:
        stage="distill",
        train_cfg={k: v for k, v in config["distill"].items() if k not in ("stop_within", "check_every")},
        stop_within=config["distill"]["stop_within"],
        check_every=config["distill"]["check_every"],
        precision=config["precision"],
        device=config["device"],
        seed=lambda w: int(w.seed),
        threads=torch_threads,
    threads: HALF
    resources: **job_resources(MEM_TRAIN, 60, GPU)
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/stage.py"
