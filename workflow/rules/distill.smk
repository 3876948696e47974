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
    priority: 20  # on the longest chain, as unlearn
    threads: ONE_CPU
    resources: **job_resources(MEM_SMALL, 10)
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/call.py"


INITS = study.inits(STUDY)  # each distilled method's students: every alpha, then the fresh init

if STUDY.distill.together and INITS:

    # Every student of one unlearned model in one job: one teacher forward per batch for all of them;
    # each student's checkpoint is written as soon as it recovers
    rule distill_students:
        input:
            teacher=ckpt("base/{method}"),
            student=[ckpt(f"base/{{method}}/noised_{i}") for i in INITS],
            data=rules.make_data.output.train,
            eval_data=rules.make_data.output.eval_data,
        output:
            out=[ckpt(f"base/{{method}}/undo_{i}") for i in INITS],
        log:
            f"{S}/logs/distill_base_{{method}}.log",
        benchmark:
            f"{S}/benchmarks/distill_base_{{method}}.tsv"
        params:
            call="pipeline_py.stages.distill.distill",
            cfg=section("distill"),
            runtime=runtime,
            seed=lambda w: int(w.seed),
        priority: 20  # the longest job: one started last would run alone at the end while a core idles
        threads: HALF
        resources: **job_resources(MEM_TRAIN, 60 * len(INITS), GPU)
        conda:
            "../envs/pipeline.yaml"
        script:
            "../scripts/call.py"


# One student per job: ERA's students, and every student where distill.together is false
rule distill:
    input:
        teacher=ckpt("{root}/{method}"),
        student=ckpt("{root}/{method}/noised_{init}"),
        data=rules.make_data.output.train,
        eval_data=rules.make_data.output.eval_data,
    output:
        out=ckpt("{root}/{method}/undo_{init}"),
    wildcard_constraints:
        root="routed" if STUDY.distill.together else "base|routed",
    log:
        f"{S}/logs/distill_{{root}}_{{method}}_{{init}}.log",
    benchmark:
        f"{S}/benchmarks/distill_{{root}}_{{method}}_{{init}}.tsv"
    params:
        call="pipeline_py.stages.distill.distill",
        cfg=section("distill"),
        runtime=runtime,
        seed=lambda w: int(w.seed),
    priority: 20  # as distill_students (oracle matching, `use rule distill`, inherits it)
    threads: HALF
    resources: **job_resources(MEM_TRAIN, 60, GPU)
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/call.py"
