"""Evaluate a trained pair from cached probabilities, and write a readable report (Markdown + PNG plots).

Everything here works on probabilities that were computed once (``Explainer.infer``), so the same numbers can be
re-derived for any threshold or N without rerunning a network. Used by the shapes and the birds evaluation scripts.

Error detection asks "is this main prediction wrong?" with three scores, higher meaning "more likely wrong":
- ``explanations``: ``-margin`` of the explanation verdict (the continuous form of "questioned");
- ``msp``: ``1 - max softmax`` (the usual confidence baseline);
- ``combined``: ``(1 - max softmax) - margin``, a per-sample sum that needs nothing but the sample itself (a
  rank average would depend on the evaluation set, so it could not be computed for one image in the app).

The measures are scikit-learn's (through :mod:`explainer.evaluation.metrics`) and the plots matplotlib's (a confusion
matrix and risk-coverage curves): both the optional evaluation extra, ``pip install -e .[eval]``, imported where they
are used, so :func:`verdict_arrays` and :func:`questioned_share` need neither.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from explainer.verdict import postprocess

from . import metrics

_CURVE_POINTS = 201  # risk-coverage curves are stored at this many coverage values (plots and JSON stay small)


# ----------------------------------------------------------------------------------------------------------------------
# Numbers
# ----------------------------------------------------------------------------------------------------------------------


def _as_probs(class_probs: np.ndarray, expl_probs: np.ndarray, n_classes: int, n_expl: int) -> tuple[np.ndarray, ...]:
    class_probs = np.asarray(class_probs, dtype=np.float64)
    expl_probs = np.asarray(expl_probs, dtype=np.float64)
    if class_probs.ndim != 2 or class_probs.shape[1] != n_classes:
        raise ValueError(f"class_probs has shape {class_probs.shape}; expected (N, {n_classes})")
    if expl_probs.ndim != 2 or expl_probs.shape != (class_probs.shape[0], n_expl):
        raise ValueError(f"expl_probs has shape {expl_probs.shape}; expected ({class_probs.shape[0]}, {n_expl})")
    return class_probs, expl_probs


def _resolve(explainer: Any, threshold: float | None, top_n: int | None) -> postprocess.Controls:
    return postprocess.resolve_controls(
        threshold, top_n, explainer.default_threshold, explainer.default_top_n, len(explainer.class_names)
    )


def verdict_arrays(
    explainer: Any, class_probs: np.ndarray, expl_probs: np.ndarray, threshold: float, top_n: int
) -> dict[str, np.ndarray]:
    """Per-sample verdicts of cached probabilities: predicted class, questioned, case (0 = consistent), margin, rank.

    Runs the post-processing path :meth:`Explainer.explain` runs (:func:`postprocess.process`). Threshold and top N
    are checked (ValueError naming the valid range).
    """
    return _verdict_arrays(explainer, class_probs, expl_probs, _resolve(explainer, threshold, top_n))


def _verdict_arrays(
    explainer: Any, class_probs: np.ndarray, expl_probs: np.ndarray, controls: postprocess.Controls
) -> dict[str, np.ndarray]:
    """:func:`verdict_arrays` for controls already checked."""
    done = postprocess.process(
        class_probs, expl_probs, controls, explainer.groups, explainer.class_explanations, explainer.ranking
    )
    predicted, found = done.predicted, done.verdicts
    return {
        "predicted": predicted.astype(np.int64),
        "questioned": np.array([v.questioned for v in found], dtype=bool),
        "case": np.array([v.case or 0 for v in found], dtype=np.int64),
        "margin": np.array([v.margin for v in found], dtype=np.float64),
        "rank": np.array([v.rank for v in found], dtype=np.int64),
        "preferred": np.array([v.preferred_class for v in found], dtype=np.int64),
    }


def _case_counts(cases: np.ndarray) -> dict[str, int]:
    return {
        "consistent": int(np.sum(cases == 0)),
        "case_1": int(np.sum(cases == 1)),
        "case_2": int(np.sum(cases == 2)),
        "case_3": int(np.sum(cases == 3)),
    }


def _share(part: int, whole: int) -> float:
    return float(part / whole) if whole else float("nan")


def _curve(errors: np.ndarray, scores: np.ndarray) -> dict[str, list[float]]:
    """Risk at evenly spaced coverages (the full curve has one point per sample)."""
    coverage, risk, _ = metrics.risk_coverage(errors, scores)
    if coverage.size == 0:
        return {"coverage": [], "risk": []}
    grid = np.linspace(coverage[0], 1.0, min(_CURVE_POINTS, coverage.size))
    idx = np.clip(np.searchsorted(coverage, grid - 1e-12), 0, coverage.size - 1)
    return {"coverage": coverage[idx].round(6).tolist(), "risk": risk[idx].round(6).tolist()}


def error_scores(class_probs: np.ndarray, margin: np.ndarray) -> dict[str, np.ndarray]:
    """The three "more likely wrong" scores of the module docstring."""
    msp = 1.0 - np.max(class_probs, axis=1)
    return {"explanations": -margin, "msp": msp, "combined": msp - margin}


def evaluate_predictions(
    explainer: Any,
    class_probs: np.ndarray,
    expl_probs: np.ndarray,
    labels: np.ndarray,
    expl_targets: np.ndarray | None = None,
    threshold: float | None = None,
    top_n: int | None = None,
    expl_mask: np.ndarray | None = None,
) -> dict[str, Any]:
    """All numbers of one labelled set, JSON-able.

    ``explainer`` supplies class/explanation names, groups, the class x explanation prior and the ranking (an
    :class:`~explainer.verdict.predictor.Explainer`; only those attributes are read). ``threshold``/``top_n`` default
    to the model's. The confusion matrix has true classes as rows and predicted classes as columns.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, top_k_accuracy_score

    n_classes, n_expl = len(explainer.class_names), len(explainer.explanation_names)
    class_probs, expl_probs = _as_probs(class_probs, expl_probs, n_classes, n_expl)
    labels = np.asarray(labels).astype(np.int64).ravel()
    if labels.shape[0] != class_probs.shape[0]:
        raise ValueError(f"labels has {labels.shape[0]} entries for {class_probs.shape[0]} predictions")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}); got range [{labels.min()}, {labels.max()}]")
    controls = _resolve(explainer, threshold, top_n)
    threshold, top_n = controls
    n = int(labels.size)
    found = _verdict_arrays(explainer, class_probs, expl_probs, controls)
    predicted = found["predicted"]
    correct = predicted == labels
    wrong = ~correct
    confusion = (
        confusion_matrix(labels, predicted, labels=np.arange(n_classes))
        if n
        else np.zeros((n_classes, n_classes), dtype=np.int64)  # scikit-learn refuses an empty set
    )
    per_class = {
        name: _share(int(confusion[i, i]), int(confusion[i].sum())) for i, name in enumerate(explainer.class_names)
    }
    result: dict[str, Any] = {
        "n": n,
        "threshold": threshold,
        "top_n": top_n,
        "class_names": list(explainer.class_names),
        "explanation_names": list(explainer.explanation_names),
        "accuracy": _share(int(correct.sum()), n),
        "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(),
        "n_correct": int(correct.sum()),
        "n_misclassified": int(wrong.sum()),
    }
    if n_classes > 5:
        hits = top_k_accuracy_score(labels, class_probs, k=5, labels=np.arange(n_classes), normalize=False) if n else 0
        result["top5_accuracy"] = _share(int(hits), n)
    if expl_targets is not None:
        expl_targets = np.asarray(expl_targets)
        if expl_targets.shape != expl_probs.shape:
            raise ValueError(f"expl_targets has shape {expl_targets.shape}; expected {expl_probs.shape}")
        result["explanations"] = metrics.multilabel_report(expl_targets, expl_probs, threshold, expl_mask)
        preds = expl_probs >= threshold
        truth = expl_targets.astype(bool)
        known = np.ones_like(preds) if expl_mask is None else np.asarray(expl_mask).astype(bool)
        result["explanations"]["per_explanation"] = {
            name: float(accuracy_score(truth[known[:, k], k], preds[known[:, k], k])) if known[:, k].any() else math.nan
            for k, name in enumerate(explainer.explanation_names)
        }
    questioned = found["questioned"]
    result["verdict"] = {
        "questioned_share_all": _share(int(questioned.sum()), n),
        "questioned_share_correct": _share(int(np.sum(questioned & correct)), int(correct.sum())),
        "questioned_share_misclassified": _share(int(np.sum(questioned & wrong)), int(wrong.sum())),
        "questioned_correct": int(np.sum(questioned & correct)),
        "questioned_misclassified": int(np.sum(questioned & wrong)),
        "cases_all": _case_counts(found["case"]),
        "cases_correct": _case_counts(found["case"][correct]),
        "cases_misclassified": _case_counts(found["case"][wrong]),
        # both networks wrong and agreeing: the case the reference never saw (61 errors, none of this kind)
        "misclassified_and_preferred": int(np.sum(wrong & ~questioned & (found["preferred"] == predicted))),
    }
    detection: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    for name, score in error_scores(class_probs, found["margin"]).items():
        detection[name] = metrics.error_detection(wrong, score)
        curves[name] = _curve(wrong, score)
    result["error_detection"] = detection
    result["error_detection_note"] = (
        "positives = misclassified; explanations = -margin, msp = 1 - max softmax, "
        "combined = (1 - max softmax) - margin"
    )
    result["risk_coverage"] = curves
    return result


