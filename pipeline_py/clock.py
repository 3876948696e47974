"""The study's own clock: where the wall time of a finished run went, by stage class, from the Snakemake
`benchmark:` files and the jobs' logs, with the critical path against the machine's cores.

    python -m pipeline_py.bench --breakdown results   # pipeline_py/clock.py
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


STAGE_CLASSES = ("data", "pretrain", "unlearn", "distill", "attack", "evaluation", "report", "other")
TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


def stage_class(job: str) -> str:
    """The stage class of a job named as its log/benchmark file is (relative to logs/, no extension)."""
    top, _, rest = job.partition("/")
    if top == "relearn":
        return "attack"
    if top == "evaluate":
        return "evaluation"
    if job in ("make_data", "filter_data"):
        return "data"
    if job.startswith(("pretrain", "load_base", "load_oracle")):
        return "pretrain"
    if job.startswith(("unlearn_", "ablate")):
        return "unlearn"
    if job.startswith(("noise_", "distill_", "match_oracle_", "oracle_fresh_init")):
        return "distill"
    if job in ("summarize", "pareto_plot") or top == "report":
        return "report"
    return "other"


def log_stamps(path: Path) -> tuple[float, float] | None:
    """Epoch seconds of the first and the last timestamped line of a job's log (None without two stamps)."""
    stamps = []
    for line in path.read_text(errors="replace").splitlines():
        m = TIMESTAMP.match(line)
        if m:
            stamps.append(time.mktime(time.strptime(m[1], "%Y-%m-%d %H:%M:%S")) + int(m[2]) / 1000)
    return (min(stamps), max(stamps)) if len(stamps) >= 2 else None


def idle_core_seconds(intervals: list[tuple[float, float]], cores: int) -> float:
    """Core-seconds left idle between the first start and the last end: the integral of max(0, cores - jobs
    running) over that span, from each job's (start, end)."""
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    idle, running = 0.0, 0
    for (t, d), (t_next, _) in zip(events, events[1:]):
        running += d
        idle += max(0, cores - running) * (t_next - t)
    return idle


def tsv_seconds(path: Path) -> float | None:
    """Mean `s` (wall seconds) over the rows of a Snakemake benchmark TSV (several rows when `repeat` is used)."""
    lines = [ln.split("\t") for ln in path.read_text().splitlines() if ln.strip()]
    if len(lines) < 2 or "s" not in lines[0]:
        return None
    col = lines[0].index("s")
    vals = [float(r[col]) for r in lines[1:] if len(r) > col]
    return sum(vals) / len(vals) if vals else None


