"""`gram eval`: the JSON report of a checkpoint on its held-out set (docs/GRAM.md section 9).

Each instance gets N trajectories with the service's noise keys (seed, traj = 0..N-1), run for
``max_steps`` supervision steps. Two answers are read off each trajectory:
- the service's: its first candidate the family's verifier accepts, unless the halting head (q_halt > 0,
  when the checkpoint's card or the caller keeps it on) stopped it first — what a /solve request gets;
- the paper's (``final_`` metrics): the candidate after the last step, with no per-step verifier and no
  halting — the paper's definition of accuracy and coverage.
Metrics over the first n of the N trajectories:
- accuracy@n: at least one valid answer among n samples (N-Queens "accuracy" in the paper = final acc@1);
- coverage@n: distinct valid answers (the family's canonical key, colourings modulo colour permutation)
  / all valid answers (exact solver), averaged per instance;
- colouring conflicts: edges with equal endpoint colours in each instance's first sample, summed over the
  set (the paper's magnitudes suggest totals) and per graph;
- Sudoku: solve rate per difficulty tier.
The held-out set is the one excluded from that checkpoint's training (model.data.heldout_set with the
seed and size in the card), so no instance, nor a symmetric copy of it, was trained on. Inputs people
try first (empty boards, named graphs, famous Sudokus) are in model/probes.py.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import load_checkpoint
from model.data import HeldOut, heldout_set
from model.gram import GRAM, NoiseKeys, served_halting, served_temperature
from model.tasks.base import Task
from model.tasks.registry import get_task

NS = (1, 5, 20, 50)
SOLVER_CAP = 5000


@torch.no_grad()
def sample_answers(
    model: GRAM, task: Task, x: torch.Tensor, n_traj: int, max_steps: int, seed: int = 0, slots: int = 256,
    temperature: float = 1.0, use_halting: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run ``n_traj`` trajectories for one input x [L, G_in].

    Returns (answers [n_traj, L, G_out], valid bool [n_traj], steps int [n_traj]) where each answer is the
    trajectory's first valid candidate, else its candidate when it halted (``use_halting``) or ran out
    of steps.
    """
    dev = model.device
    x = x.to(dev)
    e_one = model.encode(x.unsqueeze(0))
    answers, valid, steps = [], [], []
    for start in range(0, n_traj, slots):
        b = min(slots, n_traj - start)
        traj = torch.arange(start, start + b, device=dev)
        seeds = torch.full((b,), seed, dtype=torch.long, device=dev)
        h, l = model.init_state(b)
        e_x = e_one.expand(b, -1, -1)
        xb = x.unsqueeze(0).expand(b, -1, -1)
        ans = torch.zeros(b, *x.shape[:1], model.config.out_group, dtype=torch.long, device=dev)
        ok = torch.zeros(b, dtype=torch.bool, device=dev)
        used = torch.zeros(b, dtype=torch.long, device=dev)
        active = torch.arange(b, device=dev)
        for n in range(max_steps):
            if active.numel() == 0:
                break
            hot = None if temperature == 1.0 else torch.full(active.shape, float(temperature), device=dev)
            noise = NoiseKeys(seeds[active], traj[active], torch.full_like(active, n), hot)
            out = model.step(h, l, e_x[active], noise)
            h, l = out.h, out.l
            v = task.verify(out.tokens, xb[active])
            stop = v | ((out.q_halt > 0) & use_halting) | (n + 1 == max_steps)
            ans[active] = out.tokens
            ok[active] = v
            used[active] = n + 1
            keep = ~stop
            active, h, l = active[keep], h[keep], l[keep]
        answers.append(ans)
        valid.append(ok)
        steps.append(used)
    return torch.cat(answers), torch.cat(valid), torch.cat(steps)


