"""The engine loop with the deterministic toy model (tests/fake_model.py) and with a tiny real GRAM."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import torch

from service.engine import Engine, QueueFull
from service.jobs import Job, Outcome, Result
from service.settings import BatchingMode, Settings
from tests.fake_model import FakeModel, SamplingToyTask, ToyTask, expected_toy_outcome

TASK = ToyTask()


def toy_job(seed: int, width: int = 6, max_solutions: int = 10, k: int = 3, spread: int = 3,
            halt: int = 1, **kw: object) -> Job:
    x = TASK.parse({"k": k, "spread": spread, "halt": halt}).x.tolist()
    kw.setdefault("seeded", True)  # the seeded (reproducible) answers these tests compute independently
    return Job.new(model="toy", task="toy", x=x, meta={}, num_trajectories=width,
                   max_solutions=max_solutions, seed=seed, **kw)  # type: ignore[arg-type]


@pytest.fixture
def make_engine() -> Iterator:
    engines: list[Engine] = []

    def make(slots: int = 8, mode: BatchingMode = BatchingMode.continuous, model: FakeModel | None = None,
             task: ToyTask = TASK, **settings: object) -> Engine:
        # The toy decodes the same all-PAD candidate until it solves, so stall exit would retire its slow
        # trajectories: off unless a test turns it on.
        settings.setdefault("stall_patience", 0)
        s = Settings(slots=slots, batching=mode, request_batch_wait_ms=5, **settings)  # type: ignore[arg-type]
        engine = Engine("toy", model or FakeModel(n_sup=8), task, s)
        engine.warmup()
        engine.start()
        engines.append(engine)
        return engine

    yield make
    for e in engines:
        e.stop()


def expected_answer(seed: int, width: int, max_solutions: int, k: int, spread: int) -> dict[int, int]:
    """solution id -> count from the toy's closed form and the prefix rule (no halting)."""
    counts: dict[int, int] = {}
    for t in range(width):
        sol, _ = expected_toy_outcome(seed, t, k, spread)
        counts[sol] = counts.get(sol, 0) + 1
        if len(counts) == max_solutions:
            break
    return counts


def answer(result: Result) -> dict[int, int]:
    return {s.solution: s.count for s in result.solutions}


def test_engine_finds_the_toy_solutions_with_counts_and_steps(make_engine) -> None:
    engine = make_engine(slots=4)
    result = engine.submit(toy_job(seed=11, width=10, k=4, spread=5)).result(timeout=10)
    assert result.outcome == Outcome.complete and result.num_trajectories == 10
    assert answer(result) == expected_answer(11, 10, 10, 4, 5)
    steps = [expected_toy_outcome(11, t, 4, 5)[1] for t in range(10)]
    assert result.steps == sum(steps)
    firsts = {}
    for t in range(10):
        sol, at = expected_toy_outcome(11, t, 4, 5)
        firsts[sol] = min(firsts.get(sol, 99), at)
    assert {s.solution: s.first_step for s in result.solutions} == firsts
    assert [s.score for s in result.solutions] == [-0.25 * s.solution for s in result.solutions]
    counts = [s.count for s in result.solutions]
    assert counts == sorted(counts, reverse=True)


def test_max_solutions_stops_the_job_early(make_engine) -> None:
    engine = make_engine(slots=8)
    result = engine.submit(toy_job(seed=5, width=200, max_solutions=2, k=5, spread=2)).result(timeout=10)
    assert len(result.solutions) == 2
    assert answer(result) == expected_answer(5, 200, 2, 5, 2)
    assert result.num_trajectories < 200


def test_seeded_answers_are_the_same_alone_and_under_load(make_engine) -> None:
    for mode in BatchingMode:
        alone = make_engine(slots=6, mode=mode)
        ref = alone.submit(toy_job(seed=42, width=9, max_solutions=3, k=6, spread=4)).result(timeout=10)
        busy = make_engine(slots=6, mode=mode)
        futures = [busy.submit(toy_job(seed=i, width=1 + i % 7, k=6, spread=4)) for i in range(20)]
        target = busy.submit(toy_job(seed=42, width=9, max_solutions=3, k=6, spread=4))
        futures += [busy.submit(toy_job(seed=100 + i, width=3, k=6, spread=4)) for i in range(10)]
        got = target.result(timeout=20)
        assert [(s.solution, s.count, s.score, s.first_step) for s in got.solutions] == [
            (s.solution, s.count, s.score, s.first_step) for s in ref.solutions
        ], mode
        assert all(f.result(timeout=20).outcome == Outcome.complete for f in futures)


