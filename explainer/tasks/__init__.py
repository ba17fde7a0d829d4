"""The tasks the project knows, each a :class:`Task` subclass; look one up here instead of comparing names."""

from __future__ import annotations

from typing import Any

from .base import MIN_IMAGE_SIDE, ImageCheckError, Task
from .birds import BirdsTask
from .shapes import ShapesTask

SHAPES = ShapesTask()
BIRDS = BirdsTask()
TASKS: dict[str, Task] = {task.name: task for task in (SHAPES, BIRDS)}  # in the app's tab order


def task_for_preprocessing(kind: Any) -> Task | None:
    """The task whose weights carry ``preprocessing.kind == kind``, or None."""
    return next((task for task in TASKS.values() if task.preprocessing_kind == kind), None)


__all__ = [
    "BIRDS",
    "MIN_IMAGE_SIDE",
    "SHAPES",
    "TASKS",
    "BirdsTask",
    "ImageCheckError",
    "ShapesTask",
    "Task",
    "task_for_preprocessing",
]
