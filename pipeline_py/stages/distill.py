"""noise (a student's starting point) and distill (forward KL from the teacher into one student, or into
several at once on one teacher forward per batch)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ..batches import PackedStream, read_jsonl
from ..checkpoint import load_checkpoint, make_record, save_checkpoint
from ..cli import as_dir
from ..config import Distill, Runtime
from ..losses import forward_kl
from ..model import build_model
from ..noise import check_alpha_beta, shrink_perturb
from ..resume import Resume
from ..settings import setting_of
from ..study import parse_init
from ..tokenizer import load_tokenizer
from ..train import autocast, resolve_precision, setup_runtime, train

log = logging.getLogger("pipeline_py")


def noise(teacher: str, out: str, init: str, seed: int) -> None:
    """The student's starting point named by `init` (pipeline_py.study): shrink-and-perturb of the teacher at
    'a{alpha}_b{beta}', or a fresh random init ('fresh')."""
    alpha, beta = parse_init(init)
    net, parent = load_checkpoint(teacher)
    if alpha is None:
        # Unlearn-and-Distill: a fresh random initialisation (of the same architecture for a pretrained model)
        net = net.fresh_copy(seed + 1000) if hasattr(net, "fresh_copy") else build_model(net.cfg, seed + 1000)
    else:
        check_alpha_beta(alpha, beta)
        shrink_perturb(net, alpha, beta, seed)
    save_checkpoint(net, teacher, out, make_record("noise", net, parent, 0, alpha=alpha, beta=beta))


def distill(teacher: str, student: str | list[str], data: str, eval_data: str, out: str | list[str], cfg: Distill,
            runtime: Runtime, seed: int, teacher_in_lineage: bool = True, matched_within: float | None = None) -> None:
    """Forward KL(teacher ‖ student) on the unlabeled pretraining mixture (forget data included);
    stops early once the student's retain metric (the setting's) is within `cfg.stop_within` of the teacher's.
    A fixed-budget run (`cfg.stop_within` None: oracle matching) given `matched_within` records whether its
    final retain metric came within that of the teacher's (`recovered`), so an unmatched student is flagged.

    Several students (`student` and `out` as lists, in step) train together on the same batches with one
    teacher forward per batch. Each keeps what it would get alone (its own loss term, its own gradient
    clipping; AdamW updates every weight on its own), stops on its own rule, and its checkpoint is written
    the moment it stops, while the others go on.

    FLOPs, per student as if it ran alone: its tokens trained, the teacher's forwards on them and its retain
    checks as forwards. The lineage adds the teacher's own lineage when the student does not descend from the
    teacher (`teacher_in_lineage` False: the oracle distilled into the base)."""
    if isinstance(out, str) != isinstance(student, str) or (not isinstance(out, str) and len(out) != len(student)):
        raise ValueError(f"distill: student and out must be one path each or lists of the same length, got "
                         f"{student!r} and {out!r}")
    # a rule passes lists of checkpoint files: each stands for its directory
    pairs = (student, out) if isinstance(student, list) else ([student], [out])
    students, outs = ([as_dir(p) for p in paths] for paths in pairs)
    if not students:
        raise ValueError("distill: no student given")
    dev = setup_runtime(runtime.threads, runtime.device)
    t_net, t_record = load_checkpoint(teacher)
    t_net.to(dev).requires_grad_(False)
    nets, parents = zip(*(load_checkpoint(s) for s in students))
    group = nn.ModuleList(nets)  # what the one training loop trains: every student, disjoint parameters
    names = [Path(o).name for o in outs]
    tok = load_tokenizer(teacher)
    stream = PackedStream(tok, read_jsonl(data), cfg.batch_size, cfg.seq_len, seed)
    setting = setting_of(eval_data)
    key = setting.METRICS.retain
    retain_eval = setting.evaluator(tok, [r for r in read_jsonl(eval_data) if not r["forget"]])
    precision = resolve_precision(runtime.precision, dev, nets[0], cfg.batch_size, cfg.seq_len)
    target = retain_eval(t_net, precision, dev)[key]
    log.info("distill: teacher %s %.3f; %d student(s): %s", key, target, len(nets), ", ".join(names))
    # per student: still training?, recovered (None: no rule), last retain value, steps and tokens at its end
    state = [{"active": True, "recovered": None if cfg.stop_within is None else False, "retain": float("nan"),
              "steps": 0, "tokens": 0} for _ in nets]

    def loss():
        b = next(stream)
        x, y = b["input_ids"].to(dev), b["labels"].to(dev)
        with torch.inference_mode(), autocast(precision, dev):
            t_logits = t_net(x)  # [B, T, V], one forward for every student, no graph kept
        return sum(forward_kl(net(x), t_logits, y) for net, st in zip(nets, state) if st["active"])

    def write(i: int) -> None:
        """Student i's checkpoint, its record counting what it used up to its own last step."""
        st = state[i]
        # retain checks as train() runs them (step 0, every check_every steps, the last step) plus the teacher's
        # one, counted from the steps taken so a resumed run counts what an uninterrupted one would
        n_checks = 1 + st["steps"] // cfg.check_every + (st["steps"] % cfg.check_every != 0) + 1
        eval_tokens = n_checks * getattr(retain_eval, "tokens", 0)  # an evaluator that does not count adds none
        parent = parents[i]
        if not teacher_in_lineage:
            parent = {**parent, "lineage_flops": parent.get("lineage_flops", 0) + t_record.get("lineage_flops", 0),
                      "lineage_labeled_examples": parent.get("lineage_labeled_examples", 0)
                      + t_record.get("lineage_labeled_examples", 0)}
        rec = make_record("distill", nets[i], parent, st["tokens"], frozen_tokens=st["tokens"] + eval_tokens,
                          steps=st["steps"], teacher=teacher, eval_tokens=eval_tokens, recovered=st["recovered"],
                          student_retain=st["retain"], teacher_retain=target)
        save_checkpoint(nets[i], teacher, outs[i], rec)

    def finish(i: int, step: int) -> None:
        """Freeze student i (no gradient: AdamW leaves it alone) and write it."""
        state[i].update(active=False, steps=step, tokens=stream.tokens_seen)
        nets[i].requires_grad_(False)
        write(i)

    def check(step: int) -> bool:
        for i, (net, st) in enumerate(zip(nets, state)):
            if not st["active"]:
                continue
            value = st["retain"] = retain_eval(net, precision, dev)[key]
            log.info("distill step %d: %s %s %.3f (teacher %.3f)", step, names[i], key, value, target)
            if cfg.stop_within is not None and step > 0 and setting.METRICS.within(value, target, cfg.stop_within):
                st["recovered"] = True
                log.info("distill: %s recovered the teacher's %s within %g at step %d; written", names[i], key,
                         cfg.stop_within, step)
                finish(i, step)
        return not any(st["active"] for st in state)

    def set_extra(extra: dict) -> None:
        """A resumed group: the stream's position and each student's state; a student that had stopped is
        frozen again and rewritten if its checkpoint went missing (Snakemake removes an incomplete job's files)."""
        stream.load_state_dict(extra["stream"])
        for i, saved in enumerate(extra["students"]):
            state[i].update(saved)
            if not saved["active"]:
                nets[i].requires_grad_(False)
                if not (Path(outs[i]) / "model.safetensors").is_file():
                    write(i)

    tc = cfg.train_config()
    resume = Resume.for_stream(outs[0], cfg.save_every, stream,
                               [f"{d}/model.safetensors" for d in (teacher, *students)] + [data, eval_data],
                               stage="distill", train=tc, stop_within=cfg.stop_within, check_every=cfg.check_every,
                               precision=precision, seed=seed)
    resume.get_extra = lambda: {"stream": stream.state_dict(), "students": [dict(st) for st in state]}
    resume.set_extra = set_extra
    steps = train(group, loss, tc, "distill", precision, dev, check=check, check_every=cfg.check_every,
                  resume=resume, clip_groups=[list(n.parameters()) for n in nets])
    for i, st in enumerate(state):
        if not st["active"]:
            continue
        if cfg.stop_within is None and matched_within is not None:
            st["recovered"] = setting.METRICS.within(st["retain"], target, matched_within)
            log.log(logging.INFO if st["recovered"] else logging.WARNING, "distill: fixed budget of %d steps; %s's "
                    "%s %.3f is %swithin %g of the teacher's %.3f", steps, names[i], key, st["retain"],
                    "" if st["recovered"] else "NOT ", matched_within, target)
        elif st["recovered"] is False:
            log.warning("distill: %s did NOT recover the teacher's %s within %g in %d steps (%.3f against %.3f); "
                        "it is marked recovered = false in every table", names[i], key, cfg.stop_within, steps,
                        st["retain"], target)
        finish(i, steps)
    resume.clear()
