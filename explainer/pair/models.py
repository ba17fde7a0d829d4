"""The main network, the mirror network that reads its per-stage activations, and the pair that joins them.

Every main network here follows timm's contract: ``forward_intermediates(x) -> (final, [stage activations])`` and
``forward_head(final) -> logits``, with ``feature_info`` describing each stage (channels, reduction, module). The
mirror is sized from that ``feature_info``, never from hard-coded channel counts.

Two families:
- :class:`ShapesCNN` / :class:`ShapesMirror`: the reference's small Keras networks for 64x64 shapes, rebuilt exactly
  (conv -> ReLU -> BatchNorm -> MaxPool blocks; the mirror concatenates the main network's block outputs).
- :class:`TimmMirror`: a mirror of any timm CNN (ResNet, EfficientNet, ...), the same architecture run stage by stage,
  joining the main network's activation after each stage by addition (the reference birds design) or concatenation.

:class:`MirrorPair` holds both and makes gradient flow into the main network an explicit choice: ``"frozen"`` (the
reference's two-step training: the main network is fixed, runs in eval mode, and no gradient reaches it) or
``"joint"`` (both train together).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

JOINS = ("add", "concat")
COUPLINGS = ("frozen", "joint")


class MirrorError(ValueError):
    """A backbone or configuration that cannot be mirrored."""


def _check_choice(name: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ValueError(f"{name} {value!r} is not one of {tuple(valid)}")


# ----------------------------------------------------------------------------------------------------------------------
# Shapes: the reference networks
# ----------------------------------------------------------------------------------------------------------------------


def _shapes_block(in_chs: int, out_chs: int, kernel: int, padding: int) -> nn.Sequential:
    """Keras's Conv2D(relu) -> BatchNormalization -> MaxPool2D(2), in that order."""
    return nn.Sequential(
        nn.Conv2d(in_chs, out_chs, kernel, padding=padding),
        nn.ReLU(inplace=True),
        nn.BatchNorm2d(out_chs, eps=1e-3, momentum=0.01),  # Keras defaults
        nn.MaxPool2d(2),
    )


