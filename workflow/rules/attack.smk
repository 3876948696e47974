rule relearn:
    input:
        model=ckpt("{model}"),
        attack=rules.make_data.output.attack,
        eval_data=rules.make_data.output.eval_data,
    output:
        out=f"{S}/attack/{{model}}/lr{{lr}}_s{{aseed}}.csv",
    log:
        f"{S}/logs/relearn/{{model}}/lr{{lr}}_s{{aseed}}.log",
    params:
        stage="relearn",
        lr=lambda w: float(w.lr),
        seed=lambda w: int(w.aseed),
        **{k: config["attack"][k] for k in ("steps", "eval_every", "batch_size", "seq_len")},
        precision=config["precision"],
        device=config["device"],
        threads=torch_threads,
    threads: ONE_CPU
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/stage.py"


rule evaluate:
    input:
        model=ckpt("{model}"),
        eval_data=rules.make_data.output.eval_data,
        curves=lambda w: expand(f"{S}/attack/{w.model}/lr{{lr}}_s{{aseed}}.csv", seed=w.seed,
                                lr=config["attack"]["lrs"], aseed=config["attack"]["seeds"]),
    output:
        out=f"{S}/eval/{{model}}.csv",
    log:
        f"{S}/logs/evaluate/{{model}}.log",
    params:
        stage="evaluate",
        name=lambda w: w.model,
        precision=config["precision"],
        device=config["device"],
        threads=torch_threads,
    threads: ONE_CPU
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/stage.py"
