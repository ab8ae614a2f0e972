"""Ship a trained run: copy its EMA weights to model/weights/<name>.safetensors and write the model card
<name>.md from the checkpoint's facts, its eval report (<name>.eval.json, made by `gram eval`) and a
measured serving latency.

    gram eval model/weights/nqueens.safetensors --out model/weights/nqueens.eval.json
    python -m model.cards nqueens --notes notes.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.data import EVAL_SETTINGS, TRAIN_MIXTURES
from model.gram import GRAM
from model.presets import preset, task_of

WEIGHTS = Path(__file__).resolve().parent / "weights"

# The paper's numbers (Table 1, Table 8 / Fig. 4) that the issue holds each checkpoint to.
PAPER = {
    "nqueens": "| N-Queens 8x8 | accuracy / coverage@20 | 99.7 / 90.3 | 66.8 / 36.1 |\n"
               "| N-Queens 10x10 | accuracy / coverage@20 | 89.7 / 57.5 | 17.5 / 2.0 |",
    "graph_coloring": "| Colouring 8 nodes | conflicts / coverage@20 | 2.7 / 85.8 | 109.3 / 22.3 |\n"
                      "| Colouring 10 nodes | conflicts / coverage@20 | 3.3 / 51.3 | 170.7 / 6.8 |",
    "sudoku": "| Sudoku (hard tier) | solved | 97.0 (Extreme) | 87.4 |",
    "mnist": "| binarized MNIST | IS / FID (16 steps) | 1.89 / 77.79 | 1.00 / 303.29 |",
}


@torch.no_grad()
def serving_latency(model: GRAM, trajectories: int = 20, repeats: int = 3) -> dict[str, float]:
    """Seconds for one /solve-like request: ``trajectories`` slots, all ``n_sup`` steps (no early exit,
    so an upper bound), on this machine's CPU with 2 threads."""
    from model.gram import NoiseKeys
    from model.tasks.registry import get_task

    task = get_task(model.config.task)
    x = task.generate(__import__("random").Random(0))[0].x if task.name != "mnist" else task.blank_input()
    torch.set_num_threads(2)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        e_x = model.encode(x.unsqueeze(0)).expand(trajectories, -1, -1)
        h, l = model.init_state(trajectories)
        for n in range(model.config.n_sup):
            keys = NoiseKeys(torch.zeros(trajectories, dtype=torch.long), torch.arange(trajectories),
                             torch.full((trajectories,), n))
            out = model.step(h, l, e_x, keys)
            h, l = out.h, out.l
            task.verify(out.tokens, x.unsqueeze(0).expand(trajectories, -1, -1))
        times.append(time.perf_counter() - t0)
    return {"median_s": round(statistics.median(times), 3), "trajectories": trajectories,
            "steps": model.config.n_sup}


def _blocks(n: int) -> str:
    return "one attention block" if n == 1 else f"{n} attention blocks"


def _table(rows: list[tuple[str, Any]]) -> str:
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def _eval_tables(report: dict[str, Any]) -> str:
    if "settings" not in report:
        rows: list[tuple[str, Any]] = []
        for key, value in report.items():
            if key == "png":
                continue
            # one level of nesting (the MNIST report's digit scores) as dotted rows
            nested = isinstance(value, dict)
            rows += [(f"{key}.{k}", v) for k, v in value.items()] if nested else [(key, value)]
        return _table(rows)
    out = []
    for setting, summary in report["settings"].items():
        out.append(f"**{setting}** ({summary.get('instances')} held-out instances)\n")
        out.append(_table(list(summary.items())))
        out.append("")
    return "\n".join(out)


DEFAULT_MACHINE = "2-core x86 CPU (AMD EPYC), 1 torch thread per run, other training runs sharing the cores"


