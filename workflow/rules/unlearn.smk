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
        call="pipeline_py.stages.unlearn.unlearn",
        method=lambda w: w.method,
        cfg=lambda w: section("unlearn", methods=[w.method], hparams={w.method: STUDY.unlearn.hparams[w.method]}),
        runtime=runtime,
        seed=lambda w: int(w.seed),
    priority: 20  # heads the longest chain (noise -> distillation to recovery -> the students' attacks)
    threads: ONE_CPU
    resources: **job_resources(MEM_TRAIN, 30, GPU)
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/call.py"
