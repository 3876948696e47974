# The typed study, its paths and models (pipeline_py/study.py owns them), and what each job asks for.
import os

from pipeline_py import study
from pipeline_py.config import Study

# Every section typed and checked, with the checks that tie keys together; an error names the key path.
STUDY = Study.from_dict(config)
SECTIONS = STUDY.to_dict()  # every section as a mapping, defaults filled in (what rules hand to stages)
R = f"{STUDY.results}/{STUDY.setting}"  # every output of this setting
S = study.seed_dir(R)  # one seed's data, models, attacks and metrics ({seed} wildcard)
MODELS = study.models(STUDY)  # attacked and evaluated
CPUS = os.cpu_count() or 1
# pretrain_seed: the seed whose directory holds the one pretraining (data splits, base, oracle, routed model)
# that every seed starts from; the pretraining rules run only there and workflow/rules/share.smk copies their
# files into the other seeds' directories. Unset, each seed pretrains its own.
P = STUDY.pretrain_seed
PRETRAINED_SEED = r"\d+" if P is None else str(P)  # seeds whose pretraining rules run

wildcard_constraints:
    **study.WILDCARDS,


# The wmdp setting: every named model and data set must load, checked once before any job starts (onstart
# runs after the DAG is built and never in a dry run, so a cluster run can be planned from a login node).
onstart:
    if STUDY.setting == "wmdp" and workflow.is_main_process:
        from pipeline_py.wmdp_sources import check_sources

        check_sources(config["wmdp"])


def ckpt(model):
    return study.ckpt(R, model)


def curves(seed, model):
    return study.curves(R, STUDY, seed, model)


def section(name, **changes):
    """A config section as the mapping a stage function's typed parameter is built from."""
    return {**SECTIONS[name], **changes}


# On a cluster no --cores is given (the submitting process) or the job runs inside its own allocation
# (remote mode): there a job's threads are the CPUs SLURM grants it (--cpus-per-task).
ON_CLUSTER = workflow.resource_settings.cores is None or workflow.remote_exec


def runtime(wildcards, threads):
    """Precision and device from the config; torch threads = the job's share of the real CPUs (Snakemake
    counts threads against --cores)."""
    n = threads if ON_CLUSTER else max(1, threads * CPUS // max(workflow.cores, 1))
    return {"precision": STUDY.precision, "device": STUDY.device, "threads": n}


if ON_CLUSTER:
    HALF = STUDY.cluster.train_threads  # training jobs (pretrain, distill)
    ONE_CPU = 1  # small jobs
else:
    HALF = max(1, workflow.cores // 2)  # training jobs: two at a time fill the machine
    ONE_CPU = max(1, workflow.cores // CPUS)  # small jobs: one real core each

# What a job asks a scheduler for, besides its threads: memory in MB (peak RSS of the default study's
# training jobs is ~750 MB, of the others ~500 MB; GPU jobs get 2 GB more for the CUDA context) and wall
# time in minutes (the longest default job, pretraining, takes ~7 min on a shared 2-core CPU). Larger
# studies raise them per rule with --set-resources (docs/cluster.md).
GPU = STUDY.cluster.gpu  # GPUs per training job; the SLURM executor turns it into --gpus
MEM_TRAIN = 2000 + 2000 * min(GPU, 1)
MEM_SMALL = 1000
# The wmdp setting's jobs hold a pretrained model (gemma-2-2b: ~10 GB of fp32 weights, ~52 GB with its
# gradients and AdamW moments) or build its corpora: they ask for wmdp.resources' memory and wall time.
MODEL_JOB = {k: v for k, v in STUDY.wmdp.resources.to_dict().items() if v} if STUDY.setting == "wmdp" else {}


def job_resources(mem_mb, runtime, gpu=None):
    """A job's request: memory in MB, wall time in minutes and, for a job that may train, GPUs; in the
    wmdp setting memory and wall time come from MODEL_JOB where it names them."""
    out = {"mem_mb": mem_mb, "runtime": runtime, **MODEL_JOB}
    return out if gpu is None else {**out, "gpu": gpu}
