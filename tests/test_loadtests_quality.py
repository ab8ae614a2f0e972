"""The quality-per-compute study's bookkeeping: traces from the model interface and the serving policies
(verified early exit on/off, halting) computed from them."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import typer

from loadtests.quality_policy import evaluate, first_found_work, run_policy, steps_saved_at_equal_coverage
from loadtests.quality_trace import NOT_VALID, Trace, trace_puzzle
from model.checkpoint import read_config
from model.gram import NoiseKeys, StepOutput
from model.tasks.registry import get_task

V = NOT_VALID


def _trace(ids: list[list[int]], halted: list[list[bool]] | None = None, total: int = 4,
           unchanged: list[list[bool]] | None = None) -> Trace:
    sid = torch.tensor(ids, dtype=torch.int64)
    halt = torch.tensor(halted, dtype=torch.bool) if halted else torch.zeros_like(sid, dtype=torch.bool)
    same = torch.tensor(unchanged, dtype=torch.bool) if unchanged else torch.zeros_like(sid, dtype=torch.bool)
    return Trace(sid, halt, same, total, 0.0)


def test_final_policy_sees_only_the_last_step() -> None:
    tr = _trace([[0, V, V], [V, V, 1], [2, 2, 2]])
    found, spent = run_policy(tr, 3, 3, "final")
    assert found.tolist() == [V, 1, 2] and spent == 9
    found, spent = run_policy(tr, 2, 1, "final")
    assert found.tolist() == [0, V] and spent == 2


def test_verified_exit_keeps_the_first_valid_candidate_and_pays_only_until_then() -> None:
    tr = _trace([[0, V, V], [V, V, 1], [V, V, V]])
    found, spent = run_policy(tr, 3, 3, "verified")
    assert found.tolist() == [0, 1, V]
    assert spent == 1 + 3 + 3
    found, spent = run_policy(tr, 3, 2, "verified")  # max_steps 2: the second never gets there
    assert found.tolist() == [0, V, V] and spent == 1 + 2 + 2


def test_halting_retires_before_a_later_valid_step_but_not_on_the_same_step() -> None:
    tr = _trace(
        [[V, 0, V], [V, V, 1], [V, V, V]],
        halted=[[False, True, False], [True, False, False], [False, False, False]],
    )
    found, spent = run_policy(tr, 3, 3, "verified+halt")
    assert found.tolist() == [0, V, V]  # row 0 valid and halting at step 2: kept; row 1 halted at step 1
    assert spent == 2 + 1 + 3


def test_stall_exit_retires_an_unchanged_wrong_candidate_but_keeps_an_unchanged_valid_one() -> None:
    F, T = False, True
    tr = _trace(
        [[V, V, V, V], [V, V, 1, 1], [V, 0, 0, V], [V, V, V, 2]],
        unchanged=[[F, T, T, T], [F, F, T, T], [F, F, T, F], [F, F, T, F]],
    )
    found, spent = run_policy(tr, 4, 4, "verified+stall", stall_min_steps=1)
    # row 0 stalls at step 2; row 1 valid at 3 (unchanged there: valid first); row 2 valid at 2;
    # row 3 stalls at step 3 before its step-4 answer
    assert found.tolist() == [V, 1, 0, V] and spent == 2 + 3 + 2 + 3
    found, spent = run_policy(tr, 4, 4, "verified+stall", stall_patience=2, stall_min_steps=1)
    assert found.tolist() == [V, 1, 0, 2] and spent == 3 + 3 + 2 + 4
    # the default: patience 1 from the third step on; row 0 runs until step 3 now
    found, spent = run_policy(tr, 4, 4, "verified+stall")
    assert found.tolist() == [V, 1, 0, V] and spent == 3 + 3 + 2 + 3
    found, spent = run_policy(tr, 4, 4, "verified+stall", stall_min_steps=4)  # row 3 reaches its answer
    assert found.tolist() == [V, 1, 0, 2] and spent == 4 + 3 + 2 + 4
    r = steps_saved_at_equal_coverage([tr], 4, 4, "verified+stall", stall_min_steps=1)
    assert r["policy"] == "verified+stall" and r["same_settings_coverage_on"] == pytest.approx(2 / 4)
    assert r["same_settings_saved"] == pytest.approx(1 - 10 / 16)
    with pytest.raises(ValueError):
        steps_saved_at_equal_coverage([tr], 4, 4, "final")


def test_evaluate_averages_accuracy_solved_and_coverage_over_puzzles() -> None:
    a = _trace([[0, 0], [1, 1], [0, 0], [V, V]], total=4)  # 2 distinct of 4, 3 of 4 trajectories valid
    b = _trace([[V, V], [V, V], [V, V], [V, V]], total=1)
    o = evaluate([a, b], 4, 2, "final")
    assert o.accuracy == pytest.approx((3 / 4 + 0) / 2)
    assert o.solved == pytest.approx(0.5)
    assert o.coverage == pytest.approx((2 / 4 + 0) / 2)
    assert o.steps == pytest.approx(8)
    with pytest.raises(ValueError):
        evaluate([a], 5, 2, "final")


def test_steps_saved_compares_the_cheapest_settings_that_reach_the_same_coverage() -> None:
    # Valid from step 1 on and staying valid: both policies need only max_steps 1; nothing saved there,
    # but at the same max_steps 4 early exit pays 2 steps instead of 8.
    easy = _trace([[0, 0, 0, 0], [1, 1, 1, 1]], total=2)
    r = steps_saved_at_equal_coverage([easy], 2, 4)
    assert r["coverage_target"] == 1.0 and r["max_steps_off"] == 1 and r["saved"] == pytest.approx(0.0)
    assert r["same_settings_saved"] == pytest.approx(1 - 2 / 8)
    # Valid only transiently: OFF's best is max_steps 2 (one of two solutions, coverage 1/2, 4 steps);
    # ON reaches 1/2 at max_steps 2 too, for 2 + 2 steps; at max_steps 3 it has both solutions.
    flicker = _trace([[V, 0, V, V], [V, V, 1, V]], total=2)
    r = steps_saved_at_equal_coverage([flicker], 2, 4)
    assert r["coverage_target"] == 0.5 and r["steps_off"] == 4 and r["steps_on"] == 4
    assert r["same_settings_coverage_on"] == 1.0 and r["same_settings_coverage_off"] == 0.0
    # Later valid steps: ON pays 2 + 3 to reach coverage 1; OFF needs max_steps 4 (8 steps).
    late = _trace([[V, 0, 0, 0], [V, V, 1, 1]], total=2)
    r = steps_saved_at_equal_coverage([late], 2, 4)
    assert r["coverage_target"] == 1.0 and r["steps_on"] == 5 and r["steps_off"] == 6
    assert r["saved"] == pytest.approx(1 - 5 / 6)
    nothing = _trace([[V, V], [V, V]], total=2)
    assert math.isnan(steps_saved_at_equal_coverage([nothing], 2, 2)["saved"])


class _OracleModel:
    """Quacks like GRAM for trace_puzzle: even trajectories decode a known solution from step 2 on, odd
    ones decode the unsolved input (invalid); halts from step 3 on."""

    def __init__(self, x: torch.Tensor, solution: torch.Tensor) -> None:
        self.x, self.solution = x, solution
        self.config = SimpleNamespace(stochastic=True)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()

    def init_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(batch, 1), torch.zeros(batch, 1)

    def step(self, h: torch.Tensor, l: torch.Tensor, e_x: torch.Tensor, noise: NoiseKeys) -> StepOutput:
        b = h.shape[0]
        self.temperatures = None if noise.temperature is None else set(noise.temperature.tolist())
        self.per_step = getattr(self, "per_step", {})
        self.per_step[int(noise.step[0])] = self.temperatures
        good = (noise.traj % 2 == 0) & (noise.step >= 1)
        tokens = torch.where(good[:, None, None], self.solution.expand(b, -1, -1), self.x.expand(b, -1, -1))
        return StepOutput(
            h=h,
            l=l,
            tokens=tokens,
            token_logprob=torch.zeros(tokens.shape),
            q_halt=torch.where(noise.step >= 2, 1.0, -1.0).float(),
            value=torch.zeros(b),
        )


def test_trace_records_validity_solution_identity_and_halting_per_trajectory_and_step() -> None:
    task = get_task("nqueens")
    inst, y = task.generate(random.Random(0), n=6, given=1)
    model = _OracleModel(inst.x.unsqueeze(0), y.unsqueeze(0))
    tr = trace_puzzle(model, task, inst, width=5, steps=4, seed=1, chunk=2)  # chunks 2+2+1
    assert tr.total_solutions == len(task.solve(inst, cap=100)) >= 1
    expected = [[V, 0, 0, 0] if t % 2 == 0 else [V, V, V, V] for t in range(5)]
    assert tr.solution_id.tolist() == expected
    assert tr.halted.tolist() == [[False, False, True, True]] * 5
    # even trajectories change once (input -> solution) then hold; odd ones hold the input from step 2 on
    assert tr.unchanged.tolist() == [
        [False, False, True, True] if t % 2 == 0 else [False, True, True, True] for t in range(5)
    ]
    assert model.temperatures is None  # 1: the trained prior, as the engine's default
    trace_puzzle(model, task, inst, width=2, steps=1, seed=1, temperature=2.5)
    assert model.temperatures == {2.5}
    # a per-step schedule: its last entry holds; a step at 1 passes None (the trained prior, bit for bit)
    model.per_step = {}
    trace_puzzle(model, task, inst, width=2, steps=4, seed=1, temperature=[2.5, 1.0, 3.0])
    assert model.per_step == {0: {2.5}, 1: None, 2: {3.0}, 3: {3.0}}
    with pytest.raises(ValueError, match="empty"):
        trace_puzzle(model, task, inst, width=2, steps=1, seed=1, temperature=[])


def test_eval_sampling_retires_on_the_halting_head_only_when_told() -> None:
    from model.evaluate import sample_answers

    task = get_task("nqueens")
    inst, y = task.generate(random.Random(0), n=6, given=1)
    model = _OracleModel(inst.x.unsqueeze(0), y.unsqueeze(0))
    model.device = torch.device("cpu")  # type: ignore[attr-defined]
    model.config.out_group = y.shape[-1]
    # odd trajectories never verify; the head says stop from step 3 on
    _, valid, steps = sample_answers(model, task, inst.x, 4, 5, seed=1)  # type: ignore[arg-type]
    assert valid.tolist() == [True, False, True, False] and steps.tolist() == [2, 3, 2, 3]
    _, valid, steps = sample_answers(model, task, inst.x, 4, 5, seed=1, use_halting=False)  # type: ignore[arg-type]
    assert valid.tolist() == [True, False, True, False] and steps.tolist() == [2, 5, 2, 5]


def replay_through(sched: Any, tr: Trace) -> Any:
    """Run a traced job (already added to ``sched``) through the real scheduler: each row's outcome is
    the trace's at that trajectory and step. Returns the FinishedJob."""
    from service.scheduler import RowOutcome

    while sched.has_work():
        plan = sched.schedule(0.0)
        outs = []
        for r in plan.rows:
            sid = int(tr.solution_id[r.traj, r.step])
            outs.append(RowOutcome(valid=sid != V, halted=bool(tr.halted[r.traj, r.step]),
                                   unchanged=bool(tr.unchanged[r.traj, r.step]),
                                   key=str(sid).encode() if sid != V else None, payload=sid))
        finished = sched.update(plan, outs, 0.0)
    (done,) = finished.jobs
    return done


