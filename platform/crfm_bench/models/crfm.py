r"""CRFM: cross-modality reference and feature mutual-projection (a reconstruction).

Lulu Wang, Wanqi Zhang, Wei Chen, Zhongshi He, Yuanyuan Jia, Jinglong Du, "Cross-Modality
Reference and Feature Mutual-Projection for 3D Brain MRI Image Super-Resolution", Journal of
Imaging Informatics in Medicine 37 (2024) 2838-2851, doi:10.1007/s10278-024-01139-1.

**No public code exists. This network is our reconstruction from the published description
(abstract and introduction); layer sizes, the attention layout and the loss weight are our
choices** (design: ``CRFM.md``). What the paper states and we keep: the gradients of the HR
reference transfer texture to the LR target features; a plug-in feature mutual-projection
(FMP) module captures cross-scale and cross-modality dependencies; parallel attentions fuse
all feature maps.

Inputs: LR target ``x`` (B, 1, *S/s), co-registered HR reference ``r`` (B, 1, *S), integer
``s`` per axis (anisotropic allowed, e.g. (1, 1, 4) for thick slices). 2D and 3D.

1. Reference gradient ``g = sqrt(sum_i (D_i r)^2 + 1e-6)`` (SPSR operator, in 3D).
2. Reference encoder, two stems: ``R`` from ``r`` only, kept on the HR grid (keys and
   values of FMP's cross-modality attention); ``G`` from ``g`` only, space-to-depth onto
   the LR grid (:class:`~crfm_bench.models.reference.ReferenceEncoder`).
3. Trunk: shallow conv, then K residual groups of RCAN channel-attention blocks; after each
   group the gradient injection ``conv1x1(concat(f, G))`` (SPSR-style) and
   :class:`~crfm_bench.models.fmp.FMP` with ``R``: CSNLN-style cross-scale attention and
   cross-modality attention, each producing an HR-grid estimate, mutual projection of the
   two, DBPN back-projection with error feedback, back onto the trunk grid (windowed
   attention, shifted windows on every second FMP, memory linear in the volume).
4. Parallel attention fusion of the K group outputs: channel attention (avg- and max-pooled
   descriptors, shared MLP) and spatial attention (channel mean and max, conv, sigmoid)
   side by side, summed, 1x1 conv; long skip from the shallow features.
5. Sub-pixel upsampling per axis, tail conv. The global residual (the LR input interpolated
   by origin-aligned tricubic) is the benchmark-wide option of every learned model
   (:class:`~crfm_bench.models.base.SRModel`), not CRFM's own.
6. Loss ``L1(sr, hr) + lambda_grad * L1(grad(sr), grad(hr))``, ``lambda_grad = 0.1``.

Ablations (same class, **capacity-matched**: each removes exactly one part and replaces
its parameters by plain residual blocks on the LR grid after each group
(:func:`~crfm_bench.models.capacity.residual_filler`), so the parameter count stays within
a few per mille of ``crfm``): ``crfm-noref`` (no reference: no ``R``, no ``G``; FMP keeps
its cross-scale estimate), ``crfm-nograd`` (no gradient branch), ``crfm-nofmp`` (no FMP),
``crfm-fmp-xscale`` (FMP with the cross-scale estimate only), ``crfm-fmp-xmod`` (FMP with
the cross-modality estimate only).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crfm_bench.models.base import SRModel
from crfm_bench.models.capacity import count_parameters, meta_parameters, residual_filler
from crfm_bench.models.conv import conv_nd, spatial_axes
from crfm_bench.models.fmp import FMP, check_fmp_options
from crfm_bench.models.gradient import gradient_magnitude
from crfm_bench.models.rcan import ResidualGroup
from crfm_bench.models.reference import ReferenceEncoder
from crfm_bench.models.registry import register_model, resolve_options
from crfm_bench.models.subpixel import SubPixelUpsampler

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "n_feats": 16,
        "n_groups": 2,
        "n_blocks": 2,
        "reduction": 2,
        "window": 8,
        "heads": 1,
        "lambda_grad": 0.1,
    },
    "base": {
        "n_feats": 64,
        "n_groups": 6,
        "n_blocks": 10,
        "reduction": 16,
        "window": 8,
        "heads": 4,
        "lambda_grad": 0.1,
    },
}


class ParallelAttentionFusion(nn.Module):
    """Channel and spatial attention side by side on concatenated features, summed, 1x1 conv.

    Channel branch (CBAM-style descriptors: Woo et al., ECCV 2018):
    ``x * sigmoid(MLP(avgpool x) + MLP(maxpool x))``. Spatial branch:
    ``x * sigmoid(conv([mean_c x, max_c x]))`` (7x7 in 2D, 5^3 in 3D).
    (B, C_in, *S) -> (B, C_out, *S).
    """

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, reduction: int
    ) -> None:
        super().__init__()
        hidden = max(1, in_channels // reduction)
        self.mlp = nn.Sequential(
            conv_nd(spatial_dims, in_channels, hidden, 1),
            nn.ReLU(inplace=True),
            conv_nd(spatial_dims, hidden, in_channels, 1),
        )
        nn.init.zeros_(self.mlp[0].bias)  # as in rcan.ChannelAttention: no dead ReLU at init
        self.spatial = conv_nd(spatial_dims, 2, 1, 7 if spatial_dims == 2 else 5)
        self.out = conv_nd(spatial_dims, in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axes = spatial_axes(x)
        avg = x.mean(dim=axes, keepdim=True)
        mx = x.amax(dim=axes, keepdim=True)
        channel = x * torch.sigmoid(self.mlp(avg) + self.mlp(mx))
        desc = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
        spatial = x * torch.sigmoid(self.spatial(desc))
        return self.out(channel + spatial)


class CRFM(SRModel):
    """The CRFM reconstruction; ``use_ref``/``use_grad``/``use_fmp``/``fmp_cross_scale``/
    ``fmp_cross_modality`` select the ablations, and ``capacity`` (a parameter count) adds
    plain residual blocks until the network has that many parameters.

    Channels-last in 3D (:attr:`SRModel.channels_last_dims`): oneDNN's 3D convolutions skip
    their layout reorders and the window partition of the attention moves contiguous channel
    runs (measured: about 7 % less CPU time per training step of the tiny model,
    ``benchmarks/attention.py``)."""

    channels_last_dims = (3,)

    def __init__(
        self,
        spatial_dims: int,
        scale: object,
        n_feats: int = 64,
        n_groups: int = 6,
        n_blocks: int = 10,
        reduction: int = 16,
        window: int = 8,
        heads: int = 4,
        lambda_grad: float = 0.1,
        use_ref: bool = True,
        use_grad: bool = True,
        use_fmp: bool = True,
        fmp_cross_scale: bool = True,
        fmp_cross_modality: bool = True,
        capacity: int | None = None,
    ) -> None:
        super().__init__(spatial_dims, scale)
        self.needs_reference = use_ref
        self.use_grad = use_ref and use_grad
        self.use_fmp = use_fmp
        self.lambda_grad = lambda_grad
        cross_modality = use_ref and fmp_cross_modality
        if use_fmp and not (fmp_cross_scale or cross_modality):
            raise ValueError("CRFM: an FMP needs the cross-scale or the cross-modality estimate")
        c = n_feats
        with_features = use_fmp and cross_modality
        self.encoder = (
            ReferenceEncoder(
                spatial_dims,
                self.scale,
                c,
                with_gradient=self.use_grad,
                with_features=with_features,
            )
            if use_ref and (with_features or self.use_grad)
            else None
        )
        self.head = conv_nd(spatial_dims, 1, c)
        self.groups = nn.ModuleList(
            ResidualGroup(spatial_dims, c, n_blocks, reduction) for _ in range(n_groups)
        )
        self.inject = (
            nn.ModuleList(conv_nd(spatial_dims, 2 * c, c, 1) for _ in range(n_groups))
            if self.use_grad
            else None
        )
        self.fmp = (
            nn.ModuleList(
                FMP(
                    spatial_dims,
                    c,
                    self.scale,
                    window,
                    heads,
                    cross_scale=fmp_cross_scale,
                    cross_modality=cross_modality,
                    shift=k % 2 == 1,
                )
                for k in range(n_groups)
            )
            if use_fmp
            else None
        )
        self.fusion = ParallelAttentionFusion(spatial_dims, n_groups * c, c, reduction)
        self.upsampler = SubPixelUpsampler(spatial_dims, c, self.scale)
        self.tail = conv_nd(spatial_dims, c, 1)
        missing = 0 if capacity is None else max(0, capacity - count_parameters(self))
        self.fill = nn.ModuleList(
            residual_filler(spatial_dims, c, missing // n_groups) for _ in range(n_groups)
        )

    def upsample(self, lr: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor:
        fmt = self.memory_format()
        lr = lr.contiguous(memory_format=fmt)
        if ref is not None:
            ref = ref.contiguous(memory_format=fmt)
        ref_feats = grad_feats = None
        if self.encoder is not None and ref is not None:
            ref_feats, grad_feats = self.encoder(ref)
        shallow = self.head(lr)
        f = shallow
        outputs = []
        for k, group in enumerate(self.groups):
            f = self.fill[k](group(f))
            if self.inject is not None:
                f = self.inject[k](torch.cat([f, grad_feats], 1))
            if self.fmp is not None:
                f = self.fmp[k](f, ref_feats)
            outputs.append(f)
        f = shallow + self.fusion(torch.cat(outputs, 1))
        return self.tail(self.upsampler(f))

    def loss(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """``L1(sr, hr) + lambda_grad * L1(|grad sr|, |grad hr|)`` (SPSR gradient operator)."""
        l1 = F.l1_loss(sr, hr)
        if self.lambda_grad == 0:
            return l1
        return l1 + self.lambda_grad * F.l1_loss(gradient_magnitude(sr), gradient_magnitude(hr))


def _build(
    name: str,
    spatial_dims: int,
    scale: tuple[int, ...],
    size: str,
    overrides: dict[str, Any],
    **flags: bool,
) -> CRFM:
    """Build a variant; an ablation (``flags``) is filled up to the parameters of ``crfm``
    with the same options, size and scale."""
    options = resolve_options(name, PRESETS, size, overrides)
    check_fmp_options(name, options)
    capacity = None
    if flags:
        capacity = meta_parameters(lambda: CRFM(spatial_dims, scale, **options))
    return CRFM(spatial_dims, scale, **options, **flags, capacity=capacity)


_CITATION = "Wang et al., J Imaging Inform Med 2024, doi:10.1007/s10278-024-01139-1"

# name -> (description, needs_reference, ablation flags)
VARIANTS: dict[str, tuple[str, bool, dict[str, bool]]] = {
    "crfm": ("CRFM (our reconstruction): reference gradients + FMP + parallel attention", True, {}),
    "crfm-noref": (
        "CRFM ablation without the reference (no R, no G; FMP cross-scale only), capacity-matched",
        False,
        {"use_ref": False},
    ),
    "crfm-nograd": (
        "CRFM ablation without the reference-gradient branch, capacity-matched",
        True,
        {"use_grad": False},
    ),
    "crfm-nofmp": (
        "CRFM ablation without the FMP modules, capacity-matched",
        True,
        {"use_fmp": False},
    ),
    "crfm-fmp-xscale": (
        "CRFM ablation: FMP with the cross-scale estimate only, capacity-matched",
        True,
        {"fmp_cross_modality": False},
    ),
    "crfm-fmp-xmod": (
        "CRFM ablation: FMP with the cross-modality estimate only, capacity-matched",
        True,
        {"fmp_cross_scale": False},
    ),
}


def _register(name: str, description: str, needs_reference: bool, flags: dict[str, bool]) -> None:
    def factory(spatial_dims: int, scale: tuple[int, ...], size: str, **overrides: Any) -> SRModel:
        return _build(name, spatial_dims, scale, size, overrides, **flags)

    factory.__name__ = name.replace("-", "_")
    register_model(
        name,
        family="crfm",
        needs_reference=needs_reference,
        trainable=True,
        description=description,
        citation=_CITATION,
    )(factory)


for _name, (_description, _needs_reference, _flags) in VARIANTS.items():
    _register(_name, _description, _needs_reference, _flags)
