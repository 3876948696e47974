rule make_data:
    output:
        train=f"{S}/data/train.jsonl",
        eval_data=f"{S}/data/eval.jsonl",
        attack=f"{S}/data/attack.jsonl",
        tokenizer=f"{S}/data/tokenizer.json",
    log:
        f"{S}/logs/make_data.log",
    params:
        stage="make_data",
        out_dir=lambda w, output: os.path.dirname(output.train),
        data=setting_data(),
        seed=lambda w: int(w.seed),
        setting=config["setting"],
    threads: ONE_CPU
    resources: **job_resources(MEM_SMALL, 10)
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/stage.py"


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
        stage="filter_data",
        n_labeled=config["filter"]["n_labeled"],
        seed=lambda w: int(w.seed),
    threads: ONE_CPU
    resources: mem_mb=MEM_SMALL, runtime=10
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/stage.py"
