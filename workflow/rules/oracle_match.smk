# The oracle-matching experiment: the oracle's outputs distilled into the pretrained base and into a
# random init (same budget, no early stop); both are then attacked like every other model.
rule oracle_fresh_init:
    input:
        teacher=ckpt("oracle"),
    output:
        out=ckpt("oracle/noised_fresh"),
    log:
        f"{S}/logs/oracle_fresh_init.log",
    params:
        stage="noise",
        alpha=None,
        seed=lambda w: int(w.seed),
    threads: ONE_CPU
    resources: **job_resources(MEM_SMALL, 10)
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/stage.py"


rule match_oracle:
    input:
        teacher=ckpt("oracle"),
        student=lambda w: ckpt("base" if w.start == "base" else "oracle/noised_fresh").format(seed=w.seed),
        data=rules.make_data.output.train,
        eval_data=rules.make_data.output.eval_data,
    output:
        out=ckpt("oracle/match_{start}"),
    log:
        f"{S}/logs/match_oracle_{{start}}.log",
    benchmark:
        f"{S}/benchmarks/match_oracle_{{start}}.tsv"
    params:
        stage="distill",
        train_cfg={**{k: v for k, v in config["distill"].items() if k not in ("stop_within", "check_every")},
                   "steps": config["oracle_match"]["steps"]},
        stop_within=None,
        check_every=config["distill"]["check_every"],
        teacher_in_lineage=lambda w: w.start != "base",
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
