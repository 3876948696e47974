rule pareto_plot:
    input:
        evals=expand(f"{S}/eval/{{model}}.csv", seed=config["seeds"], model=models()),
        curves=expand(f"{S}/attack/{{model}}/lr{{lr}}_s{{aseed}}.csv", seed=config["seeds"], model=models(),
                      lr=config["attack"]["lrs"], aseed=config["attack"]["seeds"]),
    output:
        summary=f"{R}/summary.csv",
        curves_png=f"{R}/figures/relearning_curves.png",
        pareto_png=f"{R}/figures/pareto.png",
        compute_png=f"{R}/figures/robustness_vs_compute.png",
    log:
        f"{R}/logs/pareto_plot.log",
    params:
        stage="pareto_plot",
        budgets=config["report"]["budgets"],
    localrule: True
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/stage.py"
