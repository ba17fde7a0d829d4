"""Horizontal bar charts for the app, as plain Plotly figure dicts (JSON-ready, no plotly import needed).

Why dicts and not ``plotly.graph_objects``: building and validating three ``go.Figure`` objects costs ~100 ms, over the
app's 50 ms budget for re-rendering on a slider move; a dict of Python lists costs well under a millisecond and
``json.dumps`` serialises it. :func:`to_figure` turns a dict into a validated ``go.Figure`` when one is wanted.

Every chart has its title inside the figure, clear of its box's border, lists its rows best first, writes each
bar's value in a column to the right of the plot (so that no dashed threshold or cut line ever runs through a value),
shows long names in full, wrapped over lines (a mark such as the prediction's ◀ stays with the last word), explains
its colours and dashed lines in a legend below, sizes its height to its rows and lines, and disables zoom and the
mode bar, so that it stays readable on a phone.

A threshold or top N comes checked (the handlers resolve the controls once, by the library's rule; a scope gate's
threshold is checked when its file is loaded), so the charts take them as they are; top k, the number of rows, is the
charts' own argument and checked here.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

Figure = dict[str, Any]

ACCENT = "#2563eb"  # the main prediction / kept explanations
SUPPORT = "#93c5fd"  # inside the top N / other classes
MUTED = "#d1d5db"  # below the threshold / outside the top N
GROUP_DROPPED = "#f59e0b"  # above the threshold but removed by group cleaning
FORCED = "#7c3aed"  # switched on or off by the user
CUT = "#dc2626"  # threshold and top-N lines
SCOPE_SUBJECT = "#16a34a"  # the ImageNet model's classes of the model's subject (birds)
MAX_LABEL_CHARS = 30  # kept for callers that want one short line (short_label)
WRAP_CHARS = 22  # names are wrapped at word boundaries to lines of at most this many characters
_ROW_PX = 30
_LINE_PX = 15  # each extra line of a wrapped name
_VALUES_PX = 58  # the value column right of the plot
_TITLE_PX = 48
_TITLE_PAD_PX = 12  # between the box's top border and the title
_AXIS_PX = 34
_LEGEND_LINE_PX = 24
_LEGEND_ITEMS_PER_LINE = 2  # what a phone-wide legend fits on one line


def short_label(name: str, limit: int = MAX_LABEL_CHARS) -> str:
    """Cut a long name to ``limit`` characters with an ellipsis, so that the bars keep most of a phone's width."""
    if limit < 2:
        raise ValueError(f"label limit {limit} is too small (at least 2)")
    return name if len(name) <= limit else name[: limit - 1].rstrip() + "…"


def wrap_label(name: str, width: int = WRAP_CHARS) -> str:
    """The full name over lines of at most ``width`` characters (joined by Plotly's ``<br>``), broken at spaces;
    a word longer than a line is split. Nothing is cut off."""
    if width < 2:
        raise ValueError(f"wrap width {width} is too small (at least 2)")
    lines: list[str] = []
    for word in name.split():
        while len(word) > width:
            lines.append(word[:width])
            word = word[width:]
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        elif word:
            lines.append(word)
    return "<br>".join(lines) if lines else name


def _with_mark(wrapped: str, mark: str, width: int = WRAP_CHARS) -> str:
    """Append a mark such as "(forced on)" or "◀" to a wrapped name, on its last line if it fits there, never split.
    A symbol (one or two characters) always goes on the last line, a little past the width if need be: alone on a line
    of its own it would point at nothing. A longer mark that does not fit gets a line of its own."""
    if not mark:
        return wrapped
    last = wrapped.rsplit("<br>", 1)[-1]
    if len(last) + 1 + len(mark) <= width or len(mark) <= 2:
        return f"{wrapped} {mark}"
    return f"{wrapped}<br>{mark}"


def _lines(label: str) -> int:
    return label.count("<br>") + 1


