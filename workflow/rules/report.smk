rule summarize:
    input:
        evals=[study.evaluation(R, m, s) for s in STUDY.seeds for m in MODELS],
        curves=[c for s in STUDY.seeds for m in MODELS for c in curves(s, m)],
        records=[ckpt(m).format(seed=s) for s in STUDY.seeds for m in study.checkpoints(STUDY)],
        eval_data=rules.make_data.output.eval_data.format(seed=STUDY.seeds[0]),
    output:
        summary=report(f"{R}/summary.csv", caption="../report/summary.rst", category="Tables"),
        models=report(f"{R}/models.csv", caption="../report/models.rst", category="Tables"),
        models_mean=f"{R}/models_mean.csv",
        worst=f"{R}/worst_case.csv",
        compute=report(f"{R}/compute.csv", caption="../report/compute.rst", category="Tables"),
        families=f"{R}/families.csv",
        families_md=f"{R}/families.md",
        claims=f"{R}/claims.csv",
        claims_md=f"{R}/claims.md",
    log:
        f"{R}/logs/summarize.log",
    params:
        call="pipeline_py.report.summarize",
        cfg=section("report"),
    localrule: True
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/call.py"


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
        call="pipeline_py.figures.pareto_plot",
    localrule: True
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/call.py"