@pytest.mark.parametrize("halting", [False, True])
@pytest.mark.parametrize(("patience", "min_steps"), [(1, 1), (1, 3), (2, 1), (2, 4), (0, 1)])
def test_the_offline_stall_policy_is_the_schedulers_rule(
    patience: int, min_steps: int, halting: bool
) -> None:
    """The quality study must measure what the continuous engine does: replay random traces through the
    real scheduler and compare the solutions kept and the steps spent."""
    from service.jobs import Job
    from service.scheduler import Scheduler

    gen = torch.Generator().manual_seed(patience * 10 + min_steps)
    width, steps = 12, 6
    ids = torch.where(torch.rand(width, steps, generator=gen) < 0.15,
                      torch.randint(0, 3, (width, steps), generator=gen), torch.full((width, steps), V))
    same = torch.rand(width, steps, generator=gen) < 0.5
    same[:, 0] = False
    halted = (torch.rand(width, steps, generator=gen) < 0.1) & halting
    tr = Trace(ids, halted, same, 3, 0.0)
    policy = "verified+halt+stall" if halting else "verified+stall"
    found, spent = run_policy(tr, width, steps, policy, patience, min_steps)

    sched = Scheduler(slots=5, stall_min_steps=min_steps, use_halting=halting)
    sched.add(Job(id="j", model="m", task="t", x=[[1]], num_trajectories=width, max_solutions=99,
                  max_steps=steps, stall_patience=patience, seeded=True), 0.0)
    done = replay_through(sched, tr)
    assert done.steps == spent
    assert {s.key for s in done.solutions} == {str(v).encode() for v in found.tolist() if v != V}
    assert sum(s.count for s in done.solutions) == int((found != V).sum())


