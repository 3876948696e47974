# Paths, the list of models of the study, and checks the schema cannot express.
import os

from pipeline_py.config_checks import check_config

R = f"{config['results']}/{config['setting']}"  # every output of this setting
S = f"{R}/seed{{seed}}"  # one seed's data, models, attacks and metrics
CPUS = os.cpu_count() or 1

wildcard_constraints:
    seed=r"\d+",
    method=r"[a-z][a-z0-9_]*",
    init=r"a[0-9.e-]+_b[0-9.e-]+|fresh",
    lr=r"[0-9.]+(e-?[0-9]+)?",
    aseed=r"\d+",
    adata=r"forget|mix",
    start=r"base|fresh",
    model=r"(base|oracle)(/[a-z][a-z0-9_]*(/undo_(a[0-9.e-]+_b[0-9.e-]+|fresh))?)?",

# Fail at DAG build time, naming the key, for what JSON schema cannot check (method hyperparameters,
# alpha/beta, values that depend on each other).
check_config(config)
WMDP = config["setting"] == "wmdp"
if WMDP and workflow.is_main_process:  # every named model and data set loads (not rechecked inside jobs)
    from pipeline_py.wmdp_sources import check_sources

    check_sources(config["wmdp"])
# a pretrained model needs a GPU and host memory for its training and evaluation jobs, and memory to load
GPU_JOB = dict(config["wmdp"].get("resources", {})) if WMDP else {}
MEM_JOB = {k: v for k, v in GPU_JOB.items() if k != "gpu"}


def setting_data():
    """The make_data configuration of the setting: the `wmdp` section, or `data` for arithmetic."""
    return config["wmdp"] if WMDP else config["data"]


def inits():
    """Student initialisations: shrink-and-perturb at each alpha, plus a fresh init (Unlearn-and-Distill)."""
    beta = config["noise"]["beta"]
    return [f"a{a}_b{beta}" for a in config["noise"]["alphas"]] + (["fresh"] if config["noise"]["fresh_init"] else [])


ORACLE = not WMDP or bool(config["wmdp"].get("oracle"))  # a pretrained base may come without an oracle
MATCH = config["oracle_match"]["inits"] if ORACLE else []
RUN = config["unlearn"].get("run") or list(config["unlearn"]["methods"])  # the methods this study runs


def models():
    """Every model that is attacked and evaluated, as paths under models/."""
    out = ["base", "oracle"] if ORACLE else ["base"]
    for m in RUN:
        out += [f"base/{m}"] + [f"base/{m}/undo_{i}" for i in inits()]
    return out + [f"oracle/match_{start}" for start in MATCH]


def checkpoints():
    """Every checkpoint the study writes (the compute ledger lists them all), as paths under models/."""
    noised = [f"base/{m}/noised_{i}" for m in RUN for i in inits()]
    return models() + noised + (["oracle/noised_fresh"] if "fresh" in MATCH else [])


def attack_curves(seed, model):
    """The attack runs of a model: every data choice x LR x attack seed."""
    a = config["attack"]
    return expand(f"{S}/attack/{{model}}/{{adata}}_lr{{lr}}_s{{aseed}}.csv", seed=seed, model=model,
                  adata=a["data"], lr=a["lrs"], aseed=a["seeds"])


def ckpt(model):
    return f"{S}/models/{model}/model.safetensors"


def torch_threads(wildcards, threads):
    """Snakemake counts threads against --cores; map a job's share of them onto the real CPUs."""
    return max(1, threads * CPUS // max(workflow.cores, 1))


HALF = max(1, workflow.cores // 2)  # training jobs: two at a time fill the machine
ONE_CPU = max(1, workflow.cores // CPUS)  # small jobs: one real core each
