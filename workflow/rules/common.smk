# Paths, the list of models of the study, and checks the schema cannot express.
import os

R = f"{config['results']}/{config['setting']}"  # every output of this setting
S = f"{R}/seed{{seed}}"  # one seed's data, models, attacks and metrics
CPUS = os.cpu_count() or 1

wildcard_constraints:
    seed=r"\d+",
    root=r"base|routed",
    method=r"[a-z][a-z0-9_]*",
    init=r"a[0-9.e-]+_b[0-9.e-]+|fresh",
    lr=r"[0-9.]+(e-?[0-9]+)?",
    aseed=r"\d+",
    adata=r"forget|mix",
    start=r"base|fresh",
    model=r"(base|oracle|routed)(/[a-z][a-z0-9_]*(/undo_(a[0-9.e-]+_b[0-9.e-]+|fresh))?)?",

# Fail at DAG build time, naming the key, for what JSON schema cannot check (method hyperparameters,
# alpha/beta, values that depend on each other). A job running on a cluster node (remote mode) skips
# this: the submitting process checked it, and the checks import torch.
WMDP = config["setting"] == "wmdp"
ERA = config.get("era") or {}  # `era: null` in a config file turns off the default's ERA branch
if not workflow.remote_exec:
    from pipeline_py.config_checks import check_config
    from pipeline_py.routing import check_era

    check_config(config)
    if ERA:
        check_era(ERA, config["model"], config["setting"])
    if WMDP and workflow.is_main_process:  # every named model and data set loads (not rechecked in jobs)
        from pipeline_py.wmdp_sources import check_sources

        check_sources(config["wmdp"])


def setting_data():
    """The make_data configuration of the setting: the `wmdp` block, or `data` for the others."""
    return config["wmdp"] if WMDP else config["data"]


def inits():
    """Student initialisations: shrink-and-perturb at each alpha, plus a fresh init (Unlearn-and-Distill)."""
    beta = config["noise"]["beta"]
    return [f"a{a}_b{beta}" for a in config["noise"]["alphas"]] + (["fresh"] if config["noise"]["fresh_init"] else [])


ORACLE = not WMDP or bool(config["wmdp"].get("oracle"))  # a pretrained base may come without an oracle
MATCH = config["oracle_match"]["inits"] if ORACLE else []


def undo_methods():
    """Unlearned models that are distilled into noised students (all methods unless noise.methods names some)."""
    return config["noise"].get("methods") or list(config["unlearn"]["methods"])


def models():
    """Every model that is attacked and evaluated, as paths under models/."""
    out = (["base", "oracle"] if ORACLE else ["base"]) + [f"base/{m}" for m in config["unlearn"]["methods"]]
    for m in undo_methods():
        out += [f"base/{m}/undo_{i}" for i in inits()]
    if ERA:  # ERA: routed pretraining, then ablation; its UNDO students at era.undo_alphas
        beta = config["noise"]["beta"]
        out += ["routed/era"] + [f"routed/era/undo_a{a}_b{beta}" for a in ERA.get("undo_alphas", [])]
    return out + [f"oracle/match_{start}" for start in MATCH]


def checkpoints():
    """Every checkpoint the study writes (the compute ledger lists them all), as paths under models/."""
    noised = [f"base/{m}/noised_{i}" for m in undo_methods() for i in inits()]
    beta = config["noise"]["beta"]
    noised += [f"routed/era/noised_a{a}_b{beta}" for a in ERA.get("undo_alphas", [])]
    return models() + noised + (["oracle/noised_fresh"] if "fresh" in MATCH else [])


def attack_curves(seed, model):
    """The attack runs of a model: every data choice x LR x attack seed."""
    a = config["attack"]
    return expand(f"{S}/attack/{{model}}/{{adata}}_lr{{lr}}_s{{aseed}}.csv", seed=seed, model=model,
                  adata=a["data"], lr=a["lrs"], aseed=a["seeds"])


def ckpt(model):
    return f"{S}/models/{model}/model.safetensors"


# On a cluster no --cores is given (the submitting process) or the job runs inside its own allocation
# (remote mode): there a job's threads are the CPUs SLURM grants it (--cpus-per-task).
ON_CLUSTER = workflow.resource_settings.cores is None or workflow.remote_exec


def torch_threads(wildcards, threads):
    """Snakemake counts threads against --cores; map a job's share of them onto the real CPUs."""
    if ON_CLUSTER:
        return threads
    return max(1, threads * CPUS // max(workflow.cores, 1))


if ON_CLUSTER:
    HALF = config["cluster"]["train_threads"]  # training jobs (pretrain, distill)
    ONE_CPU = 1  # small jobs
else:
    HALF = max(1, workflow.cores // 2)  # training jobs: two at a time fill the machine
    ONE_CPU = max(1, workflow.cores // CPUS)  # small jobs: one real core each

# What a job asks a scheduler for, besides its threads: memory in MB (peak RSS of the default study's
# training jobs is ~750 MB, of the others ~500 MB; GPU jobs get 2 GB more for the CUDA context) and wall
# time in minutes (the longest default job, pretraining, takes ~7 min on a shared 2-core CPU). Larger
# studies raise them per rule with --set-resources (README, "Running on a cluster").
GPU = config["cluster"]["gpu"]  # GPUs per training job; the SLURM executor turns it into --gpus
MEM_TRAIN = 2000 + 2000 * min(GPU, 1)
MEM_SMALL = 1000
# The wmdp setting's jobs hold a pretrained model (gemma-2-2b: ~10 GB of fp32 weights, ~52 GB with its
# gradients and AdamW moments) or build its corpora: they ask for wmdp.resources' memory and wall time.
MODEL_JOB = dict(config["wmdp"].get("resources") or {}) if WMDP else {}


def job_resources(mem_mb, runtime, gpu=None):
    """A job's request: memory in MB, wall time in minutes and, for a job that may train, GPUs; in the
    wmdp setting memory and wall time come from MODEL_JOB where it names them."""
    out = {"mem_mb": mem_mb, "runtime": runtime, **MODEL_JOB}
    return out if gpu is None else {**out, "gpu": gpu}