class ShapesCNN(nn.Module):
    """The shapes main network: conv blocks, then Flatten + Linear. Reference: widths (5, 5, 5), kernel 4, valid."""

    def __init__(
        self,
        n_classes: int = 4,
        widths: Sequence[int] = (5, 5, 5),
        kernel: int = 4,
        padding: int = 0,
        in_chans: int = 1,
        image_size: int = 64,
    ) -> None:
        super().__init__()
        if not widths:
            raise ValueError("widths must name at least one block")
        self.blocks = nn.ModuleList()
        chs, size, reduction = in_chans, image_size, 1
        self.feature_info: list[dict[str, Any]] = []
        for i, width in enumerate(widths):
            self.blocks.append(_shapes_block(chs, width, kernel, padding))
            size = (size + 2 * padding - kernel + 1) // 2
            reduction *= 2
            if size < 1:
                raise ValueError(f"image size {image_size} is too small for {len(widths)} blocks of kernel {kernel}")
            chs = width
            self.feature_info.append({"num_chs": width, "reduction": reduction, "module": f"blocks.{i}", "size": size})
        self.head = nn.Linear(chs * size * size, n_classes)

    def forward_intermediates(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        taps = []
        for block in self.blocks:
            x = block(x)
            taps.append(x)
        return x, taps

    def forward_head(self, final: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(final, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_intermediates(x)[0])


class ShapesMirror(nn.Module):
    """The reference's explanations network for shapes.

    Starts from the main network's block-0 output; after each of its own blocks but the last it joins the main
    network's output of the same resolution (concatenation along channels, or addition); then Flatten + Linear.
    """

    def __init__(
        self,
        main_info: Sequence[dict[str, Any]],
        n_explanations: int = 5,
        widths: Sequence[int] = (3, 3, 3),
        kernel: int = 4,
        padding: int = 0,
        join: str = "concat",
    ) -> None:
        super().__init__()
        _check_choice("join", join, JOINS)
        self.spec = {"widths": [int(w) for w in widths], "kernel": kernel, "padding": padding, "join": join}
        if len(widths) != len(main_info):
            raise MirrorError(f"the mirror needs one block per main block ({len(main_info)}); got {len(widths)} widths")
        self.join = join
        self.blocks = nn.ModuleList()
        self.feature_info: list[dict[str, Any]] = []  # each block's output after its join, as a part mirror reads it
        chs, size, reduction = main_info[0]["num_chs"], main_info[0]["size"], main_info[0]["reduction"]
        for i, width in enumerate(widths):
            self.blocks.append(_shapes_block(chs, width, kernel, padding))
            size = (size + 2 * padding - kernel + 1) // 2
            if size < 1:
                raise MirrorError(f"mirror block {i} shrinks the activation to nothing; use padding or fewer blocks")
            chs = width
            if i + 1 < len(widths):
                tap = main_info[i + 1]
                if tap["size"] != size:
                    raise MirrorError(
                        f"mirror block {i} outputs {size}x{size} but main block {i + 1} outputs "
                        f"{tap['size']}x{tap['size']}; kernel/padding must keep the resolutions equal"
                    )
                if join == "add" and tap["num_chs"] != width:
                    raise MirrorError(
                        f"join 'add' needs mirror block {i} width {width} to equal main block {i + 1} width "
                        f"{tap['num_chs']}"
                    )
                chs = width + tap["num_chs"] if join == "concat" else width
            reduction *= 2
            self.feature_info.append({"num_chs": chs, "reduction": reduction, "module": f"blocks.{i}", "size": size})
        self.head = nn.Linear(chs * size * size, n_explanations)

    def intermediates(self, taps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Each block's output after its join with the main network (the reference mirror starts from the main
        block-0 output)."""
        x, outputs = taps[0], []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i + 1 < len(self.blocks):
                x = torch.cat([x, taps[i + 1]], dim=1) if self.join == "concat" else x + taps[i + 1]
            outputs.append(x)
        return outputs

    def features(self, taps: Sequence[torch.Tensor]) -> torch.Tensor:
        """The last block's output, before the head."""
        return self.intermediates(taps)[-1]

    def forward(self, image: torch.Tensor, taps: Sequence[torch.Tensor]) -> torch.Tensor:
        del image
        return self.head(torch.flatten(self.features(taps), 1))


# ----------------------------------------------------------------------------------------------------------------------
# Any timm CNN
# ----------------------------------------------------------------------------------------------------------------------

# Children that belong to timm's forward_head (pooling, classifier): the mirror calls forward_head for these.
_HEAD_NAMES = {"global_pool", "head", "fc", "classifier", "head_drop", "flatten", "fc_norm", "drop", "pre_logits"}


def _ordered_entries(net: nn.Module, feature_modules: Sequence[str]) -> list[tuple[str, nn.Module]]:
    """The model's children in order, with a Sequential opened one level where a feature module lives inside it."""
    entries = []
    for name, child in net.named_children():
        inside = [m for m in feature_modules if m.startswith(name + ".")]
        if isinstance(child, nn.Sequential) and inside and name not in feature_modules:
            entries.extend((f"{name}.{sub}", mod) for sub, mod in child.named_children())
        else:
            entries.append((name, child))
    return entries


def _replace_submodule(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, leaf = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, new)


class _ConcatJoin(nn.Module):
    """Concatenate mirror and main activations, then a 1x1 conv back to the stage width.

    Initialised as [I | I] so that, at the start of training, it equals the addition join.
    """

    def __init__(self, chs: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(2 * chs, chs, 1, bias=False)
        with torch.no_grad():
            eye = torch.eye(chs)[:, :, None, None]
            self.proj.weight.copy_(torch.cat([eye, eye], dim=1))

    def forward(self, mirror: torch.Tensor, main: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.cat([mirror, main], dim=1))


class TimmMirror(nn.Module):
    """A copy of a timm CNN's architecture, run stage by stage, reading the main network's stage activations.

    ``start="stem"`` (the reference): the mirror's input is the main network's first stage activation (its stem) and
    the mirror's own stem is dropped. ``start="image"``: the mirror runs its own stem on the image and joins the
    main network's first activation after it. After every later stage the main network's activation of that stage
    is joined (``"add"`` or ``"concat"``), then the rest of the mirror's ``forward_features`` and its ``forward_head``
    produce the explanation logits.
    """

    def __init__(
        self,
        model_name: str,
        feature_info: Sequence[dict[str, Any]],
        n_explanations: int,
        join: str = "add",
        start: str = "stem",
        verify: bool = True,
        **model_kwargs: Any,
    ) -> None:
        super().__init__()
        import timm  # local import: the shapes-only paths never need timm

        _check_choice("join", join, JOINS)
        _check_choice("start", start, ("stem", "image"))
        self.join, self.start = join, start
        try:
            net = timm.create_model(model_name, pretrained=False, num_classes=n_explanations, **model_kwargs)
        except Exception as err:  # timm raises RuntimeError for unknown names
            raise MirrorError(f"timm cannot build {model_name!r}: {err}") from err
        fi = getattr(net, "feature_info", None)
        if not fi or not hasattr(net, "forward_intermediates") or not hasattr(net, "forward_head"):
            raise MirrorError(f"{model_name!r} has no per-stage feature_info / forward_intermediates to mirror")
        info = list(fi.get_dicts() if hasattr(fi, "get_dicts") else fi)
        reductions = [f["reduction"] for f in info]
        if any(b <= a for a, b in zip(reductions, reductions[1:], strict=False)):
            raise MirrorError(
                f"{model_name!r} is not a staged CNN (feature reductions {reductions} do not grow stage by stage)"
            )
        modules = [f["module"] for f in info]
        entries = _ordered_entries(net, modules)
        names = [n for n, _ in entries]
        missing = [m for m in modules if m not in names]
        if missing:
            raise MirrorError(f"{model_name!r}: feature modules {missing} are not top-level stages the mirror can run")
        ends = [names.index(m) for m in modules]
        segments: list[list[tuple[str, nn.Module]]] = []
        prev = 0
        for end in ends:
            segments.append(entries[prev : end + 1])
            prev = end + 1
        tail = []
        for name, mod in entries[prev:]:
            if name.split(".")[0] in _HEAD_NAMES:
                break
            tail.append((name, mod))
        self.net = net
        # Plain lists of views into self.net: registering them would store every tensor twice in the state dict.
        self._segments = [nn.Sequential(*[m for _, m in seg]) for seg in segments]
        self._tail = [m for _, m in tail]
        self.stage_channels = [f["num_chs"] for f in info]
        main_chs = [f["num_chs"] for f in feature_info]
        if main_chs != self.stage_channels:
            raise MirrorError(
                f"main network stage channels {main_chs} differ from the mirror's {self.stage_channels}; "
                "the mirror must be the same architecture"
            )
        if verify:
            self._verify(model_name)
        first = 1 if start == "stem" else 0
        self.joins = nn.ModuleList(
            [_ConcatJoin(c) if join == "concat" else nn.Identity() for c in self.stage_channels[first:]]
        )
        if start == "stem":  # the mirror's own stem never runs: drop its weights
            for name, _ in segments[0]:
                _replace_submodule(self.net, name, nn.Identity())
            self._segments[0] = nn.Sequential()

    @torch.no_grad()
    def _verify(self, model_name: str) -> None:
        """Running the stages one by one must reproduce the network's own forward, or the split is wrong."""
        was_training = self.net.training
        self.net.eval()
        x = torch.randn(1, 3, 64, 64)
        try:
            expected = self.net(x)
            y = x
            for seg in self._segments:
                y = seg(y)
            got = self.net.forward_head(self._run_tail(y))
        except Exception as err:
            raise MirrorError(f"{model_name!r} cannot be run stage by stage: {err}") from err
        finally:
            self.net.train(was_training)
        if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-3, atol=1e-4):
            raise MirrorError(f"{model_name!r}: running its stages one by one does not reproduce its forward")

    def _run_tail(self, x: torch.Tensor) -> torch.Tensor:
        for module in self._tail:
            x = module(x)
        return x

    def forward(self, image: torch.Tensor, taps: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.net.forward_head(self.forward_features(image, taps))

    def forward_features(self, image: torch.Tensor, taps: Sequence[torch.Tensor]) -> torch.Tensor:
        """The mirror's final feature map, before its head (pooling and classifier): what a feature cache stores."""
        if len(taps) != len(self._segments):
            raise ValueError(f"expected {len(self._segments)} main activations, got {len(taps)}")
        if self.start == "stem":
            x = taps[0]
            stages = range(1, len(self._segments))
        else:
            x = image
            stages = range(len(self._segments))
        for j, i in enumerate(stages):
            x = self._segments[i](x)
            x = self.joins[j](x, taps[i]) if self.join == "concat" else x + taps[i]
        return self._run_tail(x)


class PartMirror(nn.Module):
    """A mirror that reads each explanation from the body region it names, and so shows where it read it.

    Fed by main network stage activations (``taps``: stage indices, by default the last two; the first sets the map's
    resolution: ``fine``, the last is ``coarse``, any between ``middle``), it builds a feature map of its own and
    predicts where each region is: one spatial softmax per region (``regions``, e.g. beak, eye, wing, or a shape's
    corners) plus one for the whole object. Explanation ``a`` reads its regions (``routes[a]``: indices into
    ``regions``; empty means the whole object) and its logit is

        sum over positions p of attention_a(p) * (w_a . features(p)) + b_a,

    a sum whose terms are the explanation's heatmap, exactly (:meth:`forward_maps`). The region maps can be trained
    on annotated part locations (:func:`region_targets`), so "bill shape: dagger" is read, and shown, at the bill.
    """

    def __init__(
        self,
        feature_info: Sequence[dict[str, Any]],
        n_explanations: int,
        regions: Sequence[str],
        routes: Sequence[Sequence[int]],
        width: int = 256,
        taps: Sequence[int] = (-2, -1),
        depth: int = 1,
        context: bool = False,
        stem: int | None = None,
        body: nn.Module | None = None,
    ) -> None:
        super().__init__()
        # body: convolution blocks of the mirror's own between the main network and this read-out (a shapes mirror's
        # blocks, :meth:`ShapesMirror.intermediates`); then ``feature_info`` and ``taps`` describe the body's stages
        self.body = body
        if len(routes) != n_explanations:
            raise MirrorError(f"{len(routes)} routes for {n_explanations} explanations; give one per explanation")
        bad = [r for route in routes for r in route if not 0 <= int(r) < len(regions)]
        if bad:
            raise MirrorError(f"route region {bad[0]} is out of range (0 to {len(regions) - 1})")
        stages = len(feature_info)
        chosen = [int(t) % stages if -stages <= int(t) < stages else None for t in taps]
        if len(chosen) < 2 or None in chosen or chosen != sorted(set(chosen)):  # type: ignore[type-var]
            raise MirrorError(
                f"a part mirror reads two or more distinct stages in order, of the main network's {stages}; got {taps}"
            )
        if depth < 1:
            raise MirrorError(f"depth must be at least 1, got {depth}")
        self.taps = chosen
        self.regions = list(regions)

        def project(stage: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(feature_info[stage]["num_chs"], width, 1, bias=False), nn.BatchNorm2d(width))

        self.fine, self.coarse = project(chosen[0]), project(chosen[-1])
        # stem: a finer stage (twice the map's resolution) read through a strided 3x3 convolution of the mirror's own
        self.stem_tap = None if stem is None else int(stem) % stages
        self.stem = None
        if stem is not None:
            if not self.stem_tap < chosen[0]:
                raise MirrorError(f"the stem stage {stem} must come before the first stage read ({chosen[0]})")
            self.stem = nn.Sequential(
                nn.Conv2d(feature_info[self.stem_tap]["num_chs"], width, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
            )
        self.middle = nn.ModuleList(project(stage) for stage in chosen[1:-1])
        layers: list[nn.Module] = [nn.ReLU()]
        for _ in range(depth):
            layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        self.mix = nn.Sequential(*layers)
        # context: what the whole input holds (mean and max of every stage read), added at every position, so that
        # what is read at a corner can depend on the whole drawing (three corners or four?)
        chs = sum(feature_info[stage]["num_chs"] for stage in chosen)
        self.context = nn.Linear(2 * chs, width) if context else None
        self.where = nn.Conv2d(width, len(regions) + 1, 1)  # the regions, then the whole bird
        route = torch.zeros(n_explanations, len(regions) + 1)
        for a, chosen in enumerate(routes):
            for r in chosen or [len(regions)]:
                route[a, int(r)] = 1.0
        self.register_buffer("route", route / route.sum(1, keepdim=True), persistent=False)
        self.routes = [list(map(int, r)) for r in routes]
        self.weight = nn.Parameter(torch.zeros(n_explanations, width))
        self.bias = nn.Parameter(torch.zeros(n_explanations))

    def features(self, taps: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.body is not None:
            taps = self.body.intermediates(taps)
        fine = taps[self.taps[0]]
        x = self.fine(fine)
        if self.stem is not None:
            x = x + self.stem(taps[self.stem_tap])
        for stage, project in zip([*self.taps[1:-1], self.taps[-1]], [*self.middle, self.coarse], strict=True):
            x = x + nn.functional.interpolate(
                project(taps[stage]), size=fine.shape[-2:], mode="bilinear", align_corners=False
            )
        x = self.mix(x)
        if self.context is not None:
            read = [taps[stage] for stage in self.taps]
            pooled = torch.cat([t.mean((2, 3)) for t in read] + [t.amax((2, 3)) for t in read], dim=1)
            x = x + self.context(pooled)[:, :, None, None]
        return x

    def forward_maps(
        self, image: torch.Tensor, taps: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(explanation logits (N, E), region logits (N, R + 1, h, w), contributions (N, E, h, w)).

        The contributions sum over positions to the logits less the bias."""
        del image
        x = self.features(taps)
        n, _, h, w = x.shape
        region_logits = self.where(x)
        attention = torch.softmax(region_logits.flatten(2), dim=-1)  # (N, R + 1, hw)
        routed = torch.einsum("ar,nrk->nak", self.route, attention)
        evidence = torch.einsum("ad,ndk->nak", self.weight, x.flatten(2))
        contributions = routed * evidence
        return contributions.sum(-1) + self.bias, region_logits, contributions.view(n, -1, h, w)

    def forward(self, image: torch.Tensor, taps: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.forward_maps(image, taps)[0]


def region_targets(
    points: torch.Tensor, regions: Sequence[int], box: torch.Tensor, size: tuple[int, int], input_size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each region is, as a distribution over the cells of a (h, w) map, from annotated points.

    ``points``: (N, P, 3) of x, y, visible in input pixels; ``regions[p]``: the region of point p; ``box``: (N, 4)
    of the bird's x, y, width, height. Each visible point inside the input adds a Gaussian of one cell's width; the
    last row is the whole bird (uniform over the cells inside its box). Returns (targets (N, R + 1, h * w) summing to
    1 where known, known (N, R + 1))."""
    h, w = size
    n_regions = max(regions) + 1
    cell_y, cell_x = input_size[0] / h, input_size[1] / w
    ys = ((torch.arange(h) + 0.5) * cell_y)[:, None].expand(h, w).reshape(-1)
    xs = ((torch.arange(w) + 0.5) * cell_x)[None, :].expand(h, w).reshape(-1)
    n = len(points)
    targets = torch.zeros(n, n_regions + 1, h * w)
    known = torch.zeros(n, n_regions + 1)
    sigma2 = 2 * (0.5 * (cell_x + cell_y)) ** 2
    for p, region in enumerate(regions):
        x, y = points[:, p, 0], points[:, p, 1]
        visible = (points[:, p, 2] > 0) & (x >= 0) & (x < input_size[1]) & (y >= 0) & (y < input_size[0])
        d2 = (xs[None] - points[:, p, 0:1]) ** 2 + (ys[None] - points[:, p, 1:2]) ** 2
        targets[:, region] += torch.exp(-d2 / sigma2) * visible[:, None]
        known[:, region] = torch.maximum(known[:, region], visible.float())
    x0, y0, bw, bh = box.unbind(1)
    inside = (
        (xs[None] >= x0[:, None]) & (xs[None] <= (x0 + bw)[:, None]) & (ys[None] >= y0[:, None])
        & (ys[None] <= (y0 + bh)[:, None])
    ).float()  # fmt: skip
    targets[:, n_regions] = inside
    known[:, n_regions] = (inside.sum(1) > 0).float()
    return targets / targets.sum(-1, keepdim=True).clamp(min=1e-8), known


def create_timm_main(model_name: str, n_classes: int, **model_kwargs: Any) -> nn.Module:
    """A timm main network with its classifier sized for ``n_classes`` (never downloads: pretrained=False)."""
    import timm

    try:
        return timm.create_model(model_name, pretrained=False, num_classes=n_classes, **model_kwargs)
    except Exception as err:
        raise MirrorError(f"timm cannot build {model_name!r}: {err}") from err


def timm_feature_info(model: nn.Module) -> list[dict[str, Any]]:
    fi = getattr(model, "feature_info", None)
    if not fi:
        raise MirrorError(f"{type(model).__name__} has no feature_info")
    return list(fi.get_dicts() if hasattr(fi, "get_dicts") else fi)


# ----------------------------------------------------------------------------------------------------------------------
# The pair
# ----------------------------------------------------------------------------------------------------------------------


class MirrorPair(nn.Module):
    """Main network + mirror. ``coupling`` says whether gradients reach the main network.

    ``"frozen"``: the main network runs in eval mode under ``torch.no_grad()`` and its parameters have
    ``requires_grad=False`` (the reference's second training step). ``"joint"``: both networks train together.

    ``flip_average``: every forward also runs the mirror image (flipped left to right) and returns the mean of the
    two logits, pooled features and maps (the flipped image's maps flipped back), so the maps still sum to the
    logits. A test view chosen on validation photos (a weights file's ``preprocessing["flip_average"]``).
    """

    def __init__(
        self, main: nn.Module, mirror: nn.Module, coupling: str = "frozen", flip_average: bool = False
    ) -> None:
        super().__init__()
        self.main = main
        self.mirror = mirror
        self.coupling = "joint"
        self.flip_average = bool(flip_average)
        self.set_coupling(coupling)

    def set_coupling(self, coupling: str) -> None:
        _check_choice("coupling", coupling, COUPLINGS)
        self.coupling = coupling
        for p in self.main.parameters():
            p.requires_grad_(coupling == "joint")
        if coupling == "frozen":
            self.main.eval()

    def train(self, mode: bool = True) -> "MirrorPair":
        super().train(mode)
        if self.coupling == "frozen":
            self.main.eval()  # keep BatchNorm statistics fixed too
        return self

    def forward_main(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Main logits and the per-stage activations the mirror reads."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.coupling == "joint"):
            final, taps = self.main.forward_intermediates(x)
            logits = self.main.forward_head(final)
        return logits, list(taps)

    def _views(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x.flip(-1)]) if self.flip_average else x

    def _merged(self, outputs: tuple[torch.Tensor, ...], n: int) -> tuple[torch.Tensor, ...]:
        """The mean over the two views of each output; maps (4-D) of the flipped view are flipped back first."""
        if not self.flip_average:
            return outputs
        return tuple((t[:n] + (t[n:].flip(-1) if t.ndim == 4 else t[n:])) / 2 for t in outputs)

    def forward_with_pooled(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(class logits, explanation logits, the main network's pooled features before its classifier), from one
        forward: what a scope gate sharing the main network's trunk reads (timm main networks only)."""
        n, x = len(x), self._views(x)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.coupling == "joint"):
            final, taps = self.main.forward_intermediates(x)
            pooled = self.main.forward_head(final, pre_logits=True)
            logits = self.main.get_classifier()(pooled)
        return self._merged((logits, self.mirror(x, list(taps)), pooled), n)  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (class logits, explanation logits)."""
        n, x = len(x), self._views(x)
        logits, taps = self.forward_main(x)
        return self._merged((logits, self.mirror(x, taps)), n)  # type: ignore[return-value]

    def forward_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(class logits, explanation logits, class maps (N, C, h, w), explanation maps (N, E, h', w')).

        Each map holds the terms of its logit's last layer, position by position: for a linear head on pooled
        features the class activation map, for a part mirror its routed contributions. They sum to the logit less
        its bias, so they show where the logit comes from, exactly."""
        n, x = len(x), self._views(x)
        return self._merged(self._forward_maps(x), n)  # type: ignore[return-value]

    def _forward_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        final, taps = self.main.forward_intermediates(x)
        logits = self.main.forward_head(final)
        class_maps = _head_maps(self.main, final)
        if isinstance(self.mirror, PartMirror):
            expl, _, expl_maps = self.mirror.forward_maps(x, list(taps))
        elif isinstance(self.mirror, TimmMirror):
            features = self.mirror.forward_features(x, list(taps))
            expl, expl_maps = self.mirror.net.forward_head(features), _head_maps(self.mirror.net, features)
        elif isinstance(self.mirror, ShapesMirror):
            features = self.mirror.features(list(taps))
            expl, expl_maps = (
                self.mirror.head(torch.flatten(features, 1)),
                _flat_linear_maps(self.mirror.head, features),
            )
        else:
            raise MirrorError(f"a {type(self.mirror).__name__} mirror has no maps")
        return logits, expl, class_maps, expl_maps

    def warm_start_from_main(self) -> list[str]:
        """Start the mirror from the trained main network where shapes allow (before its own training); returns
        what was copied. The mirror reads the main network's activations with the same kind of layers, so the main
        network's filters are a better start than random ones."""
        if isinstance(self.mirror, ShapesMirror):
            return _warm_start_shapes_mirror(self.main, self.mirror)
        if isinstance(self.mirror, TimmMirror):
            return _warm_start_timm_mirror(self.main, self.mirror)
        raise MirrorError(f"no warm start for a {type(self.mirror).__name__} mirror")


def _flat_linear_maps(head: nn.Linear, features: torch.Tensor) -> torch.Tensor:
    """The terms of a Linear layer on flattened features, summed over channels: (N, outputs, h, w)."""
    n, c, h, w = features.shape
    return torch.einsum("ochw,nchw->nohw", head.weight.view(-1, c, h, w), features)


def _head_maps(net: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """Class activation maps of a network whose head is average pooling and a linear classifier: (N, C, h, w)."""
    if isinstance(net, ShapesCNN):
        return _flat_linear_maps(net.head, features)
    pool = getattr(getattr(net, "global_pool", None), "pool_type", "avg")
    classifier = net.get_classifier() if hasattr(net, "get_classifier") else None
    if pool != "avg" or not isinstance(classifier, nn.Linear):
        raise MirrorError(f"{type(net).__name__}: maps need average pooling and a linear classifier")
    h, w = features.shape[-2:]
    return torch.einsum("cd,ndhw->nchw", classifier.weight, features) / (h * w)


def _warm_start_shapes_mirror(main: ShapesCNN, mirror: ShapesMirror) -> list[str]:
    """Copy main block i+1 into mirror block i (the mirror block that reads main block i's output), where shapes allow.

    The copied part maps the main activation the mirror block reads to the first output channels: for "concat" the
    input channels of the main tap (after the mirror's own channels), for "add" (and block 0) all input channels.
    """
    main_blocks, mirror_blocks = main.blocks, mirror.blocks
    copied = []
    with torch.no_grad():
        for i, mirror_block in enumerate(mirror_blocks):
            if i + 1 >= len(main_blocks):
                break
            src_conv, dst_conv = main_blocks[i + 1][0], mirror_block[0]
            if src_conv.kernel_size != dst_conv.kernel_size:
                continue
            out_chs = min(src_conv.out_channels, dst_conv.out_channels)
            if mirror.join == "concat" and i > 0:
                offset = dst_conv.in_channels - src_conv.in_channels  # the main tap's channels follow the mirror's
            else:
                offset = 0
            if offset < 0 or dst_conv.in_channels - offset != src_conv.in_channels:
                continue
            dst_conv.weight[:out_chs, offset : offset + src_conv.in_channels] = src_conv.weight[:out_chs]
            dst_conv.bias[:out_chs] = src_conv.bias[:out_chs]
            src_bn, dst_bn = main_blocks[i + 1][2], mirror_block[2]
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(dst_bn, name)[:out_chs] = getattr(src_bn, name)[:out_chs]
            copied.append(f"mirror.blocks.{i} <- main.blocks.{i + 1} ({out_chs} channels)")
    return copied


def _warm_start_timm_mirror(main: nn.Module, mirror: TimmMirror) -> list[str]:
    """Copy the main network's weights into the mirror's network wherever names and shapes agree (not the head)."""
    mirror_state = mirror.net.state_dict()
    main_state = main.state_dict()
    head = set(k for k in mirror_state if mirror_state[k].shape != main_state.get(k, torch.empty(0)).shape)
    copied = {k: main_state[k] for k in mirror_state if k in main_state and k not in head}
    mirror.net.load_state_dict(copied, strict=False)
    return sorted(copied)


def fuse_batchnorm(model: nn.Module) -> int:
    """For inference only: fold every BatchNorm that directly follows a convolution into that convolution's weights
    and bias, and return how many were folded.

    "Directly follows" means the two are neighbouring children of one module, convolution first, as timm's EfficientNet
    blocks (``conv_pw, bn1, conv_dw, bn2, ...``) and ``nn.Sequential(conv, bn)`` hold them; a convolution followed by
    something else first (the shapes networks' ReLU) is left alone. The BatchNorm is replaced by what it does after
    normalising: timm's ``BatchNormAct2d`` keeps its dropout and activation, a plain ``BatchNorm2d`` becomes nothing.
    The outputs stay the same up to float rounding and the BatchNorm passes are no longer run (13 to 16% of the
    birds pair and gate's time on this CPU, ``train/bench_app.py``). The model must be in eval mode, and its state
    dict changes: never train or save it.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for parent in list(model.modules()):
        names = list(parent._modules)
        for first, second in zip(names[:-1], names[1:], strict=True):
            conv, norm = parent._modules[first], parent._modules[second]
            if not (isinstance(conv, nn.Conv2d) and type(norm).__name__ in ("BatchNorm2d", "BatchNormAct2d")):
                continue
            if conv.training or norm.training or not norm.track_running_stats:  # type: ignore[union-attr]
                raise ValueError("fuse_batchnorm needs a network in eval mode with running statistics")
            setattr(parent, first, fuse_conv_bn_eval(conv, norm))  # type: ignore[arg-type]
            after = [norm.drop, norm.act] if type(norm).__name__ == "BatchNormAct2d" else []
            setattr(parent, second, nn.Sequential(*after) if after else nn.Identity())
            folded += 1
    return folded


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module behind torch.compile / DistributedDataParallel wrappers (what a weights file must hold)."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def state_dict_problem(expected: Mapping[str, torch.Tensor], tensors: Mapping[str, torch.Tensor]) -> str | None:
    """What keeps ``tensors`` from loading into a network whose state dict is ``expected``, in words, or None.

    Checked in network order (the first wrong layer is named, every time): the same names, the same shapes, and
    only finite values (a NaN or infinite weight would make every answer NaN)."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        return (
            f"tensors do not match its architecture (missing {missing[:5]}{'...' if len(missing) > 5 else ''},"
            f" unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})"
        )
    for key, wanted in expected.items():
        if tensors[key].shape != wanted.shape:
            return f"tensor {key} has shape {tuple(tensors[key].shape)}, architecture expects {tuple(wanted.shape)}"
    for key in expected:
        tensor = tensors[key]
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return f"tensor {key} holds NaN or infinite values; the file is damaged or its training diverged"
    return None


def _build_shapes(architecture: dict[str, Any], coupling: str, verify: bool) -> MirrorPair:
    del verify
    main = ShapesCNN(**architecture["main"])
    spec = architecture["mirror"]
    if spec.get("kind") == "parts":
        return MirrorPair(main, part_mirror(main.feature_info, spec["n_explanations"], spec), coupling)
    return MirrorPair(main, ShapesMirror(main.feature_info, **spec), coupling)


def _build_timm(architecture: dict[str, Any], coupling: str, verify: bool) -> MirrorPair:
    name = architecture["model_name"]
    kwargs = dict(architecture.get("model_kwargs", {}))
    main = create_timm_main(name, architecture["n_classes"], **kwargs)
    spec = architecture.get("mirror")
    if isinstance(spec, dict) and spec.get("kind") == "parts":
        return MirrorPair(main, part_mirror(timm_feature_info(main), architecture["n_explanations"], spec), coupling)
    if spec is not None:
        raise MirrorError(f"mirror kind {str(spec)[:40]!r} is not known; leave it out or use {{'kind': 'parts'}}")
    mirror = TimmMirror(
        name,
        timm_feature_info(main),
        architecture["n_explanations"],
        join=architecture.get("join", "add"),
        start=architecture.get("start", "stem"),
        verify=verify,
        **kwargs,
    )
    return MirrorPair(main, mirror, coupling)


def _shapes_outputs(architecture: Mapping[str, Any]) -> tuple[Any, Any] | None:
    main, mirror = architecture.get("main"), architecture.get("mirror")
    if isinstance(main, dict) and isinstance(mirror, dict):
        return main.get("n_classes"), mirror.get("n_explanations")
    return None


def _describe_mirror(spec: Any, plain: str) -> str:
    if isinstance(spec, dict) and spec.get("kind") == "parts":
        regions = ", ".join(spec.get("regions", []))
        return f"a part mirror that reads each explanation where its region is ({regions}; or the whole)"
    return plain


def _describe_shapes(architecture: Mapping[str, Any]) -> str:
    main, mirror = architecture.get("main", {}), architecture.get("mirror", {})
    plain = f"explanation network reading its block outputs (widths {mirror.get('widths')}, {mirror.get('join')} join)"
    if isinstance(mirror, dict) and isinstance(mirror.get("body"), dict):
        body = mirror["body"]
        plain = f"explanation network reading its block outputs (widths {body.get('widths')}, {body.get('join')} join)"
        return f"a shapes CNN (conv widths {main.get('widths')}) + {plain}, then {_describe_mirror(mirror, '')}"
    return f"a shapes CNN (conv widths {main.get('widths')}) + {_describe_mirror(mirror, plain)}"


def _describe_timm(architecture: Mapping[str, Any]) -> str:
    plain = f"a mirror of the same architecture reading its stage activations ({architecture.get('join', 'add')} join)"
    return (
        f"timm `{architecture.get('model_name')}` main network + {_describe_mirror(architecture.get('mirror'), plain)}"
    )


@dataclass(frozen=True)
class Family:
    """An architecture family a weights file can name: how to build its pair, how many classes and explanations its
    description declares (checked against the names on load), and one line a person can read."""

    build: Callable[[dict[str, Any], str, bool], MirrorPair]
    outputs: Callable[[Mapping[str, Any]], tuple[Any, Any] | None]
    describe: Callable[[Mapping[str, Any]], str]


FAMILIES: dict[str, Family] = {
    "shapes": Family(_build_shapes, _shapes_outputs, _describe_shapes),
    "timm": Family(_build_timm, lambda a: (a.get("n_classes"), a.get("n_explanations")), _describe_timm),
}


def build_pair(architecture: dict[str, Any], coupling: str = "frozen", verify: bool = True) -> MirrorPair:
    """Build an untrained pair from the JSON-able architecture description stored in a weights file."""
    family = FAMILIES.get(architecture.get("family"))  # type: ignore[arg-type]
    if family is None:
        raise ValueError(f"architecture family {architecture.get('family')!r} is not one of {tuple(FAMILIES)}")
    return family.build(architecture, coupling, verify)


def describe_architecture(architecture: Mapping[str, Any]) -> str:
    """One line a person can read, e.g. "timm `resnet50` main network + a mirror of the same architecture ..."."""
    family = FAMILIES.get(architecture.get("family"))  # type: ignore[arg-type]
    return family.describe(architecture) if family else json.dumps(dict(architecture))[:200]


MAX_PART_WIDTH, MAX_PART_DEPTH = 2048, 8


def part_mirror(feature_info: Sequence[dict[str, Any]], n_explanations: int, spec: dict[str, Any]) -> PartMirror:
    """A :class:`PartMirror` from its description in a weights file: ``{"kind": "parts", "regions", "routes",
    "width", "taps", "depth", "context", "stem", "body"}`` (the last six optional; ``body``: the keyword arguments
    of a :class:`ShapesMirror` whose blocks feed the read-out)."""
    width, depth = int(spec.get("width", 256)), int(spec.get("depth", 1))
    if not (
        1 <= width <= MAX_PART_WIDTH and 1 <= depth <= MAX_PART_DEPTH
    ):  # a file cannot make us allocate without end
        raise MirrorError(
            f"a part mirror of width {width} and depth {depth} is out of range (1 to {MAX_PART_WIDTH}, 1 to "
            f"{MAX_PART_DEPTH})"
        )
    body = None
    if spec.get("body") is not None:
        body = ShapesMirror(feature_info, n_explanations, **spec["body"])
        body.head = None  # the read-out replaces its head
        feature_info = body.feature_info
    return PartMirror(
        feature_info,
        n_explanations,
        regions=spec["regions"],
        routes=spec["routes"],
        width=width,
        taps=tuple(int(t) for t in spec.get("taps", (-2, -1))),
        depth=depth,
        context=bool(spec.get("context", False)),
        stem=None if spec.get("stem") is None else int(spec["stem"]),
        body=body,
    )


def part_mirror_spec(mirror: PartMirror) -> dict[str, Any]:
    """The description :func:`part_mirror` builds ``mirror`` from (for a weights file's architecture)."""
    return {
        "kind": "parts",
        "regions": list(mirror.regions),
        "routes": [list(r) for r in mirror.routes],
        "width": mirror.weight.shape[1],
        "taps": list(mirror.taps),
        "depth": (len(mirror.mix) - 1) // 3,
        "context": mirror.context is not None,
        "stem": mirror.stem_tap,
        "body": None if mirror.body is None else dict(mirror.body.spec),
    }


def reference_shapes_architecture() -> dict[str, Any]:
    """The reference Keras pair exactly as its code built it (1,459 + ~1,070 parameters, Keras-counted)."""
    return {
        "family": "shapes",
        "main": {"n_classes": 4, "widths": [5, 5, 5], "kernel": 4, "padding": 0, "in_chans": 1, "image_size": 64},
        "mirror": {"n_explanations": 5, "widths": [3, 3, 3], "kernel": 4, "padding": 0, "join": "concat"},
    }


def keras_parameter_count(module: nn.Module) -> int:
    """Parameters as Keras counts them: trainable weights plus BatchNorm's moving mean and variance."""
    params = sum(p.numel() for p in module.parameters())
    bn_stats = sum(
        m.running_mean.numel() + m.running_var.numel()
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
    )
    return params + bn_stats
