"""Service settings, read from the environment with the prefix ``GRAM_`` (pydantic-settings).

Every knob the engine, the API and the CLI share lives here, so `gram serve --slots 32` and
`GRAM_SLOTS=32 gram serve` mean the same thing. ``GRAM_QUEUE_URL`` selects the Redis queue
(service/redis/); the Redis-mode knobs below it are read by the API's queue and by `gram worker`, and the
embedded in-process queue ignores them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.exit_rules import BatchingMode

__all__ = ["BatchingMode", "MAX_TEMPERATURE", "Settings"]

DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "model" / "weights"
MAX_TEMPERATURE = 10.0  # prior temperatures above this only add noise (BENCHMARKS.md, "Prior temperature")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRAM_", extra="ignore")

    batching: BatchingMode = BatchingMode.continuous
    slots: int = Field(64, ge=1, le=65536, description="trajectory slots per engine (the batch size)")
    max_trajectories: int = Field(1024, ge=1, description="cap on num_trajectories of one request")
    max_queue: int = Field(256, ge=1, description="jobs waiting or running per model before 429")
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="request bodies above this get 413")
    request_read_timeout_s: float = Field(
        10.0, gt=0, description="gram serve: close a connection whose request has not arrived whole this "
                                "long after its first byte (or after connecting)",
    )
    max_connections: int = Field(1000, ge=1, description="gram serve: connections beyond this are closed")
    # Round-robin by default: at saturation a job then holds few slots at a time, so fewer of its
    # trajectories run on after it has its answer. Measured against fcfs on N-Queens (BENCHMARKS.md,
    # admission comparison): +10-13 % peak and +2-5 % sustained throughput on width-16 traffic, within
    # run-to-run spread on mixed traffic; the same latency at light load (with free slots both admit a
    # job's whole width at once).
    admission: Literal["fcfs", "round_robin"] = Field(
        "round_robin",
        description="continuous mode: who gets freed slots (one per waiting job in turn, or oldest first)",
    )
    request_batch_wait_ms: float = Field(
        10.0, ge=0.0, description="request mode: how long a batch waits after its first arrival"
    )
    deadline_admission: bool = Field(
        True, description="refuse (429) a request whose deadline the work queued ahead of it would make it "
                          "miss, at the measured speed and work per job (service/admission.py)",
    )
    default_timeout_ms: float | None = Field(
        None, gt=0, description="deadline for requests that give no timeout_ms (None: no deadline)"
    )
    max_timeout_ms: float = Field(600_000.0, gt=0, description="cap on a request's timeout_ms")
    max_steps_cap: int = Field(256, ge=1, description="cap on a request's max_steps")
    # Patience 1 from the third step on: on N-Queens 8x8 (two sets of 32 puzzles x 256 trajectories,
    # 10791-step checkpoint) patience 1 from the start lost a puzzle's only solution in each set; waiting
    # until a trajectory has run 3 steps kept every solution and spent fewer steps than patience 2. On the
    # 22081-step checkpoint it gives up one completion of one puzzle that patience 2 keeps, for a third
    # fewer steps than verified exit alone (BENCHMARKS.md, "Stall exit").
    stall_patience: int = Field(
        1, ge=0, le=1024,
        description="continuous mode: retire a trajectory whose invalid answer stayed the same this many "
                    "steps in a row (stall exit; 0: off), for requests that do not say",
    )
    stall_min_steps: int = Field(
        3, ge=1, le=1024, description="stall exit retires no trajectory that has run fewer steps than this"
    )
    use_halting: bool | None = Field(
        None, description="continuous mode: retire a trajectory when the model's halting head says stop "
                          "(q_halt > 0); false ignores it (e.g. a head that fires early on wrong answers); "
                          "unset: each checkpoint's card (use_halting), else true",
    )
    # The prior's temperature (NoiseKeys.temperature): above 1, a width's trajectories spread further and
    # solve more distinct puzzles. Measured per checkpoint, so the default is each checkpoint's own
    # (its card's prior_temperature; N-Queens ships 2.5, BENCHMARKS.md "Prior temperature").
    temperature: float | None = Field(
        None, gt=0, le=MAX_TEMPERATURE,
        description="prior temperature for requests that give none; unset: each checkpoint's recommended "
                    "value (its card's prior_temperature, else 1: the trained prior)",
    )
    weights_dir: Path = DEFAULT_WEIGHTS_DIR
    models: str = Field("", description="comma-separated checkpoint names to load; empty: all in weights_dir")
    device: str = Field("cpu", description="torch device for the engines, e.g. cpu or cuda:0")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads (None: torch default)")
    cuda_runner: bool = Field(
        True, description="on CUDA, run steps through model.fast_path (fused Triton + CUDA graphs)"
    )
    queue_url: str | None = Field(
        None, description="redis:// URL of the Redis job queue; unset: embedded"
    )
    warmup: bool = Field(True, description="run one supervision step per model before /readyz says ready")

    # -- Redis mode (GRAM_QUEUE_URL set): the API's queue and `gram worker` ---------------------------
    redis_timeout_s: float = Field(2.0, gt=0, description="connect and command timeout")
    result_ttl_s: float = Field(300.0, gt=0, description="how long an unread result is kept")
    deadline_grace_s: float = Field(
        5.0, ge=0, description="the API waits this long past a job's deadline for its partial result"
    )
    outage_grace_s: float = Field(
        5.0, ge=0, description="a waiting request rides out a Redis outage this long before 503"
    )
    claim_idle_s: float = Field(
        15.0, gt=0, description="a running job not refreshed by its worker for this long is re-claimed"
    )
    lease_s: float = Field(
        10.0, gt=0, description="a job whose API stopped renewing its lease this long ago (the API is gone) "
                                "is aborted, or answered aborted unrun",
    )
    max_deliveries: int = Field(3, ge=1, description="deliveries before a job goes to the dead-letter stream")
    dead_letter_maxlen: int = Field(10_000, ge=1, description="dead-letter entries kept per model")
    cache_ttl_s: float = Field(3600.0, ge=0, description="result cache for seeded requests; 0 disables it")
    cache_url: str | None = Field(
        None, description="redis:// URL of a Redis for the result cache alone (maxmemory, allkeys-lru); "
                          "unset: GRAM_QUEUE_URL's",
    )
    cache_max_entry_bytes: int = Field(65536, ge=0, description="answers larger than this are not cached")
    cache_max_bytes: int = Field(
        256 * 2**20, ge=0, description="the cached answers' bytes, at most (least recently used evicted)"
    )
    worker_max_jobs: int = Field(8, ge=1, description="jobs one worker holds per model (running + queued)")
    worker_block_s: float = Field(1.0, gt=0, description="how long one XREADGROUP blocks")

    def model_names(self) -> list[str]:
        return [name.strip() for name in self.models.split(",") if name.strip()]