@dataclass
class Rollout:
    """Every supervision step of ``n_traj`` trajectories of one input, none retired early."""

    tokens: torch.Tensor  # [S, N, L, G_out] the candidate after each step
    valid: torch.Tensor  # bool [S, N]
    q_halt: torch.Tensor  # [S, N]

    def final(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The paper's answer: each trajectory's candidate after the last step (no per-step verifier,
        no halting). (answers [N, L, G], valid [N])."""
        return self.tokens[-1], self.valid[-1]

    def served(self, use_halting: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The service's answer: each trajectory's first verified candidate, unless the halting head
        stopped it first (then its candidate there). (answers, valid, steps used)."""
        s, n = self.valid.shape
        idx = torch.arange(s).unsqueeze(1).expand(s, n)
        never = torch.full_like(idx, s)
        first_valid = torch.where(self.valid, idx, never).min(0).values
        halted = (self.q_halt > 0) if use_halting else torch.zeros_like(self.valid)
        first_halt = torch.where(halted, idx, never).min(0).values
        stop = torch.minimum(torch.minimum(first_valid, first_halt), torch.full_like(first_valid, s - 1))
        answers = self.tokens[stop, torch.arange(n)]
        return answers, first_valid <= stop, stop + 1


@torch.no_grad()
def rollout(
    model: GRAM, task: Task, x: torch.Tensor, n_traj: int, max_steps: int, seed: int = 0, slots: int = 256,
    temperature: float = 1.0,
) -> Rollout:
    """``n_traj`` trajectories of one input x [L, G_in] for ``max_steps`` steps with the service's noise
    keys (seed, traj = 0..N-1), so a trajectory's candidates equal what the engine would produce."""
    dev = model.device
    x = x.to(dev)
    e_one = model.encode(x.unsqueeze(0))
    chunks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for start in range(0, n_traj, slots):
        b = min(slots, n_traj - start)
        traj = torch.arange(start, start + b, device=dev)
        seeds = torch.full((b,), seed, dtype=torch.long, device=dev)
        hot = None if temperature == 1.0 else torch.full((b,), float(temperature), device=dev)
        h, l = model.init_state(b)
        e_x = e_one.expand(b, -1, -1)
        xb = x.unsqueeze(0).expand(b, -1, -1)
        toks, oks, halts = [], [], []
        for n in range(max_steps):
            out = model.step(h, l, e_x, NoiseKeys(seeds, traj, torch.full_like(traj, n), hot))
            h, l = out.h, out.l
            toks.append(out.tokens.cpu())
            oks.append(task.verify(out.tokens, xb).cpu())
            halts.append(out.q_halt.cpu())
        chunks.append((torch.stack(toks), torch.stack(oks), torch.stack(halts)))
    return Rollout(*(torch.cat([c[i] for c in chunks], dim=1) for i in range(3)))


def coloring_conflicts(y: torch.Tensor, x: torch.Tensor) -> int:
    """Edges whose endpoints got the same colour token (colouring family layout: sub j < 16 is edge i-j)."""
    n_slots = x.shape[0]
    adj = x[:, :n_slots] == 2
    colours = y[:, 0]
    same = (colours[:, None] == colours[None, :]) & (colours[:, None] > 0)
    return int((adj & same).triu(1).sum())


def evaluate(
    model: GRAM, per_setting: int = 100, n_max: int = 50, max_steps: int | None = None, seed: int = 0,
    heldout: list[HeldOut] | None = None, progress: Any = None, temperature: float | None = None,
    use_halting: bool | None = None, settings: list[str] | None = None,
) -> dict[str, Any]:
    """Accuracy and coverage @n on the held-out set, sampled as the service samples: at ``temperature``,
    by default the checkpoint's recommended prior temperature (card ``prior_temperature``, else 1), and
    with the halting head on unless ``use_halting`` (by default the card's) says otherwise.
    ``settings``: only these held-out settings (e.g. Sudoku's hard tiers); compare two checkpoints with
    the same list, since each instance's sampling seed follows its place in the evaluated list."""
    task = get_task(model.config.task)
    card = model.card
    temperature = served_temperature(model, temperature)
    use_halting = served_halting(model, use_halting)
    if heldout is None:
        # The exact set the run excluded from training, then its first ``per_setting`` of each setting.
        size = int(card.get("heldout_per_setting", per_setting))
        full = heldout_set(task, size, int(card.get("heldout_seed", 12345)))
        taken: dict[str, int] = defaultdict(int)
        heldout = []
        for h in full:
            if settings and h.setting not in settings:
                continue
            if taken[h.setting] < per_setting:
                heldout.append(h)
                taken[h.setting] += 1
    max_steps = max_steps or model.config.n_sup
    ns = [n for n in NS if n <= n_max]
    per: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    t0 = time.monotonic()
    for i, item in enumerate(heldout):
        run = rollout(model, task, item.instance.x, n_max, max_steps, seed=seed + i, temperature=temperature)
        answers, valid, steps = run.served(use_halting)
        final, final_ok = run.final()
        x = item.instance.x
        solutions = task.solve(item.instance, SOLVER_CAP)
        all_keys = {task.canonical_key(x, s) for s in solutions}
        rec = per[item.setting]
        for n in ns:
            for prefix, ans, ok in (("", answers, valid), ("final_", final, final_ok)):
                found = {task.canonical_key(x, ans[j]) for j in range(n) if ok[j]}
                rec[f"{prefix}accuracy@{n}"].append(float(bool(found)))
                rec[f"{prefix}coverage@{n}"].append(len(found & all_keys) / max(len(all_keys), 1))
        rec["solutions"].append(float(len(all_keys)))
        rec["mean_steps"].append(float(steps.float().mean()))
        if task.name == "graph_coloring":
            rec["conflicts_first_sample"].append(float(coloring_conflicts(answers[0], x)))
            rec["final_conflicts_first_sample"].append(float(coloring_conflicts(final[0], x)))
        if progress is not None:
            progress(i + 1, len(heldout))
    settings: dict[str, Any] = {}
    for name, rec in per.items():
        summary: dict[str, Any] = {"instances": len(rec["solutions"])}
        for key, values in rec.items():
            mean = sum(values) / len(values)
            percent = key.startswith(("accuracy", "coverage", "final_accuracy", "final_coverage"))
            summary[key] = round(100.0 * mean, 2) if percent else round(mean, 3)
        for prefix in ("", "final_"):
            if f"{prefix}conflicts_first_sample" in rec:
                summary[f"{prefix}conflicts_total"] = int(sum(rec[f"{prefix}conflicts_first_sample"]))
                summary[f"{prefix}conflicts_per_graph"] = summary.pop(f"{prefix}conflicts_first_sample")
        settings[name] = summary
    return {
        "checkpoint": card.get("name", model.config.task), "task": model.config.task,
        "stochastic": model.config.stochastic, "params": model.num_parameters(),
        "samples_per_instance": n_max, "max_steps": max_steps, "seed": seed, "temperature": temperature,
        "use_halting": use_halting,
        "heldout": {"seed": card.get("heldout_seed"), "disjoint_from_training": "by canonical input form"},
        "settings": settings, "eval_seconds": round(time.monotonic() - t0, 1),
        "metrics": (
            "accuracy@n / coverage@n in %, over the first n of the samples, coverage per instance. "
            "accuracy/coverage: the service's answer (a trajectory's first verified candidate over its "
            "steps, unless the halting head stopped it first); final_accuracy/final_coverage: the "
            "paper's (the candidate after the last step, no per-step verifier, no halting). Colouring "
            "coverage counts colourings modulo colour permutation."
        ),
    }


@torch.no_grad()
def sample_mnist(
    model: GRAM, count: int, seed: int = 0, steps: int | None = None, temperature: float | None = None
) -> torch.Tensor:
    """``count`` unconditional samples as tokens [count, 49, 16] (x blank), as POST /sample draws them: at
    ``temperature``, by default the checkpoint's recommended prior temperature (card, else 1)."""
    temperature = served_temperature(model, temperature)
    hot = None if temperature == 1.0 else torch.full((count,), float(temperature))
    task = get_task("mnist")
    x = task.blank_input().unsqueeze(0).expand(count, -1, -1)  # type: ignore[attr-defined]
    e_x = model.encode(x)
    h, l = model.init_state(count)
    traj = torch.arange(count)
    out = None
    for n in range(steps or model.config.n_sup):
        out = model.step(h, l, e_x, NoiseKeys(torch.full((count,), seed), traj, torch.full((count,), n), hot))
        h, l = out.h, out.l
    assert out is not None
    return out.tokens


def mnist_report(
    model: GRAM, count: int = 512, seed: int = 0, png: Path | None = None, temperature: float | None = None
) -> dict[str, Any]:
    """Sample statistics against the binarized data: ink fraction, diversity, and how digit-like the
    samples are to a classifier trained on the real set (model/digit_score.py), beside the same figures
    for ``count`` real test images; a PNG grid of the first 64 samples."""
    from model import digit_score
    from model.tasks import mnist

    temperature = served_temperature(model, temperature)
    tokens = sample_mnist(model, count, seed, temperature=temperature)
    bits = mnist.from_tokens(tokens)  # [count, 28, 28]
    report: dict[str, Any] = {
        "checkpoint": model.card.get("name", "mnist"), "task": "mnist", "samples": count,
        "steps": model.config.n_sup, "temperature": temperature, "params": model.num_parameters(),
        "ink_fraction_samples": round(float(bits.float().mean()), 4),
        "distinct_samples": len({bytes(b.flatten().tolist()) for b in bits.to(torch.uint8)}),
    }
    try:
        train = mnist.binarize(mnist.load_mnist(split="train"))
        test = mnist.binarize(mnist.load_mnist(split="test"))
        train_labels = mnist.load_mnist_labels(split="train")
        test_labels = mnist.load_mnist_labels(split="test")
    except (OSError, ValueError):
        train = None  # no MNIST files: the sample statistics only
    if train is not None:
        report["ink_fraction_data"] = round(float(train[:2000].float().mean()), 4)
        classifier = digit_score.train_digit_classifier(train, train_labels, seed=seed)
        _, probs = classifier.embed(test)
        reference, real = test[:count], test[count : 2 * count]
        accuracy = (probs.argmax(-1) == test_labels).float().mean()
        report["digit_classifier_test_accuracy"] = round(float(accuracy), 4)
        report["digit_scores"] = digit_score.digit_scores(classifier, bits, reference)
        report["digit_scores_real_test_images"] = digit_score.digit_scores(classifier, real, reference)
    if png is not None:
        png.write_bytes(mnist.render_grid_png(bits[:64], columns=8, scale=2))
        report["png"] = str(png)
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Evaluate a GRAM checkpoint on its held-out set (JSON).")
    p.add_argument("checkpoint")
    p.add_argument("--per-setting", type=int, default=100)
    p.add_argument("--samples", type=int, default=50)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--temperature", type=float, default=None,
                   help="prior temperature (default: the checkpoint's recommended one)")
    p.add_argument("--halting", action=argparse.BooleanOptionalAction, default=None,
                   help="retire trajectories when the halting head says stop (default: the card's, else on)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_checkpoint(args.checkpoint)
    if model.config.task == "mnist":
        report = mnist_report(model, png=Path(args.out).with_suffix(".png") if args.out else None,
                              temperature=args.temperature)
    else:
        report = evaluate(model, args.per_setting, args.samples, args.max_steps, temperature=args.temperature,
                          use_halting=args.halting)
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
