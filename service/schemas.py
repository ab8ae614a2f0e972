"""HTTP request and response bodies (pydantic v2). /solve bodies are a union tagged by ``task``.

Pydantic checks the shape and types (strict scalars: no "3" -> 3, true -> 1 or 2.0 -> 2 coercion; unknown
fields are refused); the task's own ``parse`` then checks
the meaning (board ranges, attacking queens, repeated digits) and its TaskInputError message becomes the
422 detail. Each model carries an OpenAPI example.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from service.settings import MAX_TEMPERATURE

MAX_SEED = 2**63 - 1

SUDOKU_EXAMPLE = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"


Number = StrictFloat | StrictInt


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SolveCommon(_Strict):
    model: StrictStr | None = Field(
        None, description="a loaded model's name (GET /models); default: the first serving the task"
    )
    num_trajectories: StrictInt = Field(
        20, ge=1, description="width budget: trajectories sampled at most (capped by GRAM_MAX_TRAJECTORIES)"
    )
    max_solutions: StrictInt = Field(
        10, ge=1, le=10_000, description="stop once this many distinct solutions"
    )
    max_steps: StrictInt | None = Field(
        None, ge=1, description="supervision steps per trajectory (default: the model's N_sup)"
    )
    stall_patience: StrictInt | None = Field(
        None, ge=0, le=1024,
        description="stall exit (continuous batching): retire a trajectory whose invalid answer stayed the "
                    "same this many supervision steps in a row; 0: run it to max_steps; default: "
                    "the server's GRAM_STALL_PATIENCE",
    )
    seed: StrictInt | None = Field(
        None, ge=0, le=MAX_SEED,
        description="same seed, same answer; null draws a random seed and answers with the first "
                    "max_solutions found in any trajectory (faster, not reproducible)",
    )
    temperature: Number | None = Field(
        None, gt=0, le=MAX_TEMPERATURE,
        description="prior temperature: above 1 the trajectories explore further (more distinct solutions, "
                    "each trajectory less often right); default: the model's recommended value (GET /models)",
    )
    timeout_ms: Number | None = Field(
        None, gt=0, description="deadline; when reached the answer is partial (complete: false)"
    )


class SudokuRequest(SolveCommon):
    task: Literal["sudoku"]
    puzzle: StrictStr | list[list[StrictInt]] = Field(
        description="81 characters ('.' or '0' blank) or a 9x9 array of ints (0 blank)"
    )
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"task": "sudoku", "puzzle": SUDOKU_EXAMPLE, "seed": 0}]}
    )


class NQueensRequest(SolveCommon):
    task: Literal["nqueens"]
    n: StrictInt = Field(description="board size, 4..12")
    queens: list[tuple[StrictInt, StrictInt]] = Field(
        default_factory=list, description="queens already placed, [row, col] 0-based"
    )
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"task": "nqueens", "n": 8, "queens": [[0, 0]], "max_solutions": 4, "seed": 0}]
        }
    )


class GraphColoringRequest(SolveCommon):
    task: Literal["graph_coloring"]
    num_nodes: StrictInt = Field(description="nodes 0..num_nodes-1, at most 16")
    edges: list[tuple[StrictInt, StrictInt]] = Field(description="undirected edges [u, v]")
    num_colors: StrictInt = Field(description="colours 0..num_colors-1, 2..4")
    fixed: dict[str, StrictInt] | None = Field(None, description="node -> colour it must have")
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "task": "graph_coloring", "num_nodes": 5, "num_colors": 3,
                    "edges": [[0, 1], [1, 2], [2, 3], [3, 4], [4, 0]], "fixed": {"0": 0}, "seed": 0,
                }
            ]
        }
    )


AnySolveRequest = SudokuRequest | NQueensRequest | GraphColoringRequest
SolveRequest = Annotated[AnySolveRequest, Field(discriminator="task")]

TASK_FIELDS = {"task", "puzzle", "n", "queens", "num_nodes", "edges", "num_colors", "fixed"}


def task_body(request: BaseModel) -> dict[str, Any]:
    """The task-specific fields as plain JSON values, for ``Task.parse``."""
    data = request.model_dump(mode="json", exclude_unset=False)
    return {k: v for k, v in data.items() if k in TASK_FIELDS}


class SolutionOut(BaseModel):
    solution: Any = Field(description="sudoku: the input's format; nqueens: {queens, board}; "
                                      "graph_coloring: {colors}")
    score: float = Field(description="decoder log-likelihood of the solution (sum of token log-probs)")
    count: int = Field(description="trajectories that reached this solution")
    first_step: int = Field(description="fewest supervision steps any trajectory needed to reach it")


class SolveResponse(BaseModel):
    task: str
    model: str
    solutions: list[SolutionOut]
    complete: bool = Field(description="false when the deadline cut the search short")
    num_trajectories: StrictInt = Field(description="trajectories the answer is made of")
    steps: int = Field(description="supervision steps those trajectories ran, summed")
    elapsed_ms: float
    seed: int = Field(description="the seed used (drawn at random when the request gave null)")
    cached: bool = Field(False, description="answered from the result cache (Redis mode, seeded requests)")


class SampleRequest(_Strict):
    n: StrictInt = Field(8, ge=1, le=64, description="images to sample")
    steps: StrictInt | None = Field(None, ge=1, description="supervision steps (default: the model's N_sup)")
    seed: StrictInt | None = Field(None, ge=0, le=MAX_SEED)
    temperature: Number | None = Field(
        None, gt=0, le=MAX_TEMPERATURE,
        description="prior temperature (default: the model's recommended value, GET /models)",
    )
    format: Literal["png", "bits"] = Field("png", description="png: base64 PNG per image; bits: 28 rows")
    timeout_ms: Number | None = Field(None, gt=0)
    model_config = ConfigDict(json_schema_extra={"examples": [{"n": 4, "seed": 0, "format": "png"}]})


class SampleResponse(BaseModel):
    model: str
    images: list[str | list[str]] = Field(description="png: base64 PNG; bits: 28 strings of 28 '0'/'1'")
    grid_png: str = Field(description="all images in one base64 PNG grid (empty when there are none)")
    complete: bool
    steps: int
    elapsed_ms: float
    seed: int
    cached: bool = Field(False, description="answered from the result cache (Redis mode, seeded requests)")


class ModelCard(BaseModel):
    name: str
    task: str
    ready: bool
    slots: int
    batching: str
    n_sup: int
    temperature: float = Field(1.0, description="prior temperature of requests that give none")
    parameters: int | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    card: dict[str, Any] = Field(default_factory=dict)
    markdown: str | None = Field(None, description="the model card shipped beside the checkpoint (<name>.md)")


class ModelsResponse(BaseModel):
    models: list[ModelCard]


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    detail: list[ErrorItem] | str
