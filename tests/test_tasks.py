"""The task contract: every task answers the same abstract methods, with one signature for its weights' metadata."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from explainer.pair.bundle import FORMAT_VERSION, validate_metadata
from explainer.pair.models import reference_shapes_architecture
from explainer.tasks import BIRDS, SHAPES, TASKS, Task


def test_a_task_that_leaves_out_a_method_cannot_be_made() -> None:
    class Half(Task):
        name = "half"

    with pytest.raises(TypeError, match="abstract"):
        Half()
    assert {"preprocessor", "framed_preprocessor", "preview", "sample_image", "bundle_metadata"} <= set(
        Task.__abstractmethods__
    )


def test_every_task_builds_its_metadata_with_one_signature() -> None:
    signatures = {name: inspect.signature(type(task).bundle_metadata) for name, task in TASKS.items()}
    assert len(set(map(str, signatures.values()))) == 1, signatures


def test_shapes_and_birds_metadata_through_the_one_signature() -> None:
    shapes = SHAPES.bundle_metadata(
        reference_shapes_architecture(), preprocessing={"margin": 0.2}, defaults={"top_n": 2}
    )
    assert shapes["preprocessing"]["margin"] == 0.2 and shapes["preprocessing"]["crop_to_content"] is True
    assert shapes["defaults"] == {"threshold": 0.5, "top_n": 2}
    with pytest.raises(ValueError, match="fixed"):
        SHAPES.bundle_metadata(reference_shapes_architecture(), vocabulary={"class_names": ["a"]})
    vocabulary = {"class_names": ["A", "B"], "class_raw_names": ["001.A", "002.B"], "explanation_names": ["x::y"],
                  "explanation_display_names": ["x: y"], "explanation_groups": [[0]]}  # fmt: skip
    birds = BIRDS.bundle_metadata({"family": "timm"}, np.ones((2, 1)) * 0.5, {"kind": "imagenet"},
                                  {"threshold": 0.3, "top_n": 10}, vocabulary)  # fmt: skip
    assert birds["defaults"] == {"threshold": 0.3, "top_n": 2} and birds["class_raw_names"] == ["001.A", "002.B"]
    with pytest.raises(ValueError, match="need the vocabulary"):
        BIRDS.bundle_metadata({"family": "timm"})
    validate_metadata({**shapes, "description": "d", "format_version": FORMAT_VERSION})


def test_one_registry_of_architecture_families_builds_counts_and_describes() -> None:
    from explainer.pair.models import FAMILIES, build_pair, describe_architecture

    assert set(FAMILIES) == {"shapes", "timm"}
    architecture = reference_shapes_architecture()
    assert FAMILIES["shapes"].outputs(architecture) == (4, 5)
    assert "conv widths [5, 5, 5]" in describe_architecture(architecture)
    parts = {"family": "timm", "model_name": "m", "mirror": {"kind": "parts", "regions": ["beak", "tail"]}}
    assert "part mirror" in describe_architecture(parts) and "beak, tail" in describe_architecture(parts)
    with pytest.raises(ValueError, match="not one of \\('shapes', 'timm'\\)"):
        build_pair({"family": "keras"})


def test_a_file_whose_top_n_exceeds_its_classes_means_all_of_them_everywhere(tmp_path) -> None:
    from bundles import make_shapes_bundle
    from explainer.pair.bundle import load_bundle
    from explainer.verdict.predictor import Explainer

    pair, meta = load_bundle(make_shapes_bundle(tmp_path / "s.safetensors"))
    meta["defaults"]["top_n"] = 99  # the bundle allows it: "above the class count: used as all"
    explainer = Explainer(pair, meta)
    assert explainer.default_top_n == 4 and explainer.resolve_controls() == (0.5, 4)
    result = explainer.explain(np.array([0.7, 0.1, 0.1, 0.1]), np.array([0.9, 0.0, 0.0, 0.0, 0.0]))
    assert result.predicted_class == "circle"


def test_a_pair_of_no_known_task_reads_names_and_judges_nothing(tmp_path) -> None:
    from bundles import make_shapes_bundle
    from explainer.pair.bundle import load_bundle
    from explainer.verdict.predictor import Explainer

    pair, meta = load_bundle(make_shapes_bundle(tmp_path / "s.safetensors"))
    meta["preprocessing"] = {**meta["preprocessing"], "kind": "someone-elses"}
    explainer = Explainer(pair, meta)
    assert explainer.task_spec is None and explainer.display_names == meta["explanation_names"]
    assert explainer.scope_result(np.zeros(5), 0.5, None).method == "none"


def test_a_scope_result_says_its_own_question_answer_and_refusal() -> None:
    from explainer.pair.scope import ScopeResult, unmeasured_result

    gate_out = ScopeResult(False, 0.02, "imagenet-birds", "tabby cat", 0.08, "bird")
    assert gate_out.not_the_subject() == "a bird"
    refusal = gate_out.refusal("Cardinal")
    assert "the ImageNet model sees a tabby cat" in refusal and "'Cardinal' is a guess" in refusal
    gate_in = ScopeResult(True, 0.97, "imagenet-birds", "house finch", 0.08, "bird")
    assert gate_in.refusal("Cardinal") is None and gate_in.not_the_subject() is None
    question, answer = gate_in.status(0.3)
    assert question == "Is it a bird?" and "97.0%" in answer and "finch" not in answer  # no ImageNet class named
    own = ScopeResult(False, 0.2, "explanations")
    assert own.status(0.5) == ("One of the classes this model knows?",
                               "No: the strongest explanation is 20% (threshold 50%), so no explanation supports any "
                               "class; the image may be none of them.")  # fmt: skip
    assert unmeasured_result().status(0.5)[0] == "In scope?" and unmeasured_result().refusal("x") is None