def test_request_mode_runs_every_trajectory_to_max_steps(make_engine) -> None:
    model = FakeModel(n_sup=5)
    engine = make_engine(slots=4, mode=BatchingMode.request, model=model)
    result = engine.submit(toy_job(seed=3, width=4, max_solutions=1, k=3, spread=2)).result(timeout=10)
    assert result.steps == 4 * 5 and result.num_trajectories == 4
    assert len(result.solutions) == 1  # truncated to max_solutions after all ran


def test_halting_retires_trajectories_in_continuous_mode(make_engine) -> None:
    engine = make_engine(slots=8)
    result = engine.submit(toy_job(seed=9, width=9, k=2, spread=9, halt=2)).result(timeout=10)
    # trajectories 2, 5, 8 halt after one step unless solved at step 1; the rest solve by max_steps 8
    at = {t: expected_toy_outcome(9, t, 2, 9)[1] for t in range(9)}
    expected = sum(1 for t, a in at.items() if (a == 1 if t % 3 == 2 else a <= 8))
    assert sum(s.count for s in result.solutions) == expected
    assert result.steps == sum(1 if t % 3 == 2 else min(a, 8) for t, a in at.items())


def test_the_halting_head_can_be_ignored_by_setting(make_engine) -> None:
    engine = make_engine(slots=8, use_halting=False)
    result = engine.submit(toy_job(seed=9, width=9, k=2, spread=9, halt=2)).result(timeout=10)
    at = {t: expected_toy_outcome(9, t, 2, 9)[1] for t in range(9)}
    # as if no trajectory halted: every one runs to its solve step (all within max_steps 8 or 9)
    assert sum(s.count for s in result.solutions) == sum(1 for a in at.values() if a <= 8)
    assert result.steps == sum(min(a, 8) for a in at.values())


def test_stall_exit_retires_trajectories_whose_wrong_candidate_does_not_change(make_engine) -> None:
    # the defaults (patience 1, min steps 3); the toy shows the same all-PAD candidate until it solves
    engine = make_engine(slots=8, stall_patience=1, stall_min_steps=3)
    result = engine.submit(toy_job(seed=4, width=12, k=9, spread=6)).result(timeout=10)
    at = {t: expected_toy_outcome(4, t, 9, 6) for t in range(12)}
    # all-PAD after steps 1, 2 and 3: stalled at step 3 unless solved by then
    assert sum(s.count for s in result.solutions) == sum(1 for _, a in at.values() if a <= 3) > 0
    assert result.steps == sum(min(a, 3) for _, a in at.values()) < sum(a for _, a in at.values())
    # a request can turn it off (or wait longer): then every trajectory solves, as without stall exit
    off = engine.submit(toy_job(seed=4, width=12, k=9, spread=6, stall_patience=0)).result(timeout=10)
    assert sum(s.count for s in off.solutions) == 12
    assert off.steps == sum(a for _, a in at.values())
    patient = engine.submit(toy_job(seed=4, width=12, k=9, spread=6, stall_patience=5)).result(timeout=10)
    assert patient.steps == off.steps and answer(patient) == answer(off)


def test_deadline_returns_a_partial_result(make_engine) -> None:
    engine = make_engine(slots=2, model=FakeModel(n_sup=50, step_delay_s=0.02))
    job = toy_job(seed=1, width=40, k=9, spread=9, max_steps=50, deadline=time.time() + 0.3)
    result = engine.submit(job).result(timeout=10)
    assert result.outcome == Outcome.partial and not result.complete
    assert 0.25 <= result.elapsed_ms / 1000 < 5.0


def test_deadline_is_honoured_within_a_step(make_engine) -> None:
    """With 0.3 s steps and a 0.5 s deadline, the job is answered after its first step (a second would
    end at ~0.6 s), not one step past the deadline."""
    engine = make_engine(slots=2, model=FakeModel(n_sup=50, step_delay_s=0.3))
    job = toy_job(seed=1, width=4, k=9, spread=9, max_steps=50, deadline=time.time() + 0.5)
    result = engine.submit(job).result(timeout=10)
    assert result.outcome == Outcome.partial
    assert result.elapsed_ms < 500


