# Teacher-leak controls on seed 0 of the default run (docs/results.md#teacher-leak-controls-seed-0): every
# setting as in config.yaml except the one varied; about 7 min on 2 cores. Writes results/leak/.
set -e
cd "$(dirname "$0")/.."  # the repository root; run after the default study (seed 0 of results/arithmetic)
R=results/arithmetic/seed0
OUT=results/leak
mkdir -p $OUT
DIST='{steps: 2500, lr: 3.0e-3, batch_size: 32, seq_len: 64, warmup: 50, weight_decay: 0.1, save_every: 250, stop_within: 0.05, check_every: 20}'
ATT='{lrs: [1.0e-5, 3.16e-5, 1.0e-4, 3.16e-4, 1.0e-3], seeds: [0], steps: 200, eval_every: 50}'
RT='{precision: fp32, threads: 1}'
# 1. the fresh-init student distilled from the same MaxEnt teacher on retain-only data (the oracle's data)
python -m pipeline_py pipeline_py.stages.distill.distill teacher=$R/models/base/maxent student=$R/models/base/maxent/noised_fresh \
  data=$R/data/oracle.jsonl eval_data=$R/data/eval.jsonl out=$OUT/retain_only/model.safetensors cfg="$DIST" runtime="$RT" seed=0 > $OUT/distill_retain_only.log 2>&1 &
# 2. a teacher closer to uniform on forget answers: MaxEnt 4x longer (400 steps), then the same fresh-init distillation
python -m pipeline_py pipeline_py.stages.unlearn.unlearn base=$R/models/base forget=$R/data/forget_labeled.jsonl retain=$R/data/retain_labeled.jsonl \
  out=$OUT/maxent400/model.safetensors method=maxent cfg='{batch_size: 32, warmup: 10, grad_clip: 1.0, methods: [maxent], hparams: {maxent: {steps: 400, lr: 1.0e-4, retain_weight: 5.0}}}' runtime="$RT" seed=0 > $OUT/unlearn400.log 2>&1
python -m pipeline_py pipeline_py.stages.distill.distill teacher=$OUT/maxent400 student=$R/models/base/maxent/noised_fresh \
  data=$R/data/train.jsonl eval_data=$R/data/eval.jsonl out=$OUT/maxent400_fresh/model.safetensors cfg="$DIST" runtime="$RT" seed=0 > $OUT/distill400.log 2>&1
wait
for m in retain_only maxent400 maxent400_fresh; do
  python -m pipeline_py pipeline_py.stages.attack.evaluate model=$OUT/$m eval_data=$R/data/eval.jsonl out=$OUT/$m.eval.csv name=$m runtime="$RT" > $OUT/$m.eval.log 2>&1
  for fam in forget mix; do
    python -m pipeline_py pipeline_py.stages.attack.relearn model=$OUT/$m attack=$R/data/attack.jsonl retain=$R/data/train.jsonl \
      eval_data=$R/data/eval.jsonl out=$OUT/$m.$fam.csv cfg="$ATT" family=$fam runtime="$RT" seed=0 > $OUT/$m.$fam.log 2>&1 &
  done
  wait
done
# the table of docs/results.md: before the attack, and the worst relearned forget at the last step over LR x family
python - "$R" "$OUT" <<'PY'
import sys, pandas as pd
R, OUT = sys.argv[1:]
rows = [("oracle", f"{R}/eval/oracle.csv", f"{R}/attack/oracle/"), ("maxent (teacher)", f"{R}/eval/base/maxent.csv", f"{R}/attack/base/maxent/"),
        ("undo_fresh (default)", f"{R}/eval/base/maxent/undo_fresh.csv", f"{R}/attack/base/maxent/undo_fresh/")] + \
       [(m, f"{OUT}/{m}.eval.csv", f"{OUT}/{m}.") for m in ("retain_only", "maxent400", "maxent400_fresh")]
print("| model | forget acc. | retain acc. | klu_forget | relearned forget (worst, last step) |\n|---|---|---|---|---|")
for name, ev, att in rows:
    e = pd.read_csv(ev).set_index("metric").value
    c = pd.concat(pd.read_csv(f"{att}{fam}.csv") for fam in ("forget", "mix"))
    c = c[(c.metric == "acc_forget") & (c.step == c.step.max())]
    print(f"| {name} | {e.acc_forget:.3f} | {e.acc_retain:.3f} | {e.klu_forget:.2f} | "
          f"{c.groupby(['data', 'lr']).value.mean().max():.3f} |")
PY
