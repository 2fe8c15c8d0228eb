"""The base class every super-resolution model derives from.

A template method (the fastMRI habit): :meth:`SRModel.forward` validates the inputs once,
calls :meth:`SRModel.upsample`, the one method a model implements, and adds the global
residual if the model has one.

The global residual (``residual="tricubic"``: the LR input interpolated by origin-aligned
tricubic, added to the network's output) is a benchmark-wide option that every learned
model gets alike, set in one place (:func:`crfm_bench.models.registry.create_model`): a
model with a skip the others lack would win by the skip, not by its architecture.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from crfm_bench.errors import InputError
from crfm_bench.models.conv import check_spatial_dims
from crfm_bench.models.interpolate import origin_aligned_upsample
from crfm_bench.scale import parse_scale

RESIDUALS = ("tricubic", "none")


class SRModel(nn.Module):
    """A super-resolution network ``forward(lr, ref=None) -> sr``.

    Tensors are ``(B, 1, *spatial)`` with ``spatial_dims`` (2 or 3) spatial axes; the output
    has spatial shape ``lr * scale``. A reference model takes ``ref``, the co-registered HR
    image of another contrast, shape ``(B, 1, *(lr * scale))``; reference-free models ignore
    it. Inputs are already intensity-normalised (roughly [0, 1]).

    Attributes: ``name`` (registry name, set by ``create_model``), ``needs_reference``,
    ``trainable``, ``scale`` (int per axis), ``spatial_dims``, ``in_channels`` (1),
    ``residual`` (``"tricubic"``: the interpolated LR input is added to the output of
    :meth:`upsample`; ``"none"``: the network predicts the whole image).
    """

    needs_reference: bool = False
    trainable: bool = True
    in_channels: int = 1
    residual: str = "none"
    #: The spatial dims (2, 3) in which the model runs channels-last: its parameters are laid
    #: out so (``channels_last``, ``channels_last_3d`` in 3D), and so every convolution runs
    #: in that layout. Set by a model whose training step measured faster so on the CPU
    #: (``benchmarks/roofline.py``, the levers table). Applied once, by
    #: :func:`~crfm_bench.models.registry.create_model`; the arithmetic is the same, the
    #: float rounding not.
    channels_last_dims: tuple[int, ...] = ()

    def __init__(self, spatial_dims: int, scale: object) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.scale: tuple[int, ...] = parse_scale(scale, self.spatial_dims)
        self.name = type(self).__name__.lower()

    def set_residual(self, residual: str) -> None:
        """Choose the global residual (one of :data:`RESIDUALS`); InputError otherwise."""
        if residual not in RESIDUALS:
            raise InputError(
                f"model '{self.name}': residual {residual!r} is not one of {', '.join(RESIDUALS)}"
            )
        self.residual = residual

    def upsample(self, lr: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor:
        """Compute the SR image from validated inputs (implemented by each model)."""
        raise NotImplementedError

    def forward(self, lr: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        self.check_inputs(lr, ref)
        out = self.upsample(lr, ref if self.needs_reference else None)
        if self.residual == "tricubic":
            out = out + origin_aligned_upsample(lr, self.scale, "cubic")
        return out

    def output_shape(self, lr_shape: Sequence[int]) -> tuple[int, ...]:
        """Spatial shape of the output for an LR spatial shape."""
        return tuple(n * s for n, s in zip(lr_shape, self.scale, strict=True))

    def check_inputs(self, lr: torch.Tensor, ref: torch.Tensor | None) -> None:
        """Raise InputError (one line naming the model) if ``lr``/``ref`` do not fit."""
        nd = self.spatial_dims
        if lr.ndim != nd + 2 or lr.shape[1] != self.in_channels:
            raise InputError(
                f"model '{self.name}': lr has shape {tuple(lr.shape)}, "
                f"expected (B, {self.in_channels}, {', '.join('*' * nd)})"
            )
        if not self.needs_reference:
            return
        if ref is None:
            raise InputError(f"model '{self.name}' needs a reference image")
        want = (lr.shape[0], self.in_channels, *self.output_shape(lr.shape[2:]))
        if tuple(ref.shape) != want:
            raise InputError(
                f"model '{self.name}': ref has shape {tuple(ref.shape)}, expected {want} "
                f"(HR grid = lr x scale {self.scale})"
            )

    def loss(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """Training loss (mean absolute error; models may add terms)."""
        return F.l1_loss(sr, hr)

    def loss_description(self) -> str:
        """The loss of :meth:`loss` in words (a subclass that changes the loss says so here)."""
        return "L1"

    def memory_format(self) -> torch.memory_format:
        """The layout of the model's convolution weights (:attr:`channels_last_dims`)."""
        if self.spatial_dims not in self.channels_last_dims:
            return torch.contiguous_format
        return torch.channels_last if self.spatial_dims == 2 else torch.channels_last_3d

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def extra_repr(self) -> str:
        return f"spatial_dims={self.spatial_dims}, scale={self.scale}, residual={self.residual}"
