"""The families by name: the service and the trainer find a Task here and use only the protocol."""

from __future__ import annotations

from model.tasks.base import Task, TaskInputError
from model.tasks.coloring import TASK as GRAPH_COLORING
from model.tasks.mnist import TASK as MNIST
from model.tasks.nqueens import TASK as NQUEENS
from model.tasks.sudoku import TASK as SUDOKU

TASKS: dict[str, Task] = {
    SUDOKU.name: SUDOKU,
    NQUEENS.name: NQUEENS,
    GRAPH_COLORING.name: GRAPH_COLORING,
    MNIST.name: MNIST,
}


def get_task(name: str) -> Task:
    """The Task registered under ``name``; a TaskInputError naming the known families otherwise."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(TASKS))
        raise TaskInputError(f"unknown task {name!r}; known tasks: {known}", field_name="task") from None