def test_the_engine_default_policy_takes_the_earliest_of_verify_halt_and_stall() -> None:
    # one trajectory per rule: valid at step 2; halted (invalid) at step 1; stalled from step 1 on
    ids = torch.tensor([[V, V, 0, 0], [V, V, V, V], [V, V, V, V]])
    halted = torch.tensor([[False] * 4, [False, True, False, False], [False] * 4])
    unchanged = torch.tensor([[False] * 4, [False] * 4, [False, True, True, True]])
    tr = Trace(ids, halted, unchanged, 1, 0.0)
    found, spent = run_policy(tr, 3, 4, "verified+halt+stall", stall_patience=1, stall_min_steps=1)
    assert found.tolist() == [0, V, V] and spent == 3 + 2 + 2
    # without the halting head the second trajectory runs on to max_steps
    assert run_policy(tr, 3, 4, "verified+stall", stall_patience=1, stall_min_steps=1)[1] == 3 + 4 + 2


def test_first_found_work_ends_every_trajectory_of_a_group_at_its_first_valid_retirement() -> None:
    F, T = False, True
    # group 1 (rows 0-1): row 1 valid at step 2, so row 0 (stalling at 3) is dropped after step 2: 2 + 2;
    # group 2 (rows 2-3): nothing valid, each runs until it retires: stalled at 2, exhausted at 4: 2 + 4
    tr = _trace([[V, V, V, V], [V, 0, 0, 0], [V, V, V, V], [V, V, V, V]],
                unchanged=[[F, F, T, T], [F, F, F, F], [F, T, T, T], [F, F, F, F]])
    assert first_found_work([tr], 2, 4, "verified+stall", 1, 1) == pytest.approx((4 + 6) / 2)
    assert first_found_work([tr], 4, 4, "verified+stall", 1, 1) == pytest.approx(2 + 2 + 2 + 2)
    # one at a time: row 0 runs until it stalls (3 steps), then row 1 finds its answer at step 2
    assert first_found_work([tr], 4, 4, "verified+stall", 1, 1, concurrency=1) == pytest.approx(3 + 2)
    # two at a time: rows 0 and 1 together, row 1 valid after step 2 ends the job: 2 + 2
    assert first_found_work([tr], 4, 4, "verified+stall", 1, 1, concurrency=2) == pytest.approx(2 + 2)
    with pytest.raises(ValueError):
        first_found_work([tr], 4, 4, concurrency=5)
    with pytest.raises(ValueError):
        first_found_work([tr], 5, 4)


