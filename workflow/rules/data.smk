rule make_data:
    output:
        train=f"{S}/data/train.jsonl",
        eval_data=f"{S}/data/eval.jsonl",
        attack=f"{S}/data/attack.jsonl",
        tokenizer=f"{S}/data/tokenizer.json",
    wildcard_constraints:
        seed=PRETRAINED_SEED,
    log:
        f"{S}/logs/make_data.log",
    params:
        call="pipeline_py.stages.data.make_data",
        data=config[STUDY.setting],
        setting=STUDY.setting,
        seed=lambda w: int(w.seed),
    threads: ONE_CPU
    resources: **job_resources(MEM_SMALL, 10)
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/call.py"


rule filter_data:
    input:
        train=rules.make_data.output.train,
    output:
        oracle=f"{S}/data/oracle.jsonl",
        forget=f"{S}/data/forget_labeled.jsonl",
        retain=f"{S}/data/retain_labeled.jsonl",
    log:
        f"{S}/logs/filter_data.log",
    params:
        call="pipeline_py.stages.data.filter_data",
        cfg=section("filter"),
        seed=lambda w: int(w.seed),
    priority: 10  # the oracle's pretraining waits on it (rule priorities do not pass upstream)
    threads: ONE_CPU
    resources: mem_mb=MEM_SMALL, runtime=10
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/call.py"
