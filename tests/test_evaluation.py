"""The evaluation library on hand-made probabilities with known answers, and the shapes evaluation script end to end."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from explainer.evaluation import reports
from explainer.evaluation.calibration import plot_reliability, reliability, threshold_sensitivity
from explainer.pair.bundle import save_bundle
from explainer.pair.models import build_pair, reference_shapes_architecture
from explainer.verdict import postprocess
from train import evaluate_shapes

CLASSES = ["circle", "triangle", "square", "rectangle"]
EXPLANATIONS = ["no vertices", "three vertices", "four vertices", "parallel", "same size"]
PRIOR = [[1, 0, 0, 0, 0], [0, 1, 0, 0, 1], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0]]


def fake_explainer() -> SimpleNamespace:
    """Only the attributes the evaluation reads."""
    return SimpleNamespace(
        class_names=CLASSES,
        explanation_names=EXPLANATIONS,
        groups=[[0, 1, 2]],
        class_explanations=np.array(PRIOR, dtype=np.float64),
        ranking="normalized",
        default_threshold=0.5,
        default_top_n=1,
    )


def one_hot_probs(predicted: list[int], confidence: list[float]) -> np.ndarray:
    probs = np.zeros((len(predicted), 4))
    for row, (p, c) in enumerate(zip(predicted, confidence, strict=False)):
        probs[row] = (1 - c) / 3
        probs[row, p] = c
    return probs


# Six samples whose verdicts are worked out by hand (prior rows: circle EX0; triangle EX1+EX4; square EX2+EX3+EX4;
# rectangle EX2+EX3; ranking = share of the class's explanations that are predicted):
LABELS = [0, 1, 2, 3, 0, 2]
PREDICTED = [0, 1, 3, 2, 1, 2]
CONFIDENCE = [0.99, 0.98, 0.6, 0.55, 0.5, 0.97]  # the three errors are the least confident
EXPL = np.array(
    [
        [0.9, 0.1, 0.0, 0.0, 0.0],  # circle -> circle 1.0: consistent
        [0.0, 0.9, 0.1, 0.0, 0.8],  # triangle -> triangle 1.0: consistent
        [0.0, 0.0, 0.9, 0.9, 0.9],  # square predicted rectangle: square 1 = rectangle 1, a tie: case 2
        [0.0, 0.0, 0.9, 0.9, 0.1],  # rectangle predicted square: square 2/3 < rectangle 1: case 3
        [0.9, 0.0, 0.0, 0.0, 0.0],  # circle predicted triangle: triangle 0: case 1
        [0.1, 0.1, 0.1, 0.1, 0.1],  # square predicted square, no explanation kept: every class 0: case 1
    ]
)
TARGETS = np.array([PRIOR[label] for label in LABELS], dtype=np.float32)


def test_evaluate_predictions_known_answers() -> None:
    result = reports.evaluate_predictions(
        fake_explainer(), one_hot_probs(PREDICTED, CONFIDENCE), EXPL, np.array(LABELS), TARGETS
    )
    assert result["accuracy"] == pytest.approx(3 / 6)
    assert result["confusion_matrix"] == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 0]]
    verdict = result["verdict"]
    assert verdict["cases_all"] == {"consistent": 2, "case_1": 2, "case_2": 1, "case_3": 1}
    assert verdict["questioned_share_correct"] == pytest.approx(1 / 3)  # the sample with no explanation kept
    assert verdict["questioned_share_misclassified"] == pytest.approx(2 / 3)  # cases 3 and 1, not the tie
    assert verdict["cases_misclassified"] == {"consistent": 0, "case_1": 1, "case_2": 1, "case_3": 1}
    # at 0.5 the explanations match their class's row except in sample 6 (EX2, EX3, EX4 all missed)
    expl = result["explanations"]
    assert expl["exact_match"] == pytest.approx(5 / 6)
    assert expl["per_explanation_accuracy"] == pytest.approx(1 - 3 / 30)
    assert expl["per_explanation"]["four vertices"] == pytest.approx(5 / 6)
    assert result["error_detection"]["msp"]["auroc"] == pytest.approx(1.0)  # the errors are the least confident
    assert "top5_accuracy" not in result  # only for more than 5 classes
    for curve in result["risk_coverage"].values():
        assert curve["coverage"][-1] == pytest.approx(1.0)
        assert curve["risk"][-1] == pytest.approx(0.5)  # at full coverage the risk is the error rate


def test_explanation_score_detects_errors() -> None:
    """-margin ranks the errors high: by hand, scores are -1, -2/3 (correct), 0, 1/3, 1 (errors) and 1e-9 (correct,
    questioned), so 8 of the 9 error/correct pairs are ordered right."""
    result = reports.evaluate_predictions(fake_explainer(), one_hot_probs(PREDICTED, [0.9] * 6), EXPL, np.array(LABELS))
    assert result["error_detection"]["msp"]["auroc"] == pytest.approx(0.5)  # constant score: no information
    assert result["error_detection"]["explanations"]["auroc"] == pytest.approx(8 / 9)
    assert "explanations" not in result  # no targets given


def test_questioned_share_of_unlabelled_set() -> None:
    probs = np.full((10, 4), 0.25)
    expl = np.zeros((10, 5))
    expl[:3, 0] = 0.9  # three say "no vertices": circle 1.0, and the predicted class (argmax of a tie: circle) agrees
    result = reports.questioned_share(fake_explainer(), probs, expl)
    assert result["n"] == 10
    assert result["questioned"] == 7 and result["share"] == pytest.approx(0.7)
    assert result["cases"]["case_1"] == 7
    assert result["predicted_counts"]["circle"] == 10


def test_a_set_checks_threshold_and_top_n_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """However many samples, an evaluation checks its controls once, where they enter; the post-processing of every
    sample takes them as checked."""
    calls: list[str] = []
    check_threshold, check_top_n = postprocess.check_threshold, postprocess.check_top_n
    monkeypatch.setattr(postprocess, "check_threshold", lambda t: calls.append("threshold") or check_threshold(t))
    monkeypatch.setattr(postprocess, "check_top_n", lambda n, c: calls.append("top N") or check_top_n(n, c))
    probs, expl = np.full((50, 4), 0.25), np.full((50, 5), 0.6)
    reports.evaluate_predictions(fake_explainer(), probs, expl, np.zeros(50, dtype=np.int64), threshold=0.5, top_n=2)
    assert sorted(calls) == ["threshold", "top N"]
    calls.clear()
    reports.questioned_share(fake_explainer(), probs, expl)
    assert sorted(calls) == ["threshold", "top N"]


def test_top5_and_per_class_accuracy_by_hand() -> None:
    """Seven classes: the true class ranked 1st, 5th and 6th (the last is a top-5 miss)."""
    explainer = SimpleNamespace(
        class_names=[f"c{i}" for i in range(7)],
        explanation_names=["e"],
        groups=[],
        class_explanations=np.ones((7, 1)),
        ranking="normalized",
        default_threshold=0.5,
        default_top_n=1,
    )
    scores = np.array([[7, 6, 5, 4, 3, 2, 1], [7, 6, 5, 4, 3, 2, 1], [7, 6, 5, 4, 3, 2, 1]], dtype=np.float64)
    probs = scores / scores.sum(axis=1, keepdims=True)
    result = reports.evaluate_predictions(explainer, probs, np.zeros((3, 1)), np.array([0, 4, 5]))
    assert result["accuracy"] == pytest.approx(1 / 3)
    assert result["top5_accuracy"] == pytest.approx(2 / 3)
    assert result["per_class_accuracy"]["c0"] == 1.0 and result["per_class_accuracy"]["c4"] == 0.0
    assert np.isnan(result["per_class_accuracy"]["c1"])  # no sample of that class
    assert result["confusion_matrix"][4] == [1, 0, 0, 0, 0, 0, 0]


def test_bad_shapes_are_refused() -> None:
    explainer = fake_explainer()
    with pytest.raises(ValueError, match="class_probs"):
        reports.evaluate_predictions(explainer, np.zeros((3, 5)), np.zeros((3, 5)), np.zeros(3))
    with pytest.raises(ValueError, match="labels"):
        reports.evaluate_predictions(explainer, np.zeros((3, 4)), np.zeros((3, 5)), np.array([0, 1, 7]))
    with pytest.raises(ValueError, match="threshold"):
        reports.questioned_share(explainer, np.zeros((3, 4)), np.zeros((3, 5)), threshold=1.5)


def test_write_report(tmp_path: Path) -> None:
    explainer = fake_explainer()
    result = reports.evaluate_predictions(
        explainer, one_hot_probs(PREDICTED, CONFIDENCE), EXPL, np.array(LABELS), TARGETS
    )
    ood = reports.questioned_share(explainer, np.full((4, 4), 0.25), np.zeros((4, 5)))
    path = reports.write_report(
        {"title": "Test", "evaluations": {"hand made": result}, "ood": {"noise": ood}, "notes": ["a note"]}, tmp_path
    )
    text = path.read_text()
    assert "50.00%" in text and "66.67% of misclassified" in text and "a note" in text
    assert json.loads((tmp_path / "results.json").read_text())["evaluations"]["hand made"]["accuracy"] == 0.5
    for name in ("confusion_hand-made.png", "risk_coverage_hand-made.png"):
        assert f"({name})" in text
        with Image.open(tmp_path / name) as image:
            assert image.width > 100 and image.height > 100
            assert len(image.getcolors(1 << 16) or []) > 3  # something was drawn, not a blank canvas


def test_parse_explanations() -> None:
    assert evaluate_shapes.parse_explanations("12_EX2_EX3.png", 5).tolist() == [0, 0, 1, 1, 0]
    assert evaluate_shapes.parse_explanations("7.png", 5).tolist() == [0, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="EX7"):
        evaluate_shapes.parse_explanations("1_EX7.png", 5)
    with pytest.raises(ValueError, match="form"):
        evaluate_shapes.parse_explanations("notes.txt", 5)


def test_evaluate_shapes_on_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The script end to end on a reference-style folder, with an untrained (but complete) weights file."""
    from explainer.shapes import generate_shapes

    pair = build_pair(reference_shapes_architecture())
    meta = {
        "task": "shapes",
        "architecture": reference_shapes_architecture(),
        "class_names": CLASSES,
        "explanation_names": EXPLANATIONS,
        "explanation_groups": [[0, 1, 2]],
        "class_explanations": PRIOR,
        "ranking": "normalized",
        "preprocessing": {"kind": "shapes", "size": 64, "crop_to_content": False, "margin": 0.1},
        "defaults": {"threshold": 0.5, "top_n": 1},
    }
    weights = tmp_path / "w.safetensors"
    save_bundle(weights, pair, meta)
    shapes = generate_shapes(2, seed=3)
    tags = ["_EX0", "_EX1_EX4", "_EX2_EX3_EX4", "_EX2_EX3"]
    for i, (image, label) in enumerate(zip(shapes.images, shapes.labels, strict=False)):
        folder = tmp_path / "data" / f"{CLASSES[label]}s"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i}{tags[label]}.png")
    out = tmp_path / "eval"
    noise = ["--noise-images", "5", "--smooth-noise-images", "3"]
    summary = evaluate_shapes.main(
        ["--weights", str(weights), "--data", str(tmp_path / "data"), "--out", str(out), *noise]
    )
    assert summary["n"] == 8
    assert sum(map(sum, summary["confusion_matrix"])) == 8
    assert 0.0 <= summary["uniform_noise_questioned"] <= 1.0
    assert 0.0 <= summary["smooth_noise_questioned"] <= 1.0
    assert "uniform noise" in (out / "report.md").read_text()
    assert json.loads(capsys.readouterr().out)["n"] == 8


