"""Finding and loading each task's weights for the app: a local file, or a Hugging Face Hub file when an
environment variable names one. Never raises for missing or bad weights: the problem is kept for the tab to show.

Reads no environment variable itself: the app passes the environment mapping and a download function.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from explainer.bundle import BundleError
from explainer.predictor import Explainer
from explainer.tasks import TASKS, Task

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
    :class:`WeightsUnavailable` with a message naming the variable and what was tried.
    """
    if spec is None or not spec.strip():
        if default_path.is_file():
            return default_path
        raise WeightsUnavailable(f"no weights file at {default_path} and {env_name} is not set")
    spec = spec.strip()
    local = Path(spec).expanduser()
    if local.is_file():
        return local
    hub = parse_hub_id(spec)
    if hub is None:
        raise WeightsUnavailable(f"{env_name}={spec!r}: no such file (nor a Hub id like user/repo/file.safetensors)")
    if download is None:
        raise WeightsUnavailable(f"{env_name}={spec!r} names a Hugging Face Hub file, but no downloader is available")
    repo_id, filename = hub
    try:
        return Path(download(repo_id, filename))
    except Exception as err:  # offline, unknown repo, no such file, network errors: all mean "not available"
        raise WeightsUnavailable(
            f"{env_name}={spec!r}: could not fetch {filename} from the Hub repo {repo_id} "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no details'})"
        ) from err


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
    env_name = spec_task.env_var
    try:
        path = resolve_weights(spec, Path(weights_dir) / f"{task}.safetensors", env_name, download)
    except WeightsUnavailable as err:
        return TaskModel(task, problem=str(err))
    try:
        explainer = Explainer.load(path, device)
    except BundleError as err:
        return TaskModel(task, source=str(path), problem=f"the weights file cannot be used: {err}")
    except Exception as err:  # e.g. an architecture this timm cannot build
        LOG.exception("loading %s weights from %s failed", task, path)
        return TaskModel(task, source=str(path), problem=f"loading {path} failed ({type(err).__name__}: {err})")
    kind = explainer.preprocessing.get("kind")
    if kind != spec_task.preprocessing_kind:
        return TaskModel(
            task,
            source=str(path),
            problem=f"{path} is a model for {explainer.task!r} images (preprocessing {kind!r}); the {task} tab "
            f"needs preprocessing {spec_task.preprocessing_kind!r}",
        )
    parameters = sum(p.numel() for p in explainer.pair.parameters())
    return TaskModel(task, explainer=explainer, source=str(path), parameters=parameters)


def load_models(
    env: Mapping[str, str], weights_dir: Path, download: Downloader | None = None, device: str = "cpu"
) -> dict[str, TaskModel]:
    """Every task's model, from ``env`` (the app passes ``os.environ``) or ``weights_dir``. Call once at startup."""
    return {task.name: load_task_model(task.name, env.get(task.env_var), weights_dir, download, device)
            for task in TASKS.values()}
