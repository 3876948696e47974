rule relearn:
    input:
        model=ckpt("{model}"),
        attack=rules.make_data.output.attack,
        retain=rules.make_data.output.train,
        eval_data=rules.make_data.output.eval_data,
    output:
        out=study.curve(R),
    log:
        f"{S}/logs/relearn/{{model}}/{{adata}}_lr{{lr}}_s{{aseed}}.log",
    params:
        call="pipeline_py.stages.attack.relearn",
        cfg=section("attack"),
        data=lambda w: w.adata,
        lr=lambda w: float(w.lr),
        seed=lambda w: int(w.aseed),
        runtime=runtime,
    threads: ONE_CPU
    resources: **job_resources(MEM_TRAIN, 30, GPU)
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