def test_abort_frees_slots_and_answers_aborted(make_engine) -> None:
    model = FakeModel(n_sup=50, step_delay_s=0.01)
    engine = make_engine(slots=4, model=model)
    job = toy_job(seed=1, width=100, k=9, spread=9, max_steps=50)
    slow = engine.submit(job)
    time.sleep(0.1)
    engine.abort(job.id)
    assert slow.result(timeout=5).outcome == Outcome.aborted
    quick = engine.submit(toy_job(seed=2, width=2, k=1, spread=1)).result(timeout=5)
    assert quick.outcome == Outcome.complete
    assert engine.scheduler.stats().active_slots == 0


def test_queue_bound_raises_queue_full(make_engine) -> None:
    engine = make_engine(slots=1, model=FakeModel(n_sup=50, step_delay_s=0.02), max_queue=2)
    engine.submit(toy_job(seed=1, width=5, max_steps=50, k=9, spread=9))
    engine.submit(toy_job(seed=2, width=5, max_steps=50, k=9, spread=9))
    with pytest.raises(QueueFull) as err:
        engine.submit(toy_job(seed=3))
    assert err.value.retry_after_s >= 1


def test_bad_jobs_are_refused_at_submit(make_engine) -> None:
    engine = make_engine(slots=1)
    with pytest.raises(ValueError, match="job.x"):
        engine.submit(Job.new(model="toy", task="toy", x=[[1], [2]]))
    with pytest.raises(ValueError, match="tokens"):
        engine.submit(Job.new(model="toy", task="toy", x=[[1], [2], [99], [1]]))
    for not_an_int in (1.5, True, "1"):  # torch would have cast these to a token silently
        with pytest.raises(ValueError, match="tokens must be ints"):
            engine.submit(Job.new(model="toy", task="toy", x=[[1], [2], [not_an_int], [1]]))
    with pytest.raises(ValueError, match="max_steps"):
        engine.submit(toy_job(seed=1, max_steps=100_000))


def test_a_job_id_already_queued_is_refused(make_engine) -> None:
    engine = make_engine(slots=1, model=FakeModel(n_sup=50, step_delay_s=0.01))
    job = toy_job(seed=1, max_steps=50, k=9, spread=9)
    first = engine.submit(job)
    with pytest.raises(ValueError, match="already queued"):
        engine.submit(job)
    engine.abort(job.id)
    assert first.result(timeout=5).outcome == Outcome.aborted
    assert engine.submit(job).result(timeout=10).outcome == Outcome.complete  # free again once answered


def test_a_failing_model_answers_error_and_the_engine_keeps_serving(make_engine) -> None:
    model = FakeModel()
    engine = make_engine(slots=2, model=model)
    original = model.step
    model.step = lambda *a: (_ for _ in ()).throw(RuntimeError("boom"))  # type: ignore[method-assign]
    result = engine.submit(toy_job(seed=1)).result(timeout=5)
    assert result.outcome == Outcome.error and "boom" in (result.error or "")
    model.step = original  # type: ignore[method-assign]
    assert engine.submit(toy_job(seed=1)).result(timeout=5).outcome == Outcome.complete


def test_job_and_result_round_trip_through_json(make_engine) -> None:
    engine = make_engine(slots=2)
    job = toy_job(seed=4, width=3)
    result = engine.submit(Job.from_json(job.to_json())).result(timeout=5)
    assert Job.from_json(job.to_json()) == job
    assert Result.from_json(result.to_json()) == result


def test_engine_runs_a_tiny_real_gram() -> None:
    from model.gram import tiny_model
    from model.tasks.registry import get_task

    task = get_task("nqueens")
    model = tiny_model("nqueens")
    engine = Engine("nq", model, task, Settings(slots=8))
    engine.warmup()
    engine.start()
    try:
        inst = task.parse({"n": 4, "queens": []})
        job = Job.new(model="nq", task="nqueens", x=inst.x.tolist(), meta=inst.meta, num_trajectories=6,
                      seed=1, max_steps=3)
        a = engine.submit(job).result(timeout=60)
        b = engine.submit(Job.from_dict({**job.to_dict(), "id": "again"})).result(timeout=60)
        assert a.outcome == b.outcome == Outcome.complete
        assert a.steps == b.steps and [s.solution for s in a.solutions] == [s.solution for s in b.solutions]
        assert model.config.n_sup == engine.n_sup
    finally:
        engine.stop()