def questioned_share(
    explainer: Any,
    class_probs: np.ndarray,
    expl_probs: np.ndarray,
    threshold: float | None = None,
    top_n: int | None = None,
) -> dict[str, Any]:
    """How many predictions of an unlabelled (e.g. out-of-distribution) set the explanations question.

    Returns ``share`` (questioned / all), the counts, the verdict cases and how often each class was predicted.
    """
    n_classes, n_expl = len(explainer.class_names), len(explainer.explanation_names)
    class_probs, expl_probs = _as_probs(class_probs, expl_probs, n_classes, n_expl)
    controls = _resolve(explainer, threshold, top_n)
    threshold, top_n = controls
    found = _verdict_arrays(explainer, class_probs, expl_probs, controls)
    n = int(class_probs.shape[0])
    counts = np.bincount(found["predicted"], minlength=n_classes)
    return {
        "n": n,
        "threshold": threshold,
        "top_n": top_n,
        "questioned": int(found["questioned"].sum()),
        "share": _share(int(found["questioned"].sum()), n),
        "cases": _case_counts(found["case"]),
        "predicted_counts": {name: int(c) for name, c in zip(explainer.class_names, counts, strict=False)},
        "mean_max_softmax": float(np.mean(np.max(class_probs, axis=1))) if n else float("nan"),
        "share_any_explanation_kept": float(np.mean(np.any(expl_probs >= threshold, axis=1))) if n else float("nan"),
    }


