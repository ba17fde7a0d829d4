"""One self-describing weights file per model: both networks' tensors plus JSON metadata, in safetensors.

Loading never unpickles. The metadata (``explainer`` key of the safetensors header) holds everything needed to rebuild
and use the pair: format version, architecture, class and explanation names, explanation groups, the class x
explanation prior matrix, the ranking formula, preprocessing, default threshold and N, training config and measured
metrics. Tensors are stored under ``main.`` and ``mirror.`` prefixes (optionally in float16 to halve the file).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .models import MirrorPair, build_pair, unwrap

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


def validate_metadata(meta: dict[str, Any], where: str = "metadata") -> None:
    """Check the metadata is complete and self-consistent; the error names the first problem."""
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise BundleError(f"{where}: metadata lacks {missing}")
    if meta["format_version"] != FORMAT_VERSION:
        raise BundleError(
            f"{where}: format version {meta['format_version']} is not supported (expected {FORMAT_VERSION})"
        )
    n_classes, n_expl = len(meta["class_names"]), len(meta["explanation_names"])
    prior = meta["class_explanations"]
    if len(prior) != n_classes or any(len(row) != n_expl for row in prior):
        raise BundleError(f"{where}: class_explanations must be {n_classes} rows of {n_expl} values")
    for group in meta["explanation_groups"]:
        if any(not 0 <= int(i) < n_expl for i in group):
            raise BundleError(f"{where}: explanation group {group} has an index out of range (0 to {n_expl - 1})")
    if meta["ranking"] not in ("normalized", "weighted"):
        raise BundleError(f"{where}: ranking {meta['ranking']!r} is not 'normalized' or 'weighted'")
    names = meta.get("explanation_display_names")
    if names is not None and len(names) != n_expl:
        raise BundleError(f"{where}: explanation_display_names has {len(names)} names for {n_expl} explanations")


def _state_dict(pair: MirrorPair) -> dict[str, torch.Tensor]:
    pair = unwrap(pair)  # never let a torch.compile or DistributedDataParallel prefix reach the file
    return {k: v.detach().cpu().contiguous() for k, v in pair.state_dict().items()}


def save_bundle(path: str | Path, pair: MirrorPair, meta: dict[str, Any], half: bool = False) -> None:
    """Write ``pair`` and ``meta`` atomically. ``half`` stores floating tensors as float16 (BatchNorm stats too)."""
    from safetensors.torch import save

    meta = {**meta, "format_version": FORMAT_VERSION, "storage_dtype": "float16" if half else "float32"}
    validate_metadata(meta, str(path))
    tensors = _state_dict(pair)
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
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
    tensors, meta = read_bundle(path)
    try:
        pair = build_pair(meta["architecture"], coupling="frozen", verify=False)
    except Exception as err:
        raise BundleError(f"{path}: cannot build architecture {meta['architecture']}: {err}") from err
    expected = pair.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise BundleError(
            f"{path}: tensors do not match its architecture (missing {missing[:5]}{'...' if len(missing) > 5 else ''},"
            f" unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})"
        )
    for key, wanted in expected.items():  # network order: the first mismatching layer is named, every time
        if tensors[key].shape != wanted.shape:
            raise BundleError(
                f"{path}: tensor {key} has shape {tuple(tensors[key].shape)}, "
                f"architecture expects {tuple(wanted.shape)}"
            )
    state = {k: v.to(expected[k].dtype) for k, v in tensors.items()}
    pair.load_state_dict(state, strict=True)
    return pair.to(device).eval(), meta