@pytest.mark.parametrize("slots", [8, 3, 1])
@pytest.mark.parametrize("seed", range(4))
def test_first_found_work_is_what_the_scheduler_spends_on_an_unseeded_one_answer_job(
    seed: int, slots: int
) -> None:
    """Also when the job gets fewer slots than trajectories (``concurrency``): as under round-robin
    admission at saturation, where it holds a few slots at a time."""
    from service.jobs import Job
    from service.scheduler import Scheduler

    gen = torch.Generator().manual_seed(seed)
    width, steps = 8, 6
    ids = torch.where(torch.rand(width, steps, generator=gen) < 0.08,
                      torch.randint(0, 3, (width, steps), generator=gen), torch.full((width, steps), V))
    same = torch.rand(width, steps, generator=gen) < 0.4
    same[:, 0] = False
    halted = torch.rand(width, steps, generator=gen) < 0.05
    tr = Trace(ids, halted, same, 3, 0.0)

    sched = Scheduler(slots=slots, stall_min_steps=2)
    sched.add(Job(id="j", model="m", task="t", x=[[1]], num_trajectories=width, max_solutions=1,
                  max_steps=steps, stall_patience=1, seeded=False), 0.0)
    done = replay_through(sched, tr)
    assert done.steps == first_found_work([tr], width, steps, "verified+halt+stall", 1, 2, concurrency=slots)


