"""HTTP request and response bodies (pydantic v2). /solve bodies are a union tagged by ``task``.

The union is built from the task registry: each family's module exports its own fields
(``Task.request_model``, with ``task: Literal[name]``) and OpenAPI examples (``Task.openapi_examples``);
here every one is combined with ``SolveCommon`` (width, seed, limits). Adding a family touches no file here.

Pydantic checks the shape and types (strict scalars: no "3" -> 3, true -> 1 or 2.0 -> 2 coercion; unknown
fields are refused); the task's own ``parse`` then checks
the meaning (board ranges, attacking queens, repeated digits) and its TaskInputError message becomes the
422 detail. Each model carries an OpenAPI example.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from model.tasks.registry import TASKS
from service.settings import MAX_TEMPERATURE

# Seeds stay below 2^53: JSON numbers above it lose digits in JavaScript and jq, and a seed sent back
# rounded would silently give another answer.
MAX_SEED = 2**53 - 1


# a JSON number (integers too), not a string or a boolean: one strict float, so the schema is a plain
# "number" with standard bounds (a union of int and float published non-standard "gt" / "le")
Number = Annotated[float, Field(strict=True)]


class _Strict(BaseModel):
    # NaN and Infinity are not JSON, but Python's parser reads them: refused, naming the field
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


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
    render: Literal["png", "svg"] | None = Field(
        None,
        description="add a picture of each solution (its `picture` field): png: a base64 PNG; svg: SVG "
                    "text. Sudoku: the 9x9 grid, givens shaded and black, filled digits blue; N-Queens: the "
                    "board, given queens red; graph colouring: the graph on a circle, nodes filled with "
                    "their colour (fixed nodes with a thick rim). Default: no pictures",
    )
    stream: StrictBool = Field(
        False, description="answer with Server-Sent Events: each distinct solution as it is verified, "
                           "progress, then the answer (also: Accept: text/event-stream)",
    )


def _solve_request(fields: type[BaseModel]) -> type[SolveCommon]:
    """A family's /solve body: the common fields first, then its own (the order the schema shows);
    named like the family's model, so the OpenAPI components keep their names."""
    return type(fields.__name__, (fields, SolveCommon), {"__module__": __name__, "__doc__": None})


# task name -> its /solve body model, in registry order
SOLVE_REQUESTS: dict[str, type[SolveCommon]] = {
    name: _solve_request(task.request_model) for name, task in TASKS.items() if task.request_model is not None
}
SolveRequest = Annotated[Union[tuple(SOLVE_REQUESTS.values())], Field(discriminator="task")]  # noqa: UP007
# OpenAPI examples of POST /solve bodies, every family's
SOLVE_EXAMPLES: dict[str, dict[str, Any]] = {
    key: example for task in TASKS.values() for key, example in task.openapi_examples.items()
}


def task_body(request: SolveCommon) -> dict[str, Any]:
    """The task-specific fields as plain JSON values, for ``Task.parse``."""
    fields = TASKS[request.task].request_model.model_fields  # type: ignore[attr-defined, union-attr]
    return request.model_dump(mode="json", include=set(fields))


class SolutionOut(BaseModel):
    solution: Any = Field(description="sudoku: the input's format; nqueens: {queens, board}; "
                                      "graph_coloring: {colors}")
    score: float = Field(description="decoder log-likelihood of the solution (sum of token log-probs)")
    count: int = Field(description="trajectories that reached this solution")
    first_step: int = Field(description="fewest supervision steps any trajectory needed to reach it")
    picture: str | None = Field(
        None, exclude_if=lambda value: value is None,
        description="only when the request asked for `render`: the solution drawn as a base64 PNG (png) "
                    "or an SVG document (svg); SVG shapes carry data-* attributes (Sudoku digits: "
                    "data-cell/data-digit/data-given; queens: data-row/data-col/data-given; graph nodes: "
                    "data-node/data-color/data-fixed)",
    )


JobId = Annotated[str, Field(description="the job's id (also in the X-Job-Id header); a retry with the same "
                                         "Idempotency-Key answers with the first attempt's")]


class SolveResponse(BaseModel):
    job_id: JobId
    task: str
    model: str
    solutions: list[SolutionOut]
    complete: bool = Field(description="false when the deadline cut the search short")
    num_trajectories: StrictInt = Field(description="trajectories the answer is made of")
    steps: int = Field(description="supervision steps those trajectories ran, summed")
    elapsed_ms: float
    seed: int = Field(description="the seed used (drawn at random when the request gave null)")
    cached: bool = Field(False, description="answered from the result cache (Redis mode, seeded requests)")
    status: Literal["solved", "not_found", "infeasible"] = Field(
        description="solved: at least one verified solution; infeasible: no solution exists, proven by an "
                    "exact search (never guessed); not_found: none found (see hint)"
    )
    hint: str | None = Field(
        None, description="for not_found: what to change (timeout_ms, num_trajectories, temperature) and "
                          "whether an exact search showed that solutions exist"
    )
    outside_trained_range: str | None = Field(
        None, description="set when the request lies outside what the model was trained on (GET /models, "
                          "trained_range): why. The answer is still given; expect fewer solutions"
    )


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
    stream: StrictBool = Field(
        False, description="answer with Server-Sent Events: each digit as it finishes, progress, then the "
                           "answer (also: Accept: text/event-stream)",
    )
    model_config = ConfigDict(json_schema_extra={"examples": [{"n": 4, "seed": 0, "format": "png"}]})


class SampleResponse(BaseModel):
    job_id: JobId
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
    trained_range: str | None = Field(
        None, description="the inputs the checkpoint was trained on; requests outside it are answered "
                          "with outside_trained_range set"
    )
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