def startup_seconds(repeats: int = 1) -> float:
    """Wall time of a fresh process importing what a job imports (`import torch, pipeline_py.stages.attack`)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch, pipeline_py.stages.attack"], check=True, cwd=ROOT)
        best = min(best, time.perf_counter() - t0)
    return best


def collect_jobs(results: str | Path, startup: float) -> list[dict]:
    """Every job of a finished run under `results` (<setting>/seed*/ and <setting>/logs for the report): its
    wall seconds from its benchmark TSV (start-up included), else from its log's first/last timestamps plus
    `startup` (a log starts after the imports). Returns dicts: setting, seed, job, cls, wall, source, and where
    its log has two stamps, start and end (epoch seconds)."""
    jobs = []
    for setting_dir in sorted(p for p in Path(results).iterdir() if p.is_dir()):
        dirs = [(d.name, d) for d in sorted(setting_dir.glob("seed*")) if d.is_dir()] + [("", setting_dir)]
        for seed, d in dirs:
            found = {}
            bench_dir = d / "benchmarks"
            for f in sorted(bench_dir.rglob("*.tsv")):  # relearn/<model>/<family>.tsv and the like, nested
                if (s := tsv_seconds(f)) is not None:
                    found[f.relative_to(bench_dir).with_suffix("").as_posix()] = (s, "benchmark")
            logs = d / "logs"
            stamped = {f.relative_to(logs).with_suffix("").as_posix(): st  # each log read once
                       for f in (sorted(logs.rglob("*.log")) if logs.is_dir() else []) if (st := log_stamps(f))}
            for name, (first, last) in stamped.items():
                found.setdefault(name, (last - first + startup, "log"))
            jobs += [{"setting": setting_dir.name, "seed": seed, "job": name, "cls": stage_class(name), "wall": s,
                      "source": src} for name, (s, src) in sorted(found.items())]
            for j in jobs[len(jobs) - len(found):]:
                if (st := stamped.get(j["job"])) is None:
                    continue
                j["start"], j["end"] = st  # when it ran: the observed schedule
                if j["source"] == "benchmark":  # benchmark wall minus log span: the job's whole overhead
                    j["overhead"] = j["wall"] - (st[1] - st[0])
    return jobs


CHAIN = ("data", "pretrain", "unlearn", "noise", "distill", "attack")  # the path every study has, in order


def chain_step(job: str, cls: str) -> str | None:
    if job == "make_data":
        return "data"
    if job.startswith("noise_"):
        return "noise"
    if job == "ablate":
        return None  # counted with pretrain_routed: pretrain_routed -> ablate is one chain through the pretrain step
    return {"pretrain": "pretrain", "unlearn": "unlearn", "distill": "distill", "attack": "attack",
            "evaluation": "attack"}.get(cls)


def breakdown(results: str | Path, startup: float, cores: int = 2) -> dict:
    """Wall time by stage class (start-up split out as its own class), and the critical-path lower bound on
    `cores` cores: max(total job-seconds / cores, longest chain). The longest chain of a seed is the sum, over the
    steps make_data -> pretrain (or pretrain_routed + ablate) -> unlearn -> noise -> distill -> relearn/evaluate,
    of each step's longest job; the longest over seeds plus the report jobs (summarize, pareto_plot).
    Jobs run one thread each, so job-seconds are CPU-seconds."""
    jobs = collect_jobs(results, startup)
    if not jobs:
        raise SystemExit(f"--breakdown: no benchmark TSVs or timestamped logs under {results}")
    classes = {c: {"seconds": 0.0, "jobs": 0} for c in STAGE_CLASSES + ("start-up",)}
    for j in jobs:
        up = min(startup, j["wall"])
        classes[j["cls"]]["seconds"] += j["wall"] - up
        classes[j["cls"]]["jobs"] += 1
        classes["start-up"]["seconds"] += up
        classes["start-up"]["jobs"] += 1
    total = sum(j["wall"] for j in jobs)
    for c in classes.values():
        c["share"] = c["seconds"] / total
    chains = {}
    for (setting, seed) in {(j["setting"], j["seed"]) for j in jobs if j["seed"]}:
        mine = {j["job"]: j["wall"] for j in jobs if (j["setting"], j["seed"]) == (setting, seed)}
        step_max = dict.fromkeys(CHAIN, 0.0)
        for j in jobs:
            if (j["setting"], j["seed"]) != (setting, seed) or (step := chain_step(j["job"], j["cls"])) is None:
                continue
            wall = j["wall"] + (mine.get("ablate", 0.0) if j["job"] == "pretrain_routed" else 0.0)
            step_max[step] = max(step_max[step], wall)
        chains[(setting, seed)] = step_max
    report = {s: sum(j["wall"] for j in jobs if j["setting"] == s and not j["seed"]) for s in {j["setting"] for j in jobs}}
    longest_key = max(chains, key=lambda k: sum(chains[k].values()) + report.get(k[0], 0.0)) if chains else None
    chain = dict(chains[longest_key]) if longest_key else {}
    if longest_key:
        chain["report"] = report.get(longest_key[0], 0.0)
    chain_s = sum(chain.values())
    overheads = [j["overhead"] for j in jobs if "overhead" in j]
    ran = [(j["start"] - startup, j["end"]) for j in jobs if "start" in j]  # a log opens after the imports
    span = max(b for _, b in ran) - min(a for a, _ in ran) if ran else None
    return {"jobs": len(jobs), "total_seconds": total, "startup_per_job": startup, "classes": classes,
            "cores": cores, "longest_chain": chain, "longest_chain_seconds": chain_s,
            "longest_chain_of": "/".join(longest_key) if longest_key else None,
            "per_core_seconds": total / cores, "lower_bound_seconds": max(total / cores, chain_s),
            "from_benchmarks": sum(j["source"] == "benchmark" for j in jobs),
            "observed_overhead": sorted(overheads)[len(overheads) // 2] if overheads else None,
            "observed_overhead_jobs": len(overheads),
            "observed_span_seconds": span, "idle_core_seconds": idle_core_seconds(ran, cores) if ran else None}


def format_breakdown(b: dict) -> str:
    out = [f"{'class':11s} {'seconds':>9s} {'share':>6s} {'jobs':>5s}"]
    for name, c in b["classes"].items():
        if c["jobs"]:
            out.append(f"{name:11s} {c['seconds']:9.1f} {100 * c['share']:5.1f}% {c['jobs']:5d}")
    out.append(f"{'total':11s} {b['total_seconds']:9.1f} 100.0% {b['jobs']:5d}   "
               f"({b['from_benchmarks']} jobs timed by benchmark TSVs, the rest by log stamps + "
               f"{b['startup_per_job']:.1f} s start-up each)")
    if b.get("observed_overhead") is not None:
        out.append(f"observed per-job overhead (benchmark wall - log span, median of {b['observed_overhead_jobs']} "
                   f"jobs): {b['observed_overhead']:.1f} s, against {b['startup_per_job']:.1f} s of imports assumed")
    steps = " -> ".join(f"{k} {v:.1f}" for k, v in b["longest_chain"].items())
    out.append(f"longest chain ({b['longest_chain_of']}): {b['longest_chain_seconds']:.1f} s = {steps}")
    out.append(f"critical path on {b['cores']} cores >= max(total / {b['cores']} = {b['per_core_seconds']:.1f} s, "
               f"longest chain {b['longest_chain_seconds']:.1f} s) = {b['lower_bound_seconds']:.1f} s")
    if b.get("observed_span_seconds"):
        span, idle = b["observed_span_seconds"], b["idle_core_seconds"]
        out.append(f"observed from the logs' stamps: first start to last end {span:.1f} s; {idle:.1f} core-seconds "
                   f"idle ({100 * idle / (b['cores'] * span):.1f} % of {b['cores']} cores x that span: start-up "
                   f"gaps, and the scheduler leaving a core without a job)")
    return "\n".join(out)


# ---- side by side with an UNDO-style loop (bench/undo_reference.py) ------------------------------------------