def test_sample_jobs_return_one_output_per_trajectory(make_engine) -> None:
    engine = make_engine(slots=4, task=SamplingToyTask())  # sampling is the task's property
    job = toy_job(seed=1, width=5, k=2, spread=2, max_steps=3)
    result = engine.submit(job).result(timeout=5)
    assert len(result.solutions) == 5 and all(s.count == 1 and s.first_step == 3 for s in result.solutions)


def test_slot_state_survives_moves_between_batches() -> None:
    # FakeModel.step asserts that noise.step equals the step count carried in h: an engine that mixed
    # up slots would raise there and answer errors.
    model = FakeModel(n_sup=8)
    engine = Engine("toy", model, TASK, Settings(slots=3, stall_patience=0))
    engine.start()
    try:
        futures = [engine.submit(toy_job(seed=i, width=1 + i % 5, k=9, spread=8)) for i in range(15)]
        results = [f.result(timeout=10) for f in futures]
        assert all(r.outcome == Outcome.complete for r in results), [r.error for r in results]
        for i, r in enumerate(results):
            assert answer(r) == expected_answer(i, 1 + i % 5, 10, 9, 8)
        assert model.rows_run == sum(r.steps for r in results)
    finally:
        engine.stop()
    assert torch.is_grad_enabled()  # the engine thread disabled grad for itself only


def test_engine_steps_a_gram_model_through_the_cpu_path_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """On CPU the engine runs model.fast_path.runner's choice (GRAM_CPU_PATH), not plain fp32 model.step."""
    from model.gram import tiny_model
    from model.tasks.registry import get_task

    monkeypatch.setenv("GRAM_CPU_PATH", "bf16")
    engine = Engine("nq", tiny_model("nqueens").eval(), get_task("nqueens"), Settings(slots=4))
    assert engine.step_path == "cpu+bf16"
    engine.warmup()  # one step through the bf16 path, tensors back in the engine's fp32
    assert engine.ready


def test_each_job_steps_at_its_temperature(make_engine) -> None:
    """A job's temperature (else the engine's default) reaches the prior of every slot it holds."""
    engine = make_engine(slots=8, temperature=2.0)
    seen: dict[int, set[float]] = {}  # seed -> temperatures its rows stepped at
    step = engine.runner.run_step

    def spy(h, l, e_x, noise):  # type: ignore[no-untyped-def]
        for seed, temperature in zip(noise.seed.tolist(), noise.temperature.tolist(), strict=True):
            seen.setdefault(seed, set()).add(round(temperature, 6))
        return step(h, l, e_x, noise)

    engine.runner.run_step = spy
    hot = engine.submit(toy_job(seed=101, width=3, temperature=0.5))
    default = engine.submit(toy_job(seed=102, width=3))
    hot.result(timeout=10), default.result(timeout=10)
    assert seen[101] == {0.5} and seen[102] == {2.0}
    assert engine.answer_settings()["temperature"] == 2.0  # part of the Redis result-cache key


def test_default_temperature_is_the_setting_else_the_checkpoints_card() -> None:
    model = FakeModel()
    assert Engine("toy", model, TASK, Settings()).temperature == 1.0  # no card: the trained prior
    model.card = {"prior_temperature": 2.5}  # type: ignore[attr-defined]
    assert Engine("toy", model, TASK, Settings()).temperature == 2.5
    assert Engine("toy", model, TASK, Settings(temperature=1.5)).temperature == 1.5


def test_halting_is_the_setting_else_the_checkpoints_card() -> None:
    model = FakeModel()
    assert Engine("toy", model, TASK, Settings()).scheduler.use_halting is True  # no card: on
    model.card = {"use_halting": False}  # type: ignore[attr-defined]
    engine = Engine("toy", model, TASK, Settings())
    assert engine.scheduler.use_halting is False and engine.answer_settings()["use_halting"] is False
    assert Engine("toy", model, TASK, Settings(use_halting=True)).scheduler.use_halting is True


@pytest.mark.parametrize("temperature", [0.0, -1.0, 11.0])
def test_a_temperature_out_of_range_is_refused(make_engine, temperature: float) -> None:
    engine = make_engine(slots=1)
    with pytest.raises(ValueError, match="temperature"):
        engine.submit(toy_job(seed=1, temperature=temperature))