def render_card(
    model: GRAM, report: dict[str, Any] | None, latency: dict[str, float], notes: str,
    machine: str = DEFAULT_MACHINE,
) -> str:
    c, card = model.config, model.card
    name = card.get("name", c.task)
    task = task_of(name)
    tc = preset(name, card.get("preset", "cpu"))
    arch = [
        ("task family", c.task), ("parameters", f"{model.num_parameters():,}"),
        ("width D / heads / layers", f"{c.d_model} / {c.n_heads} / {c.n_layers} (one net for f_L, f_H)"),
        ("token mixer", "self-attention" if c.mixer == "attn" else "sequence-MLP (mlp_t)"),
        ("FFN (SwiGLU) inner width", c.ffn_hidden), ("puzzle tokens P", c.n_puzzle),
        ("positions", c.positions), ("T transitions x K low-level updates", f"{c.T} x {c.K}"),
        ("supervision steps n_sup (train / default at inference)", c.n_sup),
        ("stochastic guidance", "yes (GRAM)" if c.stochastic else "no (deterministic TRM-style baseline)"),
        ("beta / KL balance / KL normalised per / carry / prior CE",
         f"{c.beta} / {c.kl_balance} / {c.kl_norm} / {c.carry} / {c.prior_ce}"),
        ("posterior q(eps | u, y)", f"{_blocks(c.posterior_layers)} over [u, emb(y)]" if c.posterior == "attn"
         else "per position, linear in [u, emb(y)]"),
        ("noise enters h at", "every position" if c.noise_at == "all"
         else f"the {c.n_puzzle} puzzle tokens only (one global latent of {c.n_puzzle} x {c.d_model})"),
        ("decoder", "per-position linear head" if not c.decoder_layers
         else f"{_blocks(c.decoder_layers)} over h (mixing positions), then a per-position linear head"),
        ("sigma init / floor", f"{c.sigma_init} / {c.sigma_min}"),
        ("prior temperature served by default (`prior_temperature`)", card.get("prior_temperature", 1.0)),
        ("halting head retires trajectories (`use_halting`)", card.get("use_halting", True)),
    ]
    training = [
        ("preset", card.get("preset")),
        ("warm start", card.get("init_from") or "none (from scratch)"),
        ("hindsight target candidates", card.get("hindsight") or "off (the generator's one target)"),
        ("trained input range", card.get("input_range", "")),
        ("optimizer steps", card.get("train_steps")),
        ("training time (s)", card.get("train_time_s")), ("examples started", card.get("train_examples")),
        ("batch", card.get("batch")),
        ("lr / warmup / weight decay", f"{tc.lr} / {tc.warmup} / {tc.weight_decay}"),
        ("AdamW betas / clip", f"{tc.betas} / {tc.clip}"), ("weights shipped", f"EMA (decay {tc.ema_decay})"),
        ("machine", machine),
    ]
    decay = float(card.get("decay_s", 0) or 0)
    retrain = f"gram train {name} --budget {int(float(card.get('train_time_s', 0)))}" + (
        f" --decay-s {int(decay)}" if decay else ""
    )
    instances = {s.get("instances") for s in (report or {}).get("settings", {}).values()}
    eval_args = f" --per-setting {instances.pop()}" if len(instances) == 1 and None not in instances else ""
    if task == "mnist":
        eval_args += f" --png model/weights/{name}_samples.png"
    retire = (
        "after n_sup steps, or when q_halt > 0 (an unconditional family: nothing is verified)"
        if task == "mnist" else
        "at its first valid answer, when q_halt > 0, or after n_sup steps"
        if card.get("use_halting", True)
        else "at its first valid answer or after n_sup steps; this checkpoint's halting head is off, "
        "`use_halting` false, as the service runs it"
    )
    verifier = "" if task == "mnist" else "verifier after every step; "
    mixture = json.dumps(TRAIN_MIXTURES.get(task, []))
    settings = json.dumps(EVAL_SETTINGS.get(task, []))
    lines = [
        f"# {name} — GRAM Serve checkpoint", "",
        f"`{name}.safetensors` (weights, config and these facts in the safetensors metadata; no pickle).",
        f"Load with `model.checkpoint.load_checkpoint(path, device)`; retrain with `{retrain}`.", "",
        "## Architecture and size", "", _table(arch), "",
        "## Data and augmentation", "",
        f"Generated on the fly by the `{task}` task family, knob mixture `{mixture}`, each pair passed "
        "through the family's random symmetry (`augment`). The held-out set (settings "
        f"`{settings}`, seed {card.get('heldout_seed')}, {card.get('heldout_per_setting')} per setting) is "
        "generated first and its inputs are excluded from training by canonical form "
        "(N-Queens: all 8 board symmetries; colouring: a Weisfeiler-Lehman isomorphism invariant).", "",
        "## Training on this machine", "", _table(training), "",
        *([f"![learning curve]({name}.curve.png)", "",
           f"Learning curve: `{name}.curve.csv` (held-out metrics of the run's snapshots against "
           "training core-hours, `python -m model.curves`).", ""]
          if (WEIGHTS / f"{name}.curve.png").exists() else []),
        "## Evaluation (held-out)", "",
        (f"Command: `gram eval model/weights/{name}.safetensors{eval_args} --out "
         f"model/weights/{name}.eval.json`. Samples run exactly as the service runs them ({verifier}"
         f"a trajectory retires {retire})."), "",
        _eval_tables(report) if report else "(no eval report)", "",
        f"Serving cost: one request with {latency.get('trajectories')} trajectories x "
        f"{latency.get('steps')} steps (no early exit) took {latency.get('median_s')} s here "
        "(median of 3, 2 threads; the card's machine row says what else ran).", "",
        "## Against the paper", "",
        "| task | metric | paper GRAM | paper TRM |", "|---|---|---|---|", PAPER.get(task, ""), "",
        notes.strip(), "",
    ]
    return "\n".join(lines)


def ship(
    name: str, run_dir: Path, notes: str = "", weights: Path = WEIGHTS, machine: str = DEFAULT_MACHINE,
    card_updates: dict[str, Any] | None = None,
) -> Path:
    src = run_dir / "model.safetensors"
    model = load_checkpoint(src)
    model.card.update(card_updates or {})
    dst = weights / f"{name}.safetensors"
    save_checkpoint(model, dst)
    eval_path = weights / f"{name}.eval.json"
    report = json.loads(eval_path.read_text()) if eval_path.exists() else None
    card_path = weights / f"{name}.md"
    card_path.write_text(render_card(model, report, serving_latency(model), notes, machine))
    return card_path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Copy a run's EMA weights to model/weights and write its card.")
    p.add_argument("name")
    p.add_argument("--run-dir", default=None)
    p.add_argument("--notes", default=None, help="markdown file appended to the card (comparison, limits)")
    p.add_argument("--machine", default=DEFAULT_MACHINE, help="what the run was trained on, for the card")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="a card field to set, e.g. prior_temperature=2.5 or use_halting=false")
    args = p.parse_args(argv)
    notes = Path(args.notes).read_text() if args.notes else ""
    updates = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    print(ship(args.name, Path(args.run_dir or f"runs/{args.name}"), notes, machine=args.machine,
               card_updates=updates))


if __name__ == "__main__":
    main()
