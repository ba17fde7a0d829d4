"""The words the app shows for each task (tab titles, prompts, labels, notes) and where it finds its weights: the
library's tasks know images and weights files, never the page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from explainer.tasks import Task


def backbone_name(model_name: str) -> str:
    """ "EfficientNet-Lite0 (timm `tf_efficientnet_lite0`)" from a timm name; other names as they are."""
    readable = {"tf_efficientnet_lite": "EfficientNet-Lite", "resnet": "ResNet", "efficientnet_b": "EfficientNet-B"}
    for prefix, words in readable.items():
        if model_name.startswith(prefix) and model_name[len(prefix) :].isdigit():
            return f"{words}{model_name[len(prefix) :]} (timm `{model_name}`)"
    return f"timm `{model_name}`"


def birds_note(description: str, meta: Mapping[str, Any] | None = None) -> str:
    """The model named honestly from its weights file: how many species, which backbone, the measured top-1, and
    whether photos that are not birds are caught."""
    if meta is None:
        return f"**Model:** {description}." if description else ""
    n_species = len(meta.get("class_names", []))
    model_name = str(meta.get("architecture", {}).get("model_name", "unknown"))
    metrics = meta.get("metrics") if isinstance(meta.get("metrics"), Mapping) else {}
    top1, top5 = metrics.get("accuracy"), metrics.get("top5_accuracy")
    n_test = metrics.get("test_images") or metrics.get("n")
    if isinstance(top1, (int, float)):
        measured = f"measured top-1 **{100 * top1:.1f}%**"
        measured += f" (top-5 {100 * top5:.1f}%)" if isinstance(top5, (int, float)) else ""
        measured += f" on {int(n_test):,} held-out CUB photos" if isinstance(n_test, (int, float)) else ""
    else:
        measured = "no measured accuracy recorded in this weights file"
    scope = meta.get("scope")
    if isinstance(scope, Mapping):
        architecture = scope.get("architecture")
        gate = architecture.get("model_name") if isinstance(architecture, Mapping) else None
        named = f" ({backbone_name(str(gate)).split(' (')[0]})" if gate else ""
        check = f"A third network, an ImageNet classifier{named}, checks that the photo shows a bird at all."
    else:
        check = "This weights file has no bird check: any photo gets a species name."
    return (
        f"**Model:** knows **{n_species} bird species** of CUB-200-2011's 200 · backbone "
        f"{backbone_name(model_name)} (ImageNet-pretrained), with a mirror network that reads its activations · "
        f"{measured}. {check}"
    )


def no_note(description: str, meta: Mapping[str, Any] | None = None) -> str:
    """No note above the inputs."""
    return ""


@dataclass(frozen=True)
class TaskWords:
    """What the app says and does for one task."""

    title: str  # the tab's title
    env_var: str  # the variable the app reads the weights' location from
    train_command: str  # how to train weights for this task, shown when there are none
    prompt: str  # the status before any input
    input_label: str  # the upload box's label
    class_word: str  # what the app calls the classes ("species")
    input_sources: tuple[str, ...] = ("upload", "clipboard")
    drawable: bool = False  # a canvas to draw on
    model_note: Callable[[str, Mapping[str, Any] | None], str] = no_note  # markdown above the inputs


WORDS: dict[str, TaskWords] = {
    "shapes": TaskWords(
        title="Shapes",
        env_var="EXPLAINER_SHAPES_WEIGHTS",
        train_command="python train/train_shapes.py --out runs/shapes --output weights/shapes.safetensors",
        prompt="*Draw a shape and press **Classify drawing**, upload an image, or click an example.*",
        input_label="Image of a shape",
        class_word="shapes",
        drawable=True,
    ),
    "birds": TaskWords(
        title="Birds",
        env_var="EXPLAINER_BIRDS_WEIGHTS",
        train_command=(
            "python train/train_birds.py --data PATH/TO/CUB_200_2011 --out runs/birds "
            "--output weights/birds.safetensors"
        ),
        prompt="*Upload a photo of a bird (or use the webcam or paste from the clipboard).*",
        input_label="Photo of a bird",
        class_word="species",
        input_sources=("upload", "webcam", "clipboard"),
        model_note=birds_note,
    ),
}


def words(task: Task | str) -> TaskWords:
    """The app's words for a task (or its name)."""
    return WORDS[task if isinstance(task, str) else task.name]