def _unique(labels: Sequence[str]) -> list[str]:
    """Plotly merges equal category labels; append a counter to repeats so that every bar keeps its row."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        count = seen.get(label, 0)
        seen[label] = count + 1
        out.append(label if count == 0 else f"{label} ({count + 1})")
    return out


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def _check_top(name: str, value: int, largest: int) -> int:
    value = int(value)
    if not 1 <= value <= max(1, largest):
        raise ValueError(f"{name} {value} is out of range (1 to {max(1, largest)})")
    return value


def _layout(
    title: str, labels: list[str], x_range: list[float], legend_items: int, percent_axis: bool, x_title: str = ""
) -> dict[str, Any]:
    """Title on top, one row per label best first, the unit (if any) under the axis rather than in the title (a
    plotly title never wraps, and a phone is narrow), the legend (if any) at the bottom, no zoom or drag."""
    axis_px = _AXIS_PX + (_LINE_PX + 6 if x_title else 0)
    legend_lines = -(-legend_items // _LEGEND_ITEMS_PER_LINE) if legend_items else 0
    legend_px = _LEGEND_LINE_PX * legend_lines + (8 if legend_lines else 0)
    rows_px = sum(_ROW_PX + _LINE_PX * (_lines(label) - 1) for label in labels) or _ROW_PX
    xaxis: dict[str, Any] = {
        "range": x_range,
        "fixedrange": True,
        "gridcolor": "#eef0f3",
        "zeroline": False,
        "automargin": True,
    }
    if percent_axis:
        xaxis["tickformat"] = ".0%"
    if x_title:
        xaxis["title"] = {"text": x_title, "font": {"size": 12}, "standoff": 4}
    return {
        "title": {
            "text": f"<b>{title}</b>",
            "x": 0,
            "xref": "container",
            "xanchor": "left",
            "pad": {"l": 8, "t": _TITLE_PAD_PX},
            "y": 1,
            "yref": "container",
            "yanchor": "top",
            "font": {"size": 14},
        },
        "height": _TITLE_PX + rows_px + axis_px + legend_px,
        "margin": {"l": 8, "r": _VALUES_PX, "t": _TITLE_PX, "b": axis_px + legend_px, "autoexpand": True},
        "bargap": 0.25,
        "barmode": "overlay",
        "font": {"size": 13, "family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"},
        "plot_bgcolor": "white",
        "paper_bgcolor": "white",
        "showlegend": legend_items > 0,
        "legend": {
            "orientation": "h",
            "x": 0,
            "xanchor": "left",
            "y": 0,
            "yref": "container",
            "yanchor": "bottom",
            "font": {"size": 12},
            "itemclick": False,
            "itemdoubleclick": False,
        },
        "dragmode": False,
        "hovermode": "closest",
        "xaxis": xaxis,
        "yaxis": {
            "automargin": True,
            "fixedrange": True,
            "autorange": "reversed",
            "type": "category",
            "categoryorder": "array",
            "categoryarray": labels,
            "ticks": "outside",
            "ticklen": 4,
            "tickcolor": "white",
        },
        "shapes": [],
        "annotations": [],
    }


def _bar(
    name: str, values: list[float], labels: list[str], hover: list[str], colour: str, text: list[str], legend: bool
) -> dict[str, Any]:
    return {
        "type": "bar",
        "orientation": "h",
        "name": name,
        "x": values,
        "y": labels,
        "marker": {"color": colour},
        "text": text,  # shown in the value column (see _value_column), not on the bar
        "textposition": "none",
        "cliponaxis": False,
        "hovertext": hover,
        "hoverinfo": "text",
        "showlegend": legend,
    }


def _value_column(labels: list[str], text: list[str]) -> list[dict[str, Any]]:
    """Each row's value as an annotation just right of the plot area, clear of the bars and the dashed lines."""
    return [
        {
            "xref": "paper",
            "x": 1,
            "xanchor": "left",
            "xshift": 6,
            "yref": "y",
            "y": label,
            "text": value,
            "showarrow": False,
            "font": {"size": 12},
        }
        for label, value in zip(labels, text, strict=False)
    ]


def _legend_line(name: str) -> dict[str, Any]:
    """A legend entry for a dashed reference line drawn as a layout shape (shapes have no legend of their own)."""
    return {
        "type": "scatter",
        "mode": "lines",
        "x": [None],
        "y": [None],
        "name": name,
        "hoverinfo": "skip",
        "line": {"color": CUT, "width": 2, "dash": "dash"},
        "showlegend": True,
    }


def _figure(data: list[dict[str, Any]], layout: dict[str, Any]) -> Figure:
    return {
        "data": data,
        "layout": layout,
        "config": {"displayModeBar": False, "scrollZoom": False, "responsive": True},
    }


