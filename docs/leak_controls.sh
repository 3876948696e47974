# Teacher-leak controls (docs/results.md#teacher-leak-controls): two variations of the fresh-init student of
# each seed of the default run, every other setting as in config.yaml, attacked with the default attack.
#   bash docs/leak_controls.sh [SEED ...]   (default: 0 1 2; about 7 min per seed on 2 cores)
# Run after `snakemake --cores 8 pareto_plot`. Writes results/leak/seed<S>/ (a seed's finished outputs are kept)
# and prints the table: mean ± 95 % half-width over the seeds.
set -euo pipefail
cd "$(dirname "$0")/.."  # the repository root
SEEDS=${*:-0 1 2}
section() {  # a section of config.yaml as the workflow hands it to a stage (flow YAML), with dotted KEY=YAML changes
  python - "$@" <<'PY'
import sys, yaml
from pipeline_py.config import Study
name, *changes = sys.argv[1:]
out = Study.from_dict(yaml.safe_load(open("config.yaml"))).to_dict()[name]
for change in changes:
    key, value = change.split("=", 1)
    *path, last = key.split(".")
    node = out
    for k in path:
        node = node[k]
    node[last] = yaml.safe_load(value)
print(yaml.safe_dump(out, default_flow_style=True, width=10**6).strip())  # PyYAML reads its own floats back
PY
}
DIST=$(section distill)
MAXENT400=$(section unlearn 'methods=[maxent]' hparams.maxent.steps=400)  # MaxEnt 4x longer, otherwise as configured
ATT=$(section attack)
RT='{precision: fp32, threads: 1}'
stage() { python -m pipeline_py "pipeline_py.stages.$1" "${@:2}"; }
for S in $SEEDS; do
  R=results/arithmetic/seed$S OUT=results/leak/seed$S
  mkdir -p "$OUT"
  echo "seed $S: distillation" >&2
  # 1. retain_only: the same MaxEnt teacher and fresh init, distilled on the oracle's data (no forget problem shown)
  [ -f "$OUT/retain_only/model.safetensors" ] || stage distill.distill teacher=$R/models/base/maxent \
    student=$R/models/base/maxent/noised_fresh data=$R/data/oracle.jsonl eval_data=$R/data/eval.jsonl \
    out=$OUT/retain_only/model.safetensors cfg="$DIST" runtime="$RT" seed=$S > $OUT/retain_only.distill.log 2>&1 &
  # 2. maxent400: a teacher closer to uniform (MaxEnt 4x longer), then maxent400_fresh: the same fresh-init distillation
  [ -f "$OUT/maxent400/model.safetensors" ] || stage unlearn.unlearn base=$R/models/base forget=$R/data/forget_labeled.jsonl \
    retain=$R/data/retain_labeled.jsonl out=$OUT/maxent400/model.safetensors method=maxent cfg="$MAXENT400" \
    runtime="$RT" seed=$S > $OUT/maxent400.unlearn.log 2>&1
  [ -f "$OUT/maxent400_fresh/model.safetensors" ] || stage distill.distill teacher=$OUT/maxent400 \
    student=$R/models/base/maxent/noised_fresh data=$R/data/train.jsonl eval_data=$R/data/eval.jsonl \
    out=$OUT/maxent400_fresh/model.safetensors cfg="$DIST" runtime="$RT" seed=$S > $OUT/maxent400_fresh.distill.log 2>&1
  wait
  echo "seed $S: evaluation and attacks" >&2
  for m in retain_only maxent400 maxent400_fresh; do
    [ -f "$OUT/$m.eval.csv" ] || stage attack.evaluate model=$OUT/$m eval_data=$R/data/eval.jsonl out=$OUT/$m.eval.csv \
      name=$m runtime="$RT" > $OUT/$m.eval.log 2>&1
    for fam in forget mix; do
      [ -f "$OUT/$m.$fam.csv" ] || stage attack.relearn model=$OUT/$m attack=$R/data/attack.jsonl retain=$R/data/train.jsonl \
        eval_data=$R/data/eval.jsonl out=$OUT/$m.$fam.csv cfg="$ATT" family=$fam runtime="$RT" seed=$S > $OUT/$m.$fam.log 2>&1 &
    done
    wait
  done
done
python - $SEEDS <<'PY'
import json, sys
import pandas as pd
from pipeline_py.report import worst_case
from pipeline_py.robustness import mean_interval
seeds = sys.argv[1:]
def row(seed, name):  # (evaluation CSV, attack curve prefix, record of the distillation or None)
    R, L = f"results/arithmetic/seed{seed}", f"results/leak/seed{seed}"
    return {"oracle": (f"{R}/eval/oracle.csv", f"{R}/attack/oracle/", None),
            "maxent (teacher)": (f"{R}/eval/base/maxent.csv", f"{R}/attack/base/maxent/", None),
            "undo_fresh (default)": (f"{R}/eval/base/maxent/undo_fresh.csv", f"{R}/attack/base/maxent/undo_fresh/",
                                     f"{R}/models/base/maxent/undo_fresh/record.json"),
            "retain_only": (f"{L}/retain_only.eval.csv", f"{L}/retain_only.", f"{L}/retain_only/record.json"),
            "maxent400": (f"{L}/maxent400.eval.csv", f"{L}/maxent400.", None),
            "maxent400_fresh": (f"{L}/maxent400_fresh.eval.csv", f"{L}/maxent400_fresh.",
                                f"{L}/maxent400_fresh/record.json")}[name]
def cell(vals, digits=3):
    m, h = mean_interval(vals)
    return f"{m:.{digits}f}" + ("" if h != h else f" ± {h:.{digits}f}")
print(f"seeds {' '.join(seeds)}; mean ± 95 % half-width over them\n")
print("| model | forget acc. | retain acc. | klu_forget | relearned forget (worst, step 200) | minus undo_fresh's, paired "
      "by seed | recovered |\n|---|---|---|---|---|---|---|")
worst = {}  # model -> its relearned forget per seed
for name in ("oracle", "maxent (teacher)", "undo_fresh (default)", "retain_only", "maxent400", "maxent400_fresh"):
    cols = {"f": [], "r": [], "k": [], "w": [], "rec": []}
    for s in seeds:
        ev, att, rec = row(s, name)
        e = pd.read_csv(ev).set_index("metric").value
        c = pd.concat(pd.read_csv(f"{att}{fam}.csv") for fam in ("forget", "mix"))
        wc = worst_case(c.rename(columns={"seed": "aseed"}).assign(seed=s, model=name))  # sorted by step
        cols["f"].append(e.acc_forget); cols["r"].append(e.acc_retain); cols["k"].append(e.klu_forget)
        cols["w"].append(wc.acc_forget.iloc[-1])
        if rec:
            cols["rec"].append(json.load(open(rec)).get("recovered"))
    worst[name] = cols["w"]
    diff = cell([a - b for a, b in zip(cols["w"], worst["undo_fresh (default)"])]) \
        if name in ("retain_only", "maxent400_fresh") else "–"
    rec = "–" if not cols["rec"] else f"{sum(bool(x) for x in cols['rec'])}/{len(cols['rec'])}"
    print(f"| {name} | {cell(cols['f'])} | {cell(cols['r'])} | {cell(cols['k'], 2)} | {cell(cols['w'])} | {diff} | {rec} |")
PY
