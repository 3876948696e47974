rule unlearn:
    input:
        base=ckpt("base"),
        forget=rules.filter_data.output.forget,
        retain=rules.filter_data.output.retain,
    output:
        out=ckpt("base/{method}"),
    log:
        f"{S}/logs/unlearn_{{method}}.log",
    benchmark:
        f"{S}/benchmarks/unlearn_{{method}}.tsv"
    params:
        stage="unlearn",
        method=lambda w: w.method,
        params=lambda w: config["unlearn"]["methods"][w.method],
        batch_size=config["unlearn"]["batch_size"],
        precision=config["precision"],
        device=config["device"],
        seed=lambda w: int(w.seed),
        threads=torch_threads,
    threads: ONE_CPU
    resources: **job_resources(MEM_TRAIN, 30, GPU)
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/stage.py"