def _grouped_bars(
    rows: list[int],
    labels: list[str],
    categories: list[str],
    colours: Mapping[str, str],
    values: np.ndarray,
    text: list[str],
    hover: list[str],
    keys: list[str] | None = None,
) -> list[dict[str, Any]]:
    """One bar trace per category (so that the legend explains the colours), rows keep their order. ``keys``: each
    row's name as the page reads it back when a bar is clicked (the trace's ``customdata``)."""
    data = []
    for cat, colour in colours.items():
        members = [k for k in range(len(rows)) if categories[k] == cat]
        if members:
            bar = _bar(
                cat,
                [round(float(values[rows[k]]), 6) for k in members],
                [labels[k] for k in members],
                [hover[k] for k in members],
                colour,
                [text[k] for k in members],
                True,
            )
            if keys is not None:
                bar["customdata"] = [keys[k] for k in members]
            data.append(bar)
    return data


def class_chart(class_names: Sequence[str], class_probs: np.ndarray, top_k: int) -> Figure:
    """The main network's ``top_k`` most probable classes; the predicted one (highest) in the accent colour."""
    probs = np.asarray(class_probs, dtype=np.float64)
    if probs.ndim != 1 or probs.size != len(class_names):
        raise ValueError(f"class_probs has shape {probs.shape}; expected ({len(class_names)},)")
    top_k = _check_top("top k", top_k, probs.size)
    order = [int(i) for i in np.argsort(-probs, kind="stable")[:top_k]]
    labels = _unique([wrap_label(class_names[i]) for i in order])
    values = [round(float(probs[i]), 6) for i in order]
    colours = [ACCENT if rank == 0 else SUPPORT for rank in range(len(order))]
    hover = [f"{class_names[i]}: {_percent(float(probs[i]))}" for i in order]
    text = [_percent(v) for v in values]
    bar = _bar("class probability", values, labels, hover, ACCENT, text, False)
    bar["marker"] = {"color": colours}
    layout = _layout("Main network: top classes", labels, [0, 1], 0, True)
    layout["annotations"] += _value_column(labels, text)
    return _figure([bar], layout)


