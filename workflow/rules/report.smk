rule summarize:
    input:
        evals=expand(f"{S}/eval/{{model}}.csv", seed=config["seeds"], model=models()),
        curves=[c for seed in config["seeds"] for c in attack_curves(seed, models())],
        records=expand(ckpt("{model}"), seed=config["seeds"], model=checkpoints()),
        eval_data=expand(rules.make_data.output.eval_data, seed=config["seeds"][0])[0],
    output:
        summary=report(f"{R}/summary.csv", caption="../report/summary.rst", category="Tables"),
        models=report(f"{R}/models.csv", caption="../report/models.rst", category="Tables"),
        models_mean=f"{R}/models_mean.csv",
        worst=f"{R}/worst_case.csv",
        compute=report(f"{R}/compute.csv", caption="../report/compute.rst", category="Tables"),
    log:
        f"{R}/logs/summarize.log",
    params:
        stage="summarize",
        **config["report"],
    localrule: True
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/stage.py"


rule pareto_plot:
    input:
        summary=rules.summarize.output.summary,
        worst=rules.summarize.output.worst,
    output:
        curves_png=report(f"{R}/figures/relearning_curves.png", caption="../report/relearning_curves.rst",
                          category="Figures"),
        pareto_png=report(f"{R}/figures/pareto.png", caption="../report/pareto.rst", category="Figures"),
        compute_png=report(f"{R}/figures/robustness_vs_compute.png", caption="../report/robustness_vs_compute.rst",
                           category="Figures"),
        match_png=report(f"{R}/figures/oracle_matching.png", caption="../report/oracle_matching.rst",
                         category="Figures"),
    log:
        f"{R}/logs/pareto_plot.log",
    params:
        stage="pareto_plot",
    localrule: True
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/stage.py"
