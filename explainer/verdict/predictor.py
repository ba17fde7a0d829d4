"""The object the CLI and the app use: load a weights file once, run the pair, explain a prediction.

Running the networks (:meth:`Explainer.infer`) is separate from explaining (:meth:`Explainer.explain`), which only
post-processes cached probabilities: moving a threshold slider or switching an explanation off never reruns a network.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from explainer.inputs.imagecheck import NothingToClassify
from explainer.pair.bundle import load_bundle_with_scope
from explainer.pair.models import fuse_batchnorm
from explainer.pair.scope import ScopeGate, ScopeReading, ScopeResult, gate_result, unmeasured_result
from explainer.tasks import TASKS, Task, task_for_preprocessing
from explainer.tasks.base import FramedPreprocessor, ImageLike, Preprocessor, display_names

from . import postprocess
from .where import InputFrame, Where


@dataclass
class Explanation:
    """Everything one prediction shows: main probabilities, explanations, the class ranking and the verdict."""

    class_names: list[str]
    explanation_names: list[str]
    class_probs: np.ndarray  # (C,)
    explanation_probs: np.ndarray  # (E,) after any intervention
    kept_scores: np.ndarray  # (E,) after threshold and group cleaning (0 = dropped)
    cleaned_scores: np.ndarray  # (E,) after group cleaning alone: what the explanation chart lists
    ranking_scores: np.ndarray  # (C,)
    verdict: postprocess.Verdict
    threshold: float
    top_n: int
    overrides: dict[int, bool] = field(default_factory=dict)
    scope: ScopeResult = field(default_factory=unmeasured_result)  # out of scope => verdict.questioned

    @property
    def predicted_class(self) -> str:
        return self.class_names[self.verdict.predicted_class]

    @property
    def preferred_class(self) -> str:
        return self.class_names[self.verdict.preferred_class]

    @property
    def kept_explanations(self) -> list[str]:
        """Kept explanation names, most probable first."""
        return [self.explanation_names[i] for i in self.kept_indices]

    @property
    def kept_indices(self) -> list[int]:
        """Indices of the kept explanations, in the order of :attr:`kept_explanations`."""
        order = np.argsort(-self.kept_scores, kind="stable")
        return [int(i) for i in order if self.kept_scores[i] > 0]

    @property
    def kept_threshold_range(self) -> tuple[float | None, float | None]:
        """The thresholds that keep exactly what this one keeps (see :func:`postprocess.kept_threshold_range`), from
        the cleaned scores and the threshold :meth:`Explainer.explain` checked."""
        return postprocess._kept_range(self.cleaned_scores, self.threshold)

    @property
    def ranking(self) -> list[tuple[str, float]]:
        """Classes by explanation score, best first (stable: ties keep class order)."""
        order = np.argsort(-self.ranking_scores, kind="stable")
        return [(self.class_names[i], float(self.ranking_scores[i])) for i in order]

    def to_json(self) -> dict[str, Any]:
        """Everything, for programs: every class's and every explanation's probability and the whole ranking."""
        return {
            "predicted_class": self.predicted_class,
            "class_probabilities": {n: float(p) for n, p in zip(self.class_names, self.class_probs, strict=False)},
            "explanation_probabilities": {
                n: float(p) for n, p in zip(self.explanation_names, self.explanation_probs, strict=False)
            },
            **self._verdict_json(len(self.class_names)),
        }

    def _verdict_json(self, ranked: int, sentence: str | None = None) -> dict[str, Any]:
        """The keys every result JSON shares (built here only): kept explanations, the ranking's first ``ranked``
        classes, the verdict (and its ``sentence`` when given), the controls and the scope."""
        return {
            "kept_explanations": self.kept_explanations,
            "explanation_ranking": [[name, score] for name, score in self.ranking[:ranked]],
            "questioned": self.verdict.questioned,
            "case": self.verdict.case,
            "preferred_class": self.preferred_class,
            **({} if sentence is None else {"verdict": sentence}),
            "threshold": self.threshold,
            "top_n": self.top_n,
            **self.scope.to_json(),
        }

    def summary_json(self, top_k: int = 5) -> dict[str, Any]:
        """What a person reads: the predicted class and its probability, the ``top_k`` most probable classes, the kept
        explanations, the explanation ranking's top N, the verdict and its sentence. The full probability lists of
        :meth:`to_json` are left out (for 200 species and 312 attributes they are about 32 KB a line)."""
        if top_k < 1:
            raise ValueError(f"top k {top_k} is out of range (at least 1)")
        predicted = self.verdict.predicted_class
        order = np.argsort(-self.class_probs, kind="stable")[:top_k]
        return {
            "predicted_class": self.predicted_class,
            "predicted_probability": float(self.class_probs[predicted]),
            "top_classes": [[self.class_names[i], float(self.class_probs[i])] for i in order],
            **self._verdict_json(self.top_n, sentence=self.sentence()),
        }

    def sentence(self) -> str:
        """The verdict in words a non-expert understands, one claim at a time: where the explanations rank the
        predicted class, inside or outside the N they allow, and, only when they question it, which class they rank
        first. A consistent verdict never names another class as preferred (the class may be 4th of the 10 allowed:
        the sentence says so), and a tie is called a tie."""
        pred = self.predicted_class
        n_classes = len(self.class_names)
        scores = np.asarray(self.ranking_scores, dtype=np.float64)
        case = self.verdict.case
        refusal = self.scope.refusal(pred)
        if refusal is not None:
            return refusal
        if case == 1 and not np.any(scores > 0):
            return (
                f"Questioned: no kept explanation supports any class, so nothing backs '{pred}' (case 1); "
                "the input may be none of the classes this model knows."
            )
        place = f"{ordinal(self.verdict.rank)} of {n_classes}"
        allowed = "the first place they allow" if self.top_n == 1 else f"the top {self.top_n} they allow"
        if case == 1:
            return (
                f"Questioned: no kept explanation supports '{pred}' (case 1); the explanations rank "
                f"{self._first_by_explanations()}."
            )
        if case == 3:
            return (
                f"Questioned: the explanations rank '{pred}' {place}, outside {allowed}; they rank "
                f"{self._first_by_explanations()} (case 3)."
            )
        if case == 2:
            predicted = self.verdict.predicted_class
            tied = [self.class_names[c] for c in np.flatnonzero(scores == scores[predicted]) if c != predicted]
            together = _names(tied)
            if self.top_n == 1:
                return (
                    f"Consistent, with a tie: the explanations rank '{pred}' first of {n_classes}, together with "
                    f"{together} (case 2)."
                )
            return (
                f"Consistent, with a tie: the explanations rank '{pred}' {place} together with {together}, inside "
                f"{allowed} (case 2)."
            )
        if self.top_n == 1:
            return f"Consistent: the explanations rank '{pred}' first of {n_classes}."
        return f"Consistent: the explanations rank '{pred}' {place}, inside {allowed}."

    def _first_by_explanations(self) -> str:
        """ "'square' first", or with a tie at the top "'square' first, tied with 'rectangle'"."""
        scores = np.asarray(self.ranking_scores, dtype=np.float64)
        first = [self.class_names[c] for c in np.flatnonzero(scores == scores.max())]
        if len(first) == 1:
            return f"'{first[0]}' first"
        return f"'{first[0]}' first, tied with {_names(first[1:])}"


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st, 112th."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _names(names: Sequence[str], listed: int = 3) -> str:
    """ "'a'", "'a' and 'b'", "'a', 'b', 'c' and 4 others": a tie among many classes stays one short phrase."""
    quoted = [f"'{name}'" for name in names[:listed]]
    rest = len(names) - len(quoted)
    if rest:
        return ", ".join(quoted) + f" and {rest} other{'s' if rest > 1 else ''}"
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f" and {quoted[-1]}"


class Explainer:
    """A loaded pair and its metadata. Build it with :meth:`load`."""

    def __init__(
        self,
        pair: torch.nn.Module,
        meta: dict[str, Any],
        device: str | torch.device = "cpu",
        scope: ScopeGate | None = None,
    ) -> None:
        self.pair = pair.eval()
        self.meta = meta
        self.device = torch.device(device)
        self.task: str = meta["task"]
        self.class_names: list[str] = list(meta["class_names"])
        self.explanation_names: list[str] = list(meta["explanation_names"])
        self.preprocessing: dict[str, Any] = meta["preprocessing"]
        self.task_spec: Task | None = task_for_preprocessing(self.preprocessing.get("kind"))
        self.display_names: list[str] = display_names(meta)
        self.groups: list[list[int]] = [list(map(int, g)) for g in meta["explanation_groups"]]
        self.class_explanations = np.asarray(meta["class_explanations"], dtype=np.float64)
        self.ranking: str = meta["ranking"]
        self.default_threshold = float(meta["defaults"]["threshold"])
        # a file's top N above its class count means all of them (the bundle allows it): settled here, once
        self.default_top_n = min(int(meta["defaults"]["top_n"]), len(self.class_names))
        self._preprocess: Preprocessor | None = None
        self._framed_preprocess: FramedPreprocessor | None = None
        self.scope: ScopeGate | None = scope
        # The task says whether its networks run faster channels-last on the CPU (the birds pair at batch 1 with one
        # thread: about 20% less time, through oneDNN's depthwise convolutions); the numbers are the same up to
        # float rounding.
        self.memory_format = (
            torch.channels_last
            if self.task_spec is not None and self.task_spec.channels_last
            else torch.contiguous_format
        )
        if self.memory_format == torch.channels_last:
            self.pair.to(memory_format=torch.channels_last)
            if scope is not None and not scope.uses_main_trunk:
                scope.network.to(memory_format=torch.channels_last)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "Explainer":
        """The file's pair and gate, ready to serve: each convolution's BatchNorm is folded into it
        (:func:`~explainer.pair.models.fuse_batchnorm`; the same outputs, less time), so the loaded networks are for
        inference only (to train or save a file's networks, use :func:`~explainer.pair.bundle.load_bundle`)."""
        pair, meta, scope = load_bundle_with_scope(path, device)
        fuse_batchnorm(pair)
        if scope is not None and not scope.uses_main_trunk:
            fuse_batchnorm(scope.network)
        return cls(pair, meta, device, scope)

    # -- images -> tensors -------------------------------------------------------------------------------------------

    def preprocess(self, image: ImageLike) -> torch.Tensor:
        """One image (PIL or array, any mode) to the network's input tensor (C, H, W), as the task says.

        Shapes raise :class:`explainer.shapes.normalize.NothingToClassify` for a blank image.
        """
        if self._preprocess is None:
            if self.task_spec is None:
                kinds = tuple(task.preprocessing_kind for task in TASKS.values())
                raise ValueError(f"preprocessing kind {self.preprocessing.get('kind')!r} is not one of {kinds}")
            self._preprocess = self.task_spec.preprocessor(self.preprocessing)
        return self._preprocess(image)

    def check_image(self, image: Image.Image) -> Image.Image:
        """Refuse an image with nothing to classify before any network runs (raises
        :class:`explainer.tasks.ImageCheckError` in plain words); returns the image to preprocess."""
        if self.task_spec is None:
            return image
        return self.task_spec.check_image(image)

    def preview(self, tensor: torch.Tensor, size: int) -> Image.Image:
        """The preprocessed tensor as a picture ``size`` pixels square: what the network sees."""
        if self.task_spec is None:
            raise ValueError(f"preprocessing kind {self.preprocessing.get('kind')!r} has no preview")
        return self.task_spec.preview(tensor, self.preprocessing, size)

    # -- networks ----------------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def infer_tensors(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities (N, C) and explanation probabilities (N, E) for a preprocessed batch."""
        logits, expl_logits = self.pair(self._network_input(batch))
        return self._probabilities(logits, expl_logits)

    def _network_input(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device, torch.float32).contiguous(memory_format=self.memory_format)

    @staticmethod
    def _probabilities(logits: torch.Tensor, expl_logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        return (
            torch.softmax(logits.float(), dim=1).cpu().numpy(),
            torch.sigmoid(expl_logits.float()).cpu().numpy(),
        )

    def scope_input(self, image: ImageLike, pair_input: torch.Tensor) -> torch.Tensor | None:
        """The scope network's input for one image: None without a gate or when the gate reads the main network's
        features; the pair's own tensor when the preprocessing matches (no second resize); else the gate's."""
        if self.scope is None or self.scope.uses_main_trunk:
            return None
        if self.scope.shares_input_with(self.preprocessing):
            return pair_input
        return self.scope.preprocess(image)

    @torch.inference_mode()
    def infer_tensors_with_scope(
        self, batch: torch.Tensor, scope_batch: torch.Tensor | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[ScopeReading] | None]:
        """:meth:`infer_tensors` plus the scope readings (None without a gate).

        ``scope_batch``: the stacked :meth:`scope_input` tensors, needed only by a gate with its own trunk. A gate on
        the main trunk reads the pooled features the pair computes anyway (:meth:`MirrorPair.forward_with_pooled`).
        """
        gate = self.scope
        if gate is None:
            return (*self.infer_tensors(batch), None)
        if not gate.uses_main_trunk:
            if scope_batch is None:
                raise ValueError("this scope network needs its own input: pass scope_batch (see scope_input)")
            probs, expls = self.infer_tensors(batch)
            return probs, expls, gate.read_tensors(scope_batch.contiguous(memory_format=self.memory_format))
        logits, expl_logits, pooled = self.pair.forward_with_pooled(self._network_input(batch))
        return (*self._probabilities(logits, expl_logits), gate.read_tensors(pooled))

    def run_inputs(
        self,
        pair_inputs: Sequence[torch.Tensor],
        scope_inputs: Sequence[torch.Tensor | None] | None = None,
        with_scope: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, list[ScopeReading] | None]:
        """Preprocessed inputs (any sizes: a whole-photo view keeps each photo's shape) to class and explanation
        probabilities and scope readings (None without a gate, or ``with_scope=False``), in the order given; inputs
        of one size run as one batch."""
        n, gated = len(pair_inputs), with_scope and self.scope is not None
        probs = np.zeros((n, len(self.class_names)))
        expls = np.zeros((n, len(self.explanation_names)))
        readings: list[ScopeReading | None] = [None] * n
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, tensor in enumerate(pair_inputs):
            groups.setdefault(tuple(tensor.shape), []).append(i)
        for members in groups.values():
            batch = torch.stack([pair_inputs[i] for i in members])
            if not gated:
                probs[members], expls[members] = self.infer_tensors(batch)
                continue
            own = None
            if scope_inputs is not None and scope_inputs[members[0]] is not None:
                own = torch.stack([scope_inputs[i] for i in members])  # type: ignore[misc]
            p, e, r = self.infer_tensors_with_scope(batch, own)
            probs[members], expls[members] = p, e
            for k, i in enumerate(members):
                readings[i] = r[k] if r is not None else None
        return probs, expls, (readings if gated else None)  # type: ignore[return-value]

    def infer_with_scope(
        self, images: Sequence[ImageLike], batch_size: int = 64
    ) -> tuple[np.ndarray, np.ndarray, list[ScopeReading] | None]:
        """:meth:`infer` plus the scope readings (None when the file has no scope network)."""
        probs, expls, readings = [], [], []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            pair_inputs = [self.preprocess(im) for im in chunk]
            scope_inputs = [self.scope_input(im, t) for im, t in zip(chunk, pair_inputs, strict=True)]
            p, e, r = self.run_inputs(pair_inputs, scope_inputs)
            probs.append(p)
            expls.append(e)
            readings += r or []
        if not probs:
            empty = np.zeros((0, len(self.class_names))), np.zeros((0, len(self.explanation_names)))
            return *empty, ([] if self.scope is not None else None)
        return np.concatenate(probs), np.concatenate(expls), (readings if self.scope is not None else None)

    def infer(self, images: Sequence[ImageLike], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Preprocess and run a list of images in batches (the pair alone, without the scope gate)."""
        parts = [
            self.infer_inputs([self.preprocess(image) for image in images[start : start + batch_size]])
            for start in range(0, len(images), batch_size)
        ]
        return self._joined(parts)

    def infer_inputs(self, inputs: Sequence[torch.Tensor], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Class and explanation probabilities of preprocessed inputs, in order, run in batches of ``batch_size``
        (the pair alone, without the scope gate)."""
        parts = [
            self.run_inputs(inputs[start : start + batch_size], with_scope=False)[:2]
            for start in range(0, len(inputs), batch_size)
        ]
        return self._joined(parts)

    def preprocess_accepted(self, images: Sequence[ImageLike]) -> tuple[list[torch.Tensor], np.ndarray]:
        """The preprocessed inputs of the images that hold something to classify, and the mask of which those are:
        an image the task refuses as :class:`~explainer.inputs.imagecheck.NothingToClassify` (a blank drawing) is
        left out instead of raising, so a data set with a few blanks can be measured in one call."""
        inputs, accepted = [], []
        for image in images:
            try:
                inputs.append(self.preprocess(image))
                accepted.append(True)
            except NothingToClassify:
                accepted.append(False)
        return inputs, np.array(accepted, dtype=bool)

    def _joined(self, parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        if not parts:
            return np.zeros((0, len(self.class_names))), np.zeros((0, len(self.explanation_names)))
        return np.concatenate([p for p, _ in parts]), np.concatenate([e for _, e in parts])

    def where(self, image: ImageLike) -> tuple[np.ndarray, np.ndarray, Where]:
        """Class and explanation probabilities of one image, and the heatmaps of every class and explanation in the
        image's own pixels (see :mod:`explainer.verdict.where`). The maps are the terms of each output's last layer, so
        they show exactly where its score comes from."""
        return self.where_tensor(*self.framed_preprocess(image))

    def framed_preprocess(self, image: ImageLike) -> tuple[torch.Tensor, InputFrame]:
        """:meth:`preprocess`, and where the network's input lies in the image (for heatmaps)."""
        if self._framed_preprocess is None:
            if self.task_spec is None:
                raise ValueError(f"preprocessing kind {self.preprocessing.get('kind')!r} has no heatmaps")
            self._framed_preprocess = self.task_spec.framed_preprocessor(self.preprocessing)
        return self._framed_preprocess(image)

    @torch.inference_mode()
    def where_tensor(self, tensor: torch.Tensor, frame: InputFrame) -> tuple[np.ndarray, np.ndarray, Where]:
        """:meth:`where` for one preprocessed input (C, H, W) and its frame: one pass gives the probabilities and
        every heatmap."""
        logits, expl_logits, class_maps, expl_maps = self.pair.forward_maps(self._network_input(tensor[None]))
        probs, expls = self._probabilities(logits, expl_logits)
        where = Where(frame, class_maps[0].float().cpu().numpy(), expl_maps[0].float().cpu().numpy())
        return probs[0], expls[0], where

    @torch.inference_mode()
    def read_scope(self, tensor: torch.Tensor, scope_input: torch.Tensor | None = None) -> ScopeReading | None:
        """The scope network's reading of one preprocessed input (C, H, W), for callers that ran the pair without it
        (:meth:`where_tensor`); None without a gate. ``scope_input``: :meth:`scope_input`, for a gate with its own
        trunk. A gate on the main network's trunk reads pooled features that the maps' pass does not return, so it
        costs one more pass."""
        gate = self.scope
        if gate is None:
            return None
        if gate.uses_main_trunk:
            readings = self.infer_tensors_with_scope(tensor[None])[2]
        elif scope_input is None:
            raise ValueError("this scope network needs its own input: pass scope_input (see scope_input)")
        else:
            readings = gate.read_tensors(scope_input[None].contiguous(memory_format=self.memory_format))
        return readings[0] if readings else None

    # -- explanation (no network) ------------------------------------------------------------------------------------

    def resolve_controls(self, threshold: float | None = None, top_n: int | None = None) -> postprocess.Controls:
        """Threshold and top N, this model's defaults filled in, checked (raises ValueError naming the valid range):
        what :meth:`explain_with` takes."""
        return postprocess.resolve_controls(
            threshold, top_n, self.default_threshold, self.default_top_n, len(self.class_names)
        )

    def explain(
        self,
        class_probs: np.ndarray,
        explanation_probs: np.ndarray,
        threshold: float | None = None,
        top_n: int | None = None,
        overrides: Mapping[int, bool] | None = None,
        scope: ScopeReading | None = None,
    ) -> Explanation:
        """Post-process one sample's cached probabilities. ``overrides`` forces explanations on (True) or off
        (False). Threshold and top N (this model's defaults when None) are checked here: a ValueError names the
        valid range.

        ``scope``: the scope network's reading of this image (birds files with a gate). Without a gate the scope is
        the pair's own (shapes, :func:`explainer.pair.scope.explanation_scope`) or unmeasured (older birds files: in
        scope, score 1.0). A gated model explained without its reading is treated as unmeasured too.
        """
        controls = self.resolve_controls(threshold, top_n)
        return self.explain_with(class_probs, explanation_probs, controls, overrides, scope)

    def explain_with(
        self,
        class_probs: np.ndarray,
        explanation_probs: np.ndarray,
        controls: postprocess.Controls,
        overrides: Mapping[int, bool] | None = None,
        scope: ScopeReading | None = None,
    ) -> Explanation:
        """:meth:`explain` with controls from :meth:`resolve_controls`, not checked again: for the app and the CLI,
        which check their controls once, where they enter, and then explain many times."""
        threshold, top_n = controls
        expl = np.asarray(explanation_probs, dtype=np.float64).copy()
        overrides = dict(overrides or {})
        for idx, on in overrides.items():
            if not 0 <= idx < expl.size:
                raise ValueError(f"explanation index {idx} is out of range (0 to {expl.size - 1})")
            expl[idx] = 1.0 if on else 0.0
        done = postprocess.process(class_probs, expl, controls, self.groups, self.class_explanations, self.ranking)
        verdict = done.verdicts[0]
        scope_result = self.scope_result(expl, threshold, scope)
        if not scope_result.in_scope:
            verdict = replace(verdict, questioned=True)  # out of scope is always questioned
        return Explanation(
            class_names=self.class_names,
            explanation_names=self.display_names,
            class_probs=np.asarray(class_probs, dtype=np.float64),
            explanation_probs=expl,
            kept_scores=done.kept[0],
            cleaned_scores=postprocess.clean_groups(expl, self.groups),
            ranking_scores=done.scores[0],
            verdict=verdict,
            threshold=threshold,
            top_n=top_n,
            overrides=overrides,
            scope=scope_result,
        )

    def scope_result(
        self, explanation_probs: np.ndarray, threshold: float, reading: ScopeReading | None
    ) -> ScopeResult:
        """In or out of scope for one sample (see :meth:`explain`)."""
        if self.scope is not None and reading is not None:
            return gate_result(self.scope, reading)
        if self.task_spec is None:  # no task to judge: nothing is measured, every image is in scope
            from explainer.pair.scope import unmeasured_result

            return unmeasured_result()
        return self.task_spec.own_scope(explanation_probs, self.class_explanations, threshold)
