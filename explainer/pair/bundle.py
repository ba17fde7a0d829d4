"""One self-describing weights file per model: both networks' tensors plus JSON metadata, in safetensors.

Loading never unpickles. The metadata (``explainer`` key of the safetensors header) holds everything needed to rebuild
and use the pair: format version, architecture, class and explanation names, explanation groups, the class x
explanation prior matrix, the ranking formula, preprocessing, default threshold and N, training config and measured
metrics. Tensors are stored under ``main.`` and ``mirror.`` prefixes (optionally in float16 to halve the file).
A birds file may also hold a frozen scope network ("is this a bird at all?") under ``scope.``, described by the
metadata key ``scope`` (see :mod:`explainer.pair.scope`); files without one load as before.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .models import FAMILIES, MirrorPair, build_pair, state_dict_problem, unwrap
from .scope import SCOPE_PREFIX, ScopeError, ScopeGate, split_scope_tensors

FORMAT_VERSION = 1
REQUIRED_KEYS = (
    "format_version",
    "task",
    "architecture",
    "class_names",
    "explanation_names",
    "explanation_groups",
    "class_explanations",
    "ranking",
    "preprocessing",
    "defaults",
)


class BundleError(ValueError):
    """A weights file that is missing, unreadable, truncated or does not match its own description."""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; a weights file should be as readable as any other
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_name_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def validate_metadata(meta: dict[str, Any], where: str = "metadata") -> None:
    """Check the metadata is complete, of the right types and self-consistent; the error names the first problem.

    Types are checked before use, so a hand-edited file (``"defaults": "oops"``) is refused in one plain line
    instead of failing later with an index or type error."""
    if not isinstance(meta, dict):
        raise BundleError(f"{where}: the explainer metadata must be a JSON object, not {type(meta).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise BundleError(f"{where}: metadata lacks {missing}")
    if meta["format_version"] != FORMAT_VERSION:
        raise BundleError(
            f"{where}: format version {str(meta['format_version'])[:40]!r} is not supported (expected {FORMAT_VERSION})"
        )
    for key, kind, what in (
        ("task", str, "a name"),
        ("architecture", dict, "an object"),
        ("preprocessing", dict, "an object"),
        ("defaults", dict, "an object"),
        ("ranking", str, "a name"),
    ):
        if not isinstance(meta[key], kind):
            raise BundleError(f"{where}: metadata {key} must be {what}, not {type(meta[key]).__name__}")
    for key in ("class_names", "explanation_names"):
        if not _is_name_list(meta[key]):
            raise BundleError(f"{where}: metadata {key} must be a non-empty list of names")
    n_classes, n_expl = len(meta["class_names"]), len(meta["explanation_names"])
    prior = meta["class_explanations"]
    if (
        not isinstance(prior, list)
        or len(prior) != n_classes
        or any(not isinstance(row, list) or len(row) != n_expl for row in prior)
    ):
        raise BundleError(f"{where}: class_explanations must be {n_classes} rows of {n_expl} values")
    if not all(_is_number(v) for row in prior for v in row):
        raise BundleError(f"{where}: class_explanations must hold finite numbers only")
    groups = meta["explanation_groups"]
    if not isinstance(groups, list) or any(not isinstance(g, list) for g in groups):
        raise BundleError(f"{where}: explanation_groups must be a list of lists of explanation indices")
    for group in groups:
        if any(not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n_expl for i in group):
            raise BundleError(
                f"{where}: explanation group {str(group)[:60]} has an index that is not a whole "
                f"number from 0 to {n_expl - 1}"
            )
    if meta["ranking"] not in ("normalized", "weighted"):
        raise BundleError(f"{where}: ranking {meta['ranking'][:40]!r} is not 'normalized' or 'weighted'")
    defaults = meta["defaults"]
    threshold, top_n = defaults.get("threshold"), defaults.get("top_n")
    if not _is_number(threshold) or not 0 <= threshold <= 1:
        raise BundleError(f"{where}: defaults threshold must be a number from 0 to 1")
    if not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1:  # above the class count: used as all
        raise BundleError(f"{where}: defaults top_n must be a whole number, at least 1")
    names = meta.get("explanation_display_names")
    if names is not None and (not _is_name_list(names) or len(names) != n_expl):
        raise BundleError(f"{where}: explanation_display_names must be {n_expl} names")
    if "scope" in meta:
        from .scope import ScopeError, validate_scope_metadata

        try:
            validate_scope_metadata(meta["scope"], f"{where}: scope")
        except ScopeError as err:
            raise BundleError(str(err)) from err
    declared = _declared_outputs(meta["architecture"])
    if declared is not None and declared != (n_classes, n_expl):
        raise BundleError(
            f"{where}: the networks have {declared[0]} class outputs and {declared[1]} explanation outputs, but the "
            f"metadata names {n_classes} classes and {n_expl} explanations"
        )


def _declared_outputs(architecture: dict[str, Any]) -> tuple[int, int] | None:
    """(classes, explanations) the architecture builds; None for a family that does not say (checked on load)."""
    family = FAMILIES.get(architecture.get("family"))  # type: ignore[arg-type]
    return family.outputs(architecture) if family else None


def _state_dict(pair: MirrorPair) -> dict[str, torch.Tensor]:
    pair = unwrap(pair)  # never let a torch.compile or DistributedDataParallel prefix reach the file
    return {k: v.detach().cpu().contiguous() for k, v in pair.state_dict().items()}


def save_bundle(
    path: str | Path,
    pair: MirrorPair,
    meta: dict[str, Any],
    half: bool = False,
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write ``pair`` and ``meta`` atomically. ``half`` stores floating tensors as float16 (BatchNorm stats too).

    ``extra_tensors``: prefixed tensors stored as given, e.g. the scope network's (``scope.``, with ``meta["scope"]``).
    """
    meta = {**meta, "format_version": FORMAT_VERSION, "storage_dtype": "float16" if half else "float32"}
    tensors = _state_dict(pair)
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    write_bundle(path, {**tensors, **(extra_tensors or {})}, meta)