def explanation_chart(
    explanation_names: Sequence[str],
    explanation_probs: np.ndarray,
    kept_scores: np.ndarray,
    threshold: float,
    top_k: int,
    cleaned_scores: np.ndarray | None = None,
    raw: bool = False,
    overrides: Mapping[int, bool] | None = None,
) -> Figure:
    """The most probable explanations with the threshold marked, and how many are kept in the title.

    Cleaned view (default, like the reference): within each group only the most probable explanation is listed;
    bars at or above the threshold are kept (accent), those below are greyed. Raw view (``raw=True``): every
    explanation, with the ones group cleaning removes in amber. A third of the ``top_k`` rows (rounded down) go to the
    strongest explanations below the threshold when there are any, so that the chart always shows what the threshold
    leaves out and a slider move shows what it would keep next; the title then says how many kept ones are shown.
    Explanations the user forced on or off are always listed, in violet, marked "(forced on)" / "(forced off)". Each
    bar carries its explanation's full name (``customdata``), which the page sends when the bar is clicked.
    """
    probs = np.asarray(explanation_probs, dtype=np.float64)
    kept = np.asarray(kept_scores, dtype=np.float64)
    n = len(explanation_names)
    if probs.shape != (n,) or kept.shape != (n,):
        raise ValueError(f"explanation arrays have shapes {probs.shape} and {kept.shape}; expected ({n},)")
    top_k = _check_top("top k", top_k, n)
    overrides = {int(i): bool(on) for i, on in (overrides or {}).items()}
    cleaned = probs if cleaned_scores is None else np.asarray(cleaned_scores, dtype=np.float64)
    if cleaned.shape != (n,):
        raise ValueError(f"cleaned explanation scores have shape {cleaned.shape}; expected ({n},)")
    listed = probs if raw else cleaned
    candidates = [
        int(i) for i in np.argsort(-listed, kind="stable") if int(i) not in overrides and (raw or listed[i] > 0)
    ]
    above = [i for i in candidates if listed[i] >= threshold]
    below = [i for i in candidates if listed[i] < threshold]
    n_below = min(len(below), max(top_k // 3, top_k - len(above)))
    rows = above[: top_k - n_below] + below[:n_below]
    rows += list(overrides)  # forced explanations stay visible whatever their rank
    rows.sort(key=lambda i: (-probs[i], i))

    def category(i: int) -> str:
        if i in overrides:
            return "forced by you"
        if kept[i] > 0:
            return "kept"
        if probs[i] >= threshold:
            return "removed by group cleaning"
        return "below threshold"

    colours = {
        "kept": ACCENT,
        "below threshold": MUTED,
        "removed by group cleaning": GROUP_DROPPED,
        "forced by you": FORCED,
    }
    names = []
    for i in rows:
        mark = "" if i not in overrides else (" (forced on)" if overrides[i] else " (forced off)")
        names.append(_with_mark(wrap_label(explanation_names[i]), mark.strip()))
    labels = _unique(names)
    categories = [category(i) for i in rows]
    hover = [f"{explanation_names[i]}: {_percent(float(probs[i]))} ({categories[k]})" for k, i in enumerate(rows)]
    text = [_percent(float(probs[i])) for i in rows]
    keys = [explanation_names[i] for i in rows]  # a click on a bar chooses its explanation for the "Where" panel
    data = _grouped_bars(rows, labels, categories, colours, probs, text, hover, keys)
    data.append(_legend_line(f"threshold {threshold:.2f}"))
    n_kept = int(np.count_nonzero(kept > 0))
    shown_kept = sum(1 for i in rows if kept[i] > 0)
    title = f"Explanations{', raw list' if raw else ''}: {n_kept} of {n} kept"
    if shown_kept < n_kept:
        title += f", {shown_kept} shown"
    unit = "probability, every explanation" if raw else "probability, one explanation per group"
    layout = _layout(title, labels, [0, 1], len(data), True, unit)
    layout["annotations"] += _value_column(labels, text)
    layout["shapes"].append(
        {
            "type": "line",
            "xref": "x",
            "yref": "paper",
            "x0": threshold,
            "x1": threshold,
            "y0": 0,
            "y1": 1,
            "line": {"color": CUT, "width": 2, "dash": "dash"},
        }
    )
    if not rows:
        layout["annotations"].append(
            {"xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5, "showarrow": False, "text": "no explanation to show"}
        )
    return _figure(data, layout)


def ranking_chart(
    class_names: Sequence[str],
    ranking_scores: np.ndarray,
    predicted_class: int,
    top_n: int,
    top_k: int,
    normalized: bool = True,
) -> Figure:
    """Classes ranked by how well their known explanations match the kept ones.

    Shows the best ``top_k`` classes, or all classes ranked inside the top N if more (ties at the cut are inside, and
    the predicted class comes first among its ties); the predicted class is appended with its rank when it falls
    outside. Highlights the main prediction in the accent colour and draws the top-N cut as a dashed line.

    Honest about ties and about no support, as the verdict counts them: tied classes share a rank written "=2.", and
    a class no kept explanation supports (score 0) has no rank ("–"), is never inside the cut, and when no class is
    supported the title says so and no cut is drawn.

    ``normalized`` scores are shares in [0, 1] (of the class's explanations) and shown in percent. Weighted scores
    (the birds ranking: kept probabilities x the class's attribute frequencies, summed) have no unit a person knows,
    so they are shown as a share of the best class's score (100% = the best class); the hover keeps the raw score.
    """
    scores = np.asarray(ranking_scores, dtype=np.float64)
    if scores.ndim != 1 or scores.size != len(class_names):
        raise ValueError(f"ranking_scores has shape {scores.shape}; expected ({len(class_names)},)")
    if not 0 <= predicted_class < scores.size:
        raise ValueError(f"predicted class {predicted_class} is out of range (0 to {scores.size - 1})")
    top_k = _check_top("top k", top_k, scores.size)
    # Ties share a rank (1 + the number of classes scoring strictly higher, as the verdict counts) and the predicted
    # class comes first among its ties, so that a tie at the cut shows inside it, as the verdict treats it.
    order = sorted(range(scores.size), key=lambda c: (-scores[c], c != predicted_class, c))
    position = {c: 1 + int(np.sum(scores > scores[c])) for c in order}
    supported = {c for c in order if scores[c] > 0}
    tied = {c for c in supported if int(np.sum(scores == scores[c])) > 1}
    inside_cut = {c for c in supported if position[c] <= top_n}
    shown = order[: max(top_k, sum(1 for c in order if position[c] <= top_n))]  # unsupported ones there: below the cut
    if predicted_class not in shown:
        shown.append(predicted_class)
    best_score = float(scores.max()) if scores.size else 0.0
    shown_values = scores if normalized else (scores / best_score if best_score > 0 else np.zeros_like(scores))
    inside = "first place" if top_n == 1 else f"inside the top {top_n}"
    names, categories, text, hover = [], [], [], []
    for c in shown:
        mark = "◀" if c == predicted_class else ""  # the colour and the legend say "main prediction"
        rank = "–" if c not in supported else f"={position[c]}." if c in tied else f"{position[c]}."
        names.append(_with_mark(wrap_label(f"{rank} {class_names[c]}"), mark))
        categories.append(
            "main prediction"
            if c == predicted_class
            else inside
            if c in inside_cut
            else "outside"
            if c in supported
            else "no support"
        )
        value = float(shown_values[c])
        text.append(_percent(value))
        detail = "" if normalized else f" of the best (score {float(scores[c]):.3g})"
        place = "no kept explanation supports it" if c not in supported else f"#{position[c]}"
        place += " (tie)" if c in tied else ""
        hover.append(f"{place} {class_names[c]}: {text[-1]}{detail}" + (" (main prediction)" if mark else ""))
    labels = _unique(names)
    colours = {"main prediction": ACCENT, inside: SUPPORT, "outside": MUTED, "no support": MUTED}
    data = _grouped_bars(shown, labels, categories, colours, shown_values, text, hover)
    cut_after = sum(1 for c in shown if c in inside_cut)  # rows inside the cut come first
    draw_cut = bool(supported) and cut_after < len(shown)
    if draw_cut:
        data.append(_legend_line(f"top-{top_n} cut"))
    notes = [] if normalized else ["score as % of the best class"]
    if tied & set(shown):
        notes.append("= tied")
    title = "Classes ranked by the explanations" + ("" if supported else ": none is supported")
    layout = _layout(title, labels, [0, 1], len(data), True, "; ".join(notes))
    layout["annotations"] += _value_column(labels, text)
    if draw_cut:  # between the last row inside the cut and the next (category positions are 0-based)
        layout["shapes"].append(
            {
                "type": "line",
                "xref": "paper",
                "yref": "y",
                "x0": 0,
                "x1": 1,
                "y0": cut_after - 0.5,
                "y1": cut_after - 0.5,
                "line": {"color": CUT, "width": 2, "dash": "dash"},
            }
        )
    return _figure(data, layout)


def scope_chart(
    top_classes: Sequence[tuple[str, float, bool]],
    subject_count: int,
    subject_score: float,
    threshold: float,
    subject: str = "bird",
) -> Figure:
    """What the scope network (an ImageNet classifier) sees in an image the model was not made for: its most
    probable classes, then one row for all its ``subject`` classes together, with the share needed to count as one
    drawn as a dashed line on that row only: why the model stopped. ``top_classes``: (plain name, probability, whether
    it is one of the subject's classes), best first; ``subject_count``: how many of its classes are the subject's."""
    if not top_classes:
        raise ValueError("the scope reading lists no classes")
    plural = f"{subject} classes"
    rows = [(str(name), float(p), bool(is_subject)) for name, p, is_subject in top_classes]
    rows.append((f"all {subject_count} {plural} together", float(subject_score), True))
    labels = _unique([wrap_label(name) for name, _, _ in rows])
    categories = [f"{subject} class" if is_subject else "other class" for _, _, is_subject in rows]
    categories[-1] = f"all {plural}"
    colours = {"other class": SUPPORT, f"{subject} class": SCOPE_SUBJECT, f"all {plural}": SCOPE_SUBJECT}
    values = np.asarray([p for _, p, _ in rows])
    text = [_percent(p) for _, p, _ in rows]
    hover = [f"{name}: {t}" for (name, _, _), t in zip(rows, text, strict=True)]
    data = _grouped_bars(list(range(len(rows))), labels, categories, colours, values, text, hover)
    data.append(_legend_line(f"needed: {100 * threshold:g}%"))
    layout = _layout("What the ImageNet model sees", labels, [0, 1], len(data), True)
    layout["annotations"] += _value_column(labels, text)
    last = len(rows) - 1
    layout["shapes"].append(
        {
            "type": "line",
            "xref": "x",
            "yref": "y",
            "x0": threshold,
            "x1": threshold,
            "y0": last - 0.45,
            "y1": last + 0.45,
            "line": {"color": CUT, "width": 2, "dash": "dash"},
        }
    )
    return _figure(data, layout)


def to_figure(figure: Figure) -> Any:
    """A validated ``plotly.graph_objects.Figure`` from a chart dict (raises ValueError on an invalid property)."""
    import plotly.graph_objects as go

    return go.Figure({"data": figure["data"], "layout": figure["layout"]})
