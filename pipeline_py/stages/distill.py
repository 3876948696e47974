"""noise (a student's starting point) and distill (forward KL from the teacher into the student)."""
from __future__ import annotations

import logging

import torch

from ..batches import PackedStream, read_jsonl
from ..checkpoint import load_checkpoint, make_record, save_checkpoint
from ..config import Distill, Runtime
from ..losses import forward_kl
from ..model import build_model
from ..noise import check_alpha_beta, shrink_perturb
from ..resume import Resume
from ..settings import setting_of
from ..study import parse_init
from ..tokenizer import load_tokenizer
from ..train import autocast, setup_runtime, train

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


def distill(teacher: str, student: str, data: str, eval_data: str, out: str, cfg: Distill, runtime: Runtime,
            seed: int, teacher_in_lineage: bool = True, matched_within: float | None = None) -> None:
    """Forward KL(teacher ‖ student) on the unlabeled pretraining mixture (forget data included);
    stops early once the student's retain metric (the setting's) is within `cfg.stop_within` of the teacher's.
    A fixed-budget run (`cfg.stop_within` None: oracle matching) given `matched_within` records whether its
    final retain metric came within that of the teacher's (`recovered`), so an unmatched student is flagged.

    FLOPs: student tokens trained, teacher tokens and the retain checks' tokens as forwards. The lineage
    adds the teacher's own lineage when the student does not descend from the teacher
    (`teacher_in_lineage` False: the oracle distilled into the base)."""
    precision = runtime.precision
    dev = setup_runtime(runtime.threads, runtime.device)
    t_net, t_record = load_checkpoint(teacher)
    s_net, parent = load_checkpoint(student)
    t_net.to(dev).requires_grad_(False)
    tok = load_tokenizer(teacher)
    stream = PackedStream(tok, read_jsonl(data), cfg.batch_size, cfg.seq_len, seed)
    setting = setting_of(eval_data)
    key = setting.METRICS.retain
    retain_eval = setting.evaluator(tok, [r for r in read_jsonl(eval_data) if not r["forget"]])
    target = retain_eval(t_net, precision, dev)[key]
    log.info("distill: teacher %s %.3f", key, target)

    def loss():
        b = next(stream)
        x = b["input_ids"].to(dev)
        with torch.inference_mode(), autocast(precision, dev):
            t_logits = t_net(x)  # [B, T, V], no graph kept for the frozen teacher
        return forward_kl(s_net(x), t_logits, b["labels"].to(dev))

    state = {"recovered": None if cfg.stop_within is None else False, "retain": float("nan")}

    def check(step: int) -> bool:
        value = state["retain"] = retain_eval(s_net, precision, dev)[key]
        log.info("distill step %d: student %s %.3f (teacher %.3f)", step, key, value, target)
        stop = cfg.stop_within is not None and step > 0 and setting.METRICS.within(value, target, cfg.stop_within)
        if stop:
            state["recovered"] = True
            log.info("distill: the student recovered the teacher's %s within %g at step %d", key, cfg.stop_within, step)
        return stop

    tc = cfg.train_config()
    resume = Resume.for_stream(out, cfg.save_every, stream, [f"{d}/model.safetensors" for d in (teacher, student)]
                               + [data, eval_data], stage="distill", train=tc, stop_within=cfg.stop_within,
                               check_every=cfg.check_every, precision=precision, seed=seed)
    steps = train(s_net, loss, tc, "distill", precision, dev, check=check, check_every=cfg.check_every, resume=resume)
    if cfg.stop_within is None and matched_within is not None:
        state["recovered"] = setting.METRICS.within(state["retain"], target, matched_within)
        log.log(logging.INFO if state["recovered"] else logging.WARNING, "distill: fixed budget of %d steps; the "
                "student's %s %.3f is %swithin %g of the teacher's %.3f", steps, key, state["retain"],
                "" if state["recovered"] else "NOT ", matched_within, target)
    elif state["recovered"] is False:
        log.warning("distill: the student did NOT recover the teacher's %s within %g in %d steps (%.3f against %.3f); "
                    "it is marked recovered = false in every table", key, cfg.stop_within, steps, state["retain"], target)
    # retain checks as train() runs them (step 0, every check_every steps, the last step) plus the teacher's
    # one, counted from the steps taken so a resumed run counts what an uninterrupted one would
    n_checks = 1 + steps // cfg.check_every + (steps % cfg.check_every != 0) + 1
    eval_tokens = n_checks * getattr(retain_eval, "tokens", 0)  # an evaluator that does not count adds none
    if not teacher_in_lineage:
        parent = {**parent, "lineage_flops": parent.get("lineage_flops", 0) + t_record.get("lineage_flops", 0),
                  "lineage_labeled_examples": parent.get("lineage_labeled_examples", 0)
                  + t_record.get("lineage_labeled_examples", 0)}
    rec = make_record("distill", s_net, parent, stream.tokens_seen, frozen_tokens=stream.tokens_seen + eval_tokens,
                      steps=steps, teacher=teacher, eval_tokens=eval_tokens, recovered=state["recovered"],
                      student_retain=state["retain"], teacher_retain=target)
    save_checkpoint(s_net, teacher, out, rec)
    resume.clear()
