rule relearn:
    input:
        model=ckpt("{model}"),
        attack=rules.make_data.output.attack,
        retain=rules.make_data.output.train,
        eval_data=rules.make_data.output.eval_data,
    output:
        out=f"{S}/attack/{{model}}/{{adata}}_lr{{lr}}_s{{aseed}}.csv",
    log:
        f"{S}/logs/relearn/{{model}}/{{adata}}_lr{{lr}}_s{{aseed}}.log",
    params:
        stage="relearn",
        data=lambda w: w.adata,
        lr=lambda w: float(w.lr),
        seed=lambda w: int(w.aseed),
        **{k: config["attack"][k] for k in ("steps", "eval_every", "batch_size", "seq_len", "mix_forget_fraction")},
        precision=config["precision"],
        device=config["device"],
        threads=torch_threads,
    threads: ONE_CPU
    resources: **job_resources(MEM_TRAIN, 30, GPU)
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/stage.py"


rule evaluate:
    input:
        model=ckpt("{model}"),
        eval_data=rules.make_data.output.eval_data,
        curves=lambda w: attack_curves(w.seed, w.model),
    output:
        out=f"{S}/eval/{{model}}.csv",
    log:
        f"{S}/logs/evaluate/{{model}}.log",
    params:
        stage="evaluate",
        name=lambda w: w.model,
        forget_metric=config["report"].get("forget_metric"),
        higher_is_better=config["report"].get("higher_is_better"),
        precision=config["precision"],
        device=config["device"],
        threads=torch_threads,
    threads: ONE_CPU
    resources: **job_resources(MEM_SMALL, 15, GPU if WMDP else None)  # lm-eval runs a pretrained model
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/stage.py"