def test_the_quality_command_writes_its_study_and_replayable_traces(tmp_path: Any) -> None:
    """The CLI end to end on the shipped N-Queens checkpoint, tiny: 2 puzzles x 4 trajectories x 2 steps."""
    import json

    from typer.testing import CliRunner

    from loadtests.quality import main

    app = typer.Typer()
    app.command()(main)
    out = tmp_path / "q"
    result = CliRunner().invoke(app, ["--checkpoint", "model/weights/nqueens.safetensors", "--baseline", "",
                                      "--puzzles", "2", "--width", "4", "--steps", "2", "--threads", "1",
                                      "--save-traces", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    _, card = read_config("model/weights/nqueens.safetensors")
    assert summary["temperature"] == card.get("prior_temperature", 1.0)  # what the service runs by default
    assert set(summary["first_found_work"]) == {"w1", "w4"}
    for k, figure in ((1, summary["first_found_work"]["w1"]), (4, summary["first_found_work"]["w4"])):
        assert figure["request_steps"] == 2 * k and k <= figure["steps"] <= 2 * k
    traces = [Trace(**t) for t in torch.load(out / "traces.pt")["gram"]]
    assert len(traces) == 2 and traces[0].solution_id.shape == (4, 2)
    replayed = first_found_work(traces, 4, 2)
    assert replayed == pytest.approx(summary["first_found_work"]["w4"]["steps"], abs=0.01)
    assert (out / "quality.csv").is_file() and (out / "quality_vs_width.png").is_file()

    # --replay rebuilds the same study from the traces alone, and other exit settings from them
    replay = ["--replay", "--out", str(out)]
    assert CliRunner().invoke(app, replay).exit_code == 0
    assert json.loads((out / "summary.json").read_text()) == summary
    stall_off = [*replay, "--stall-patience", "0", "--stall-min-steps", "1"]
    assert CliRunner().invoke(app, stall_off).exit_code == 0
    no_stall = json.loads((out / "summary.json").read_text())
    assert no_stall["stall_patience"] == 0 and no_stall["gram/verified+stall"] == no_stall["gram/verified"]


def test_the_study_replays_the_exit_rules_the_engine_runs_for_the_checkpoint(tmp_path: Any) -> None:
    """With the halting head off in the card (Sudoku), the engine's exits are verified + stall: the work
    figures and the engine's saving at equal coverage follow that, not verified + halt + stall."""
    from loadtests.quality import write_study

    gen = torch.Generator().manual_seed(3)
    ids = torch.full((16, 4), V)
    ids[5, 3] = 0  # one trajectory verifies, at the last step
    halted = torch.rand(16, 4, generator=gen) < 0.5  # a head that stops half the trajectories each step
    same = torch.zeros(16, 4, dtype=torch.bool)
    traces = {"gram": [Trace(ids, halted, same, 1, 0.0)]}
    meta = {"task": "t", "knobs": {}, "width": 16, "max_steps": 4}
    _, on = write_study(traces, meta, (1, 3), tmp_path / "on")
    _, off = write_study(traces, {**meta, "use_halting": False}, (1, 3), tmp_path / "off")
    assert on["engine_policy"] == "verified+halt+stall" and off["engine_policy"] == "verified+stall"
    for summary, policy in ((on, "verified+halt+stall"), (off, "verified+stall")):
        assert summary["first_found_work"]["w16"]["steps"] == pytest.approx(
            first_found_work(traces["gram"], 16, 4, policy), abs=0.01
        )
    assert off["first_found_work"]["w16"]["steps"] > on["first_found_work"]["w16"]["steps"]


def test_the_temperature_command_writes_one_row_per_temperature_and_width(tmp_path: Any) -> None:
    import csv

    from typer.testing import CliRunner

    from loadtests.temperature import main

    app = typer.Typer()
    app.command()(main)
    out = tmp_path / "t"
    args = ["--checkpoint", "model/weights/nqueens.safetensors", "--temperatures", "1,3,3/1", "--puzzles",
            "2", "--width", "4", "--steps", "2", "--threads", "1", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "temperature.csv").open()))
    assert [(r["temperature"], float(r["width"])) for r in rows] == [
        (t, w) for t in ("1", "3", "3/1") for w in (1.0, 2.0, 4.0)
    ]
    assert all(0 <= float(r["solved"]) <= 1 and float(r["first_found_work_width"]) == 4 for r in rows)
    assert (out / "temperature.png").is_file()
    bad = CliRunner().invoke(app, [*args[:3], "2.5/0", *args[4:]])
    assert bad.exit_code != 0 and "(0, 10]" in bad.output


def test_the_temperature_rows_replay_the_policy_they_are_given() -> None:
    """Sudoku's card turns its halting head off; the scan must not count that head's stops."""
    from loadtests.temperature import temperature_rows

    ids = torch.tensor([[V, 0]])  # verifies at its second step...
    halted = torch.tensor([[True, False]])  # ...after the head said stop at its first
    traces = [Trace(ids, halted, torch.zeros(1, 2, dtype=torch.bool), 1, 0.0)]
    with_head = temperature_rows(traces, "1", 1, 2, "verified+halt+stall")
    without = temperature_rows(traces, "1", 1, 2, "verified+stall")
    assert with_head[0]["solved"] == 0.0 and without[0]["solved"] == 1.0
