rule noise:
    input:
        teacher=ckpt("{root}/{method}"),
    output:
        out=ckpt("{root}/{method}/noised_{init}"),
    log:
        f"{S}/logs/noise_{{root}}_{{method}}_{{init}}.log",
    params:
        call="pipeline_py.stages.distill.noise",
        init=lambda w: w.init,
        seed=lambda w: int(w.seed),
    threads: ONE_CPU
    resources: **job_resources(MEM_SMALL, 10)
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/call.py"


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
        call="pipeline_py.stages.distill.distill",
        cfg=section("distill"),
        runtime=runtime,
        seed=lambda w: int(w.seed),
    threads: HALF
    resources: **job_resources(MEM_TRAIN, 60, GPU)
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/call.py"