def write_bundle(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Validate ``meta`` and write ``tensors`` with it, atomically (a reader never sees half a file)."""
    from safetensors.torch import save

    validate_metadata(meta, str(path))
    has_scope_tensors = any(key.startswith(SCOPE_PREFIX) for key in tensors)
    if has_scope_tensors != ("scope" in meta):
        raise BundleError(f"{path}: scope tensors and the scope description must come together")
    data = save(tensors, metadata={"explainer": json.dumps(meta)})
    atomic_write_bytes(path, data)


def read_bundle(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of a weights file, with errors that name the file and what is wrong."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: no such weights file")
    data = path.read_bytes()
    if len(data) < 8:
        raise BundleError(f"{path}: file is truncated ({len(data)} bytes) or not a safetensors file")
    header_len = int.from_bytes(data[:8], "little")
    if header_len <= 0 or 8 + header_len > len(data):
        raise BundleError(f"{path}: file is truncated or not a safetensors file (header says {header_len} bytes)")
    try:
        header = json.loads(data[8 : 8 + header_len])
        tensors = load(data)
    except (SafetensorError, ValueError, UnicodeDecodeError) as err:
        raise BundleError(f"{path}: file is truncated or corrupt ({err})") from err
    raw = (header.get("__metadata__") or {}).get("explainer")
    if raw is None:
        raise BundleError(f"{path}: no explainer metadata (is this a weights file written by explainer?)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as err:
        raise BundleError(f"{path}: explainer metadata is not valid JSON ({err})") from err
    validate_metadata(meta, str(path))
    return tensors, meta


def load_bundle(path: str | Path, device: str | torch.device = "cpu") -> tuple[MirrorPair, dict[str, Any]]:
    """Rebuild the pair from the file alone (architecture from its metadata), in eval mode and float32."""
    pair, meta, _ = load_bundle_with_scope(path, device, with_scope=False)
    return pair, meta


def load_bundle_with_scope(
    path: str | Path, device: str | torch.device = "cpu", with_scope: bool = True
) -> tuple[MirrorPair, dict[str, Any], ScopeGate | None]:
    """The pair, its metadata and its scope gate (None for files without one), from one read of the file."""
    tensors, meta = read_bundle(path)
    tensors, scope_state = split_scope_tensors(tensors)
    if bool(scope_state) != ("scope" in meta):
        raise BundleError(
            f"{path}: "
            + ("scope tensors without a scope description" if scope_state else "a scope description without tensors")
        )
    gate = None
    if scope_state and with_scope:
        try:
            gate = ScopeGate.from_tensors(scope_state, meta["scope"], device)
        except ScopeError as err:
            raise BundleError(f"{path}: {err}") from err
    try:
        pair = build_pair(meta["architecture"], coupling="frozen", verify=False)
    except Exception as err:
        raise BundleError(
            f"{path}: cannot build the architecture the file describes "
            f"({str(meta['architecture'])[:60]}): {str(err)[:120]}"
        ) from err
    expected = pair.state_dict()
    problem = state_dict_problem(expected, tensors)
    if problem:
        raise BundleError(f"{path}: {problem}")
    state = {k: v.to(expected[k].dtype) for k, v in tensors.items()}
    pair.load_state_dict(state, strict=True)
    flip = meta["preprocessing"].get("flip_average", False)
    if not isinstance(flip, bool):
        raise BundleError(f"{path}: preprocessing 'flip_average' must be true or false, got {str(flip)[:40]!r}")
    pair.flip_average = flip  # the test view: the photo and its mirror image, averaged
    return pair.to(device).eval(), meta, gate
