# The oracle-matching experiment: the oracle's outputs distilled into the pretrained base and into a
# random init (same budget, no early stop); both are then attacked like every other model.
use rule noise as oracle_fresh_init with:
    input:
        teacher=ckpt("oracle"),
    output:
        out=ckpt("oracle/noised_fresh"),
    log:
        f"{S}/logs/oracle_fresh_init.log",
    params:
        call="pipeline_py.stages.distill.noise",
        init="fresh",
        seed=lambda w: int(w.seed),


use rule distill as match_oracle with:
    input:
        teacher=ckpt("oracle"),
        student=lambda w: ckpt("base" if w.start == "base" else "oracle/noised_fresh").format(seed=w.seed),
        data=rules.make_data.output.train,
        eval_data=rules.make_data.output.eval_data,
    output:
        out=ckpt("oracle/match_{start}"),
    log:
        f"{S}/logs/match_oracle_{{start}}.log",
    benchmark:
        f"{S}/benchmarks/match_oracle_{{start}}.tsv"
    params:
        call="pipeline_py.stages.distill.distill",
        cfg=section("distill", steps=STUDY.oracle_match.steps, stop_within=None),
        teacher_in_lineage=lambda w: w.start != "base",
        matched_within=STUDY.distill.stop_within,  # flagged (recovered = false) when its retain falls short
        runtime=runtime,
        seed=lambda w: int(w.seed),