def test_reliability_and_threshold_sensitivity_by_hand() -> None:
    probs = np.array([[0.05, 0.95], [0.15, 0.85]])
    targets = np.array([[0, 1], [1, 1]])
    curve = reliability(probs, targets, bins=2)
    assert curve["count"] == [2, 2]
    # bin 0: mean prediction 0.10, mean target 0.5; bin 1: 0.90 and 1.0 -> ECE = 0.5 * 0.4 + 0.5 * 0.1
    assert curve["ece"] == pytest.approx(0.25)
    soft = reliability(np.array([0.2, 0.8]), np.array([0.2, 0.8]), bins=5)
    assert soft["ece"] == pytest.approx(0.0)
    groups = [[0, 1]]
    expl = np.array([[0.6, 0.4, 0.2], [0.9, 0.1, 0.95], [0.35, 0.2, 0.5]])
    moved = threshold_sensitivity(expl, groups, 0.5, 0.3)
    # sample 0: 0.6 kept either way; 0.2 never -> same. sample 1: same. sample 2: 0.35 gains a place at 0.3.
    assert moved["n_changed"] == 1 and moved["share_changed"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        reliability(np.array([0.5]), np.array([1.0, 0.0]))


def test_plot_reliability(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    probs = rng.random(2000)
    curves = {"0/1": reliability(probs, rng.random(2000) < probs), "soft": reliability(probs, probs**2)}
    path = plot_reliability(curves, "test", tmp_path / "figures" / "reliability.png")
    with Image.open(path) as image:
        assert image.width > 100 and image.height > 100
        assert len(image.getcolors(1 << 16) or []) > 3  # something was drawn, not a blank canvas