# ----------------------------------------------------------------------------------------------------------------------
# Plots (matplotlib, the [eval] extra)
# ----------------------------------------------------------------------------------------------------------------------

_COLOURS = {"explanations": "tab:blue", "msp": "tab:orange", "combined": "tab:green"}


def _save(figure: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def plot_confusion(confusion: Sequence[Sequence[int]], class_names: Sequence[str], title: str, path: Path) -> Path:
    """A confusion-matrix heat map (rows true, columns predicted; scikit-learn's ``ConfusionMatrixDisplay``) with the
    count in each cell; above 20 classes, neither counts nor names (they would not be legible). The colour follows
    the square root of the count, so that a few errors show beside thousands of right answers."""
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay

    matrix = np.asarray(confusion, dtype=np.int64)
    k = matrix.shape[0]
    legible = k <= 20
    side = min(12.0, 3.0 + 0.6 * k) if legible else 10.0
    figure = Figure(figsize=(side, side), dpi=100, layout="constrained")  # drawn by Agg: no display, no pyplot
    axes = figure.subplots()
    display = ConfusionMatrixDisplay(matrix, display_labels=list(class_names) if legible else None)
    display.plot(
        ax=axes,
        include_values=legible,
        cmap="Blues",
        colorbar=not legible,
        xticks_rotation="vertical",
        im_kw={"norm": PowerNorm(gamma=0.5)},
    )
    if not legible:
        axes.set_xticks([])
        axes.set_yticks([])
    axes.set_title(title)
    return _save(figure, path)


def plot_risk_coverage(curves: Mapping[str, Mapping[str, Sequence[float]]], title: str, path: Path) -> Path:
    """Risk (error rate among kept samples) against coverage, one line per error score."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.2, 4.8), dpi=100, layout="constrained")
    axes = figure.subplots()
    for name, curve in curves.items():
        axes.plot(curve["coverage"], curve["risk"], color=_COLOURS.get(name), linewidth=2, label=name)
    axes.set_xlim(0.0, 1.0)
    axes.set_ylim(bottom=0.0)
    axes.set_xlabel("coverage")
    axes.set_ylabel("risk (error rate kept)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left")
    return _save(figure, path)


# ----------------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------------


def _pct(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * float(value):.{digits}f}%"


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{float(value):.{digits}f}"


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-") or "set"


def _set_section(name: str, res: Mapping[str, Any], out_dir: Path) -> list[str]:
    lines = [f"## {name}", ""]
    verdict = res["verdict"]
    lines += [
        f"- samples: {res['n']} (threshold {res['threshold']}, top N {res['top_n']})",
        f"- main accuracy: **{_pct(res['accuracy'])}** ({res['n_misclassified']} misclassified)",
    ]
    if "top5_accuracy" in res:
        lines.append(f"- main top-5 accuracy: {_pct(res['top5_accuracy'])}")
    expl = res.get("explanations")
    if expl:
        lines += [
            f"- explanations, per-explanation binary accuracy: **{_pct(expl['per_explanation_accuracy'])}** "
            f"(all-zeros baseline {_pct(expl['all_zeros_accuracy'])})",
            f"- explanations, exact match (all of a sample's explanations right): **{_pct(expl['exact_match'])}**",
            f"- explanations, macro-F1 {_num(expl['macro_f1'])}, balanced accuracy {_num(expl['balanced_accuracy'])}, "
            f"mean AUROC {_num(expl['mean_auroc'])}",
        ]
        if len(expl.get("per_explanation", {})) <= 20:
            per_explanation = ", ".join(f"{k} {_pct(v)}" for k, v in expl["per_explanation"].items())
            lines.append("- per explanation: " + per_explanation)
    lines += [
        f"- questioned: {_pct(verdict['questioned_share_correct'])} of correct predictions "
        f"({verdict['questioned_correct']} of {res['n_correct']}), "
        f"**{_pct(verdict['questioned_share_misclassified'])} of misclassified** "
        f"({verdict['questioned_misclassified']} of {res['n_misclassified']})",
        f"- verdict cases, all: {verdict['cases_all']}",
        f"- verdict cases, misclassified: {verdict['cases_misclassified']}",
        f"- misclassified yet not questioned, the explanations supporting the wrong class (ties included): "
        f"{verdict['misclassified_and_preferred']}",
        "",
    ]
    if res["confusion_matrix"] and len(res["class_names"]) <= 20:
        names = res["class_names"]
        lines += ["Confusion matrix (rows true, columns predicted):", ""]
        lines.append("| true \\ predicted | " + " | ".join(names) + " |")
        lines.append("|---|" + "---|" * len(names))
        for class_name, row in zip(names, res["confusion_matrix"], strict=False):
            lines.append(f"| {class_name} | " + " | ".join(str(v) for v in row) + " |")
        lines.append("")
    lines += [
        "Error detection (positive = misclassified):",
        "",
        "| score | AUROC | FPR@95%TPR | AURC |",
        "|---|---|---|---|",
    ]
    for score, values in res["error_detection"].items():
        lines.append(
            f"| {score} | {_num(values['auroc'])} | {_num(values['fpr_at_95_tpr'])} | {_num(values['aurc'], 6)} |"
        )
    lines += ["", res.get("error_detection_note", ""), ""]
    slug = _slug(name)
    cm = plot_confusion(
        res["confusion_matrix"], res["class_names"], f"{name}: confusion matrix", out_dir / f"confusion_{slug}.png"
    )
    rc = plot_risk_coverage(res["risk_coverage"], f"{name}: risk-coverage", out_dir / f"risk_coverage_{slug}.png")
    lines += [f"![confusion matrix]({cm.name})", "", f"![risk-coverage]({rc.name})", ""]
    return lines


def write_report(results: Mapping[str, Any], out_dir: str | Path) -> Path:
    """Write ``report.md``, ``results.json`` and the PNG plots into ``out_dir``; returns the Markdown path.

    ``results``: either one :func:`evaluate_predictions` result, or a dict with ``title``, ``model`` (a dict of facts
    shown as a list), ``evaluations`` ({set name: evaluate_predictions result}), ``ood`` ({set name:
    questioned_share result}), ``timing`` (a dict) and ``notes`` (list of sentences).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if "accuracy" in results and "evaluations" not in results:
        results = {"evaluations": {"evaluation": results}}
    lines = [f"# {results.get('title', 'Evaluation report')}", ""]
    model = results.get("model") or {}
    if model:
        lines += ["## Model", ""] + [f"- {k}: {v}" for k, v in model.items()] + [""]
    summary = []
    for name, res in (results.get("evaluations") or {}).items():
        expl = res.get("explanations") or {}
        summary.append(
            f"| {name} | {res['n']} | {_pct(res['accuracy'])} | {_pct(expl.get('exact_match'))} | "
            f"{_pct(res['verdict']['questioned_share_correct'])} | "
            f"{_pct(res['verdict']['questioned_share_misclassified'])} ({res['n_misclassified']}) |"
        )
    if summary:
        lines += [
            "## Summary",
            "",
            "| set | n | main accuracy | explanation exact match | questioned of correct "
            "| questioned of misclassified (count) |",
            "|---|---|---|---|---|---|",
            *summary,
            "",
        ]
    for name, res in (results.get("ood") or {}).items():
        lines += [
            f"## Out of distribution: {name}",
            "",
            f"- samples: {res['n']}; questioned: **{_pct(res['share'])}** ({res['questioned']})",
            f"- verdict cases: {res['cases']}",
            f"- predicted classes: {res['predicted_counts']}",
            f"- mean max softmax: {_num(res['mean_max_softmax'])}; share with at least one explanation kept: "
            f"{_pct(res['share_any_explanation_kept'])}",
            "",
        ]
    for name, res in (results.get("evaluations") or {}).items():
        lines += _set_section(name, res, out_dir)
    timing = results.get("timing") or {}
    if timing:
        lines += ["## Timing", ""] + [f"- {k}: {v}" for k, v in timing.items()] + [""]
    notes = results.get("notes") or []
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=_json_default))
    return report


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# ----------------------------------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------------------------------


def measure_latency(explainer: Any, images: Sequence[Any], repeats: int = 200, warmup: int = 20) -> dict[str, float]:
    """Milliseconds per image at batch 1 on the explainer's device: the networks alone, and preprocessing + networks.

    Median over ``repeats`` calls (cycling through ``images``) after ``warmup`` calls, so one slow call on a busy
    machine does not decide the number. Thread count is the caller's (``torch.set_num_threads``).
    """
    import time

    import torch

    if not images:
        raise ValueError("measure_latency needs at least one image")
    tensors = [explainer.preprocess(im)[None] for im in images]
    network, total = [], []
    for i in range(warmup + repeats):
        image, tensor = images[i % len(images)], tensors[i % len(tensors)]
        started = time.perf_counter()
        explainer.infer_tensors(tensor)
        middle = time.perf_counter()
        explainer.infer_tensors(explainer.preprocess(image)[None])
        ended = time.perf_counter()
        if i >= warmup:
            network.append(middle - started)
            total.append(ended - middle)
    return {
        "network_ms_per_image": float(np.median(network) * 1000),
        "preprocess_and_network_ms_per_image": float(np.median(total) * 1000),
        "torch_threads": int(torch.get_num_threads()),
        "repeats": int(repeats),
    }
