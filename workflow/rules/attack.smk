# The attacks of a model: one job per finetuning family (every LR and attack seed, one after another),
# and the quantization attack (no training).
rule relearn:
    input:
        model=ckpt("{model}"),
        attack=rules.make_data.output.attack,
        retain=rules.make_data.output.train,
        eval_data=rules.make_data.output.eval_data,
    output:
        out=study.curve(R),
    log:
        f"{S}/logs/relearn/{{model}}/{{family}}.log",
    benchmark:
        f"{S}/benchmarks/relearn/{{model}}/{{family}}.tsv"
    params:
        call="pipeline_py.stages.attack.relearn",
        cfg=lambda w: section("attack", families=[w.family]),  # its own family: adding one reruns no other job
        family=lambda w: w.family,
        runtime=runtime,
        seed=lambda w: int(w.seed),
    threads: ONE_CPU
    resources: **job_resources(MEM_TRAIN, 60, GPU)
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/call.py"


rule quantize:
    input:
        model=ckpt("{model}"),
        eval_data=rules.make_data.output.eval_data,
    output:
        out=study.curve(R, family="quant"),
    log:
        f"{S}/logs/relearn/{{model}}/quant.log",
    params:
        call="pipeline_py.stages.attack.quantize",
        cfg=section("attack", families=["quant"]),
        runtime=runtime,
    threads: ONE_CPU
    resources: **job_resources(MEM_SMALL, 15, GPU if STUDY.setting == "wmdp" else None)
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/call.py"


rule evaluate:
    input:
        model=ckpt("{model}"),
        eval_data=rules.make_data.output.eval_data,
    output:
        out=study.evaluation(R),
    log:
        f"{S}/logs/evaluate/{{model}}.log",
    params:
        call="pipeline_py.stages.attack.evaluate",
        name=lambda w: w.model,
        runtime=runtime,
    threads: ONE_CPU
    resources: **job_resources(MEM_SMALL, 15, GPU if STUDY.setting == "wmdp" else None)  # lm-eval runs the model
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/call.py"
