"""Finding and loading each task's weights for the app: a local file, or a Hugging Face Hub file when an
environment variable names one. Never raises for missing or bad weights: the problem is kept for the tab to show.

Reads no environment variable itself: the app passes the environment mapping and a download function.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from explainer.pair.bundle import BundleError
from explainer.tasks import TASKS, Task
from explainer.verdict.predictor import Explainer
from webapp.words import words

LOG = logging.getLogger("webapp")

Downloader = Callable[[str, str], str]  # (repo_id, filename) -> local path, e.g. huggingface_hub.hf_hub_download


class WeightsUnavailable(RuntimeError):
    """No usable weights for a task; the message says why and how to get them."""


def parse_hub_id(spec: str) -> tuple[str, str] | None:
    """``user/repo/path/file.safetensors`` (optionally prefixed ``hf://``) -> (``user/repo``, ``path/file...``)."""
    text = spec.strip()
    if text.startswith("hf://"):
        text = text[len("hf://") :]
    elif text.startswith(("/", ".", "~")) or "\\" in text or ":" in text:
        return None
    parts = text.split("/")
    if len(parts) < 3 or any(not p for p in parts):
        return None
    return "/".join(parts[:2]), "/".join(parts[2:])


def resolve_weights(spec: str | None, default_path: Path, env_name: str, download: Downloader | None = None) -> Path:
    """The weights file for one task: ``spec`` (a path or a Hub id) if given, else ``default_path``.

    A Hub id is fetched only when ``spec`` names one and the path does not exist locally. Raises
    :class:`WeightsUnavailable` with a message a visitor may read: it names the variable and what to do, never the
    server's folders or an exception's class (the server log has those).
    """
    if spec is None or not spec.strip():
        if default_path.is_file():
            return default_path
        raise WeightsUnavailable(f"the app has no weights/{default_path.name} and {env_name} is not set")
    spec = spec.strip()
    local = Path(spec).expanduser()
    if local.is_file():
        return local
    hub = parse_hub_id(spec)
    if hub is None:
        LOG.warning("%s=%r: no such file", env_name, spec)
        raise WeightsUnavailable(
            f"{env_name} names no such file on the server, nor a Hugging Face Hub file (user/repo/file.safetensors)"
        )
    repo_id, filename = hub
    if download is None:
        raise WeightsUnavailable(
            f"{env_name} names the Hugging Face Hub file {filename} in {repo_id}, but this app cannot download"
        )
    try:
        return Path(download(repo_id, filename))
    except Exception as err:  # offline, unknown repo, no such file, network errors: all mean "not available"
        LOG.warning("fetching %s from %s failed: %r", filename, repo_id, err)
        raise WeightsUnavailable(
            f"{env_name} names the Hugging Face Hub file {filename} in {repo_id}, which could not be fetched (the "
            "server may be offline, or the repository or file may not exist or be private)"
        ) from err


def _without_path(message: str, path: Path) -> str:
    """A BundleError's words without the file path it starts with."""
    for prefix in (f"{path}: ", f"{path.name}: "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message.replace(str(path), path.name)


@dataclass
class TaskModel:
    """One task's model, or why there is none. ``source`` says where the weights came from."""

    task: str
    explainer: Explainer | None = None
    source: str = ""
    problem: str | None = None
    parameters: int = 0

    @property
    def available(self) -> bool:
        return self.explainer is not None

    @property
    def spec(self) -> Task:
        """The task's class instance: what the tab shows and how it checks images."""
        return TASKS[self.task]


def load_task_model(
    task: str, spec: str | None, weights_dir: Path, download: Downloader | None = None, device: str = "cpu"
) -> TaskModel:
    """Load one task's weights (never raises for missing or bad weights: the problem is kept for the UI)."""
    if task not in TASKS:
        raise ValueError(f"task {task!r} is not one of {tuple(TASKS)}")
    spec_task = TASKS[task]
    env_name = words(spec_task).env_var
    try:
        path = resolve_weights(spec, Path(weights_dir) / f"{task}.safetensors", env_name, download)
    except WeightsUnavailable as err:
        return TaskModel(task, problem=str(err))
    try:
        explainer = Explainer.load(path, device)
    except BundleError as err:
        return TaskModel(
            task,
            source=str(path),
            problem=f"the weights file ({env_name} or weights/{task}.safetensors) "
            f"cannot be used: {_without_path(str(err), path)}",
        )
    except Exception:  # e.g. an architecture this timm cannot build
        LOG.exception("loading %s weights from %s failed", task, path)
        return TaskModel(
            task,
            source=str(path),
            problem=f"the weights file ({env_name} or weights/{task}.safetensors) "
            "could not be loaded; the server log has the details",
        )
    kind = explainer.preprocessing.get("kind")
    if kind != spec_task.preprocessing_kind:
        return TaskModel(
            task,
            source=str(path),
            problem=f"the weights file is a model for {str(explainer.task)[:40]!r} images (preprocessing "
            f"{str(kind)[:40]!r}); the {task} tab needs preprocessing {spec_task.preprocessing_kind!r}",
        )
    parameters = sum(p.numel() for p in explainer.pair.parameters())
    return TaskModel(task, explainer=explainer, source=str(path), parameters=parameters)


def load_models(
    env: Mapping[str, str], weights_dir: Path, download: Downloader | None = None, device: str = "cpu"
) -> dict[str, TaskModel]:
    """Every task's model, from ``env`` (the app passes ``os.environ``) or ``weights_dir``. Call once at startup."""
    return {
        task.name: load_task_model(task.name, env.get(words(task).env_var), weights_dir, download, device)
        for task in TASKS.values()
    }
