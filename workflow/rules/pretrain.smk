rule pretrain:
    input:
        data=rules.make_data.output.train,
        tokenizer=rules.make_data.output.tokenizer,
    output:
        out=ckpt("base"),
    wildcard_constraints:
        seed=PRETRAINED_SEED,
    log:
        f"{S}/logs/pretrain.log",
    benchmark:
        f"{S}/benchmarks/pretrain.tsv"
    params:
        call="pipeline_py.stages.pretrain.pretrain",
        model=section("model"),
        train_cfg=section("pretrain"),
        runtime=runtime,
        seed=lambda w: int(w.seed),
    priority: 10  # the pretrainings head the longest chains (oracle -> its attacks, oracle matching): start them first
    threads: HALF
    resources: mem_mb=MEM_TRAIN, runtime=60, gpu=GPU
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/call.py"


use rule pretrain as pretrain_oracle with:
    input:
        data=rules.filter_data.output.oracle,
        tokenizer=rules.make_data.output.tokenizer,
    output:
        out=ckpt("oracle"),
    log:
        f"{S}/logs/pretrain_oracle.log",
    benchmark:
        f"{S}/benchmarks/pretrain_oracle.tsv"
