r"""Image gradient magnitude, the texture signal CRFM transfers from the reference.

.. math:: g = \sqrt{\textstyle\sum_i (D_i x)^2 + \varepsilon}, \quad
          (D_i x)[n] = x[n + e_i] - x[n - e_i]

with fixed central differences along each spatial axis and replicate padding at the
border. This is the gradient operator of SPSR (Ma et al., "Structure-Preserving Super
Resolution with Gradient Guidance", CVPR 2020: kernel ``[-1, 0, 1]`` without the 1/2),
extended to 3D. Used by the CRFM reference branch and by its gradient loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gradient_magnitude(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Gradient magnitude of ``x`` (B, C, *S) with 2 or 3 spatial axes; same shape out.

    Units: intensity per voxel (difference over two voxels, not divided by 2).
    """
    nd = x.ndim - 2
    if nd not in (2, 3):
        raise ValueError(
            f"gradient_magnitude: expected (B, C, *S) with 2 or 3 spatial axes, "
            f"got {tuple(x.shape)}"
        )
    padded = F.pad(x, [1, 1] * nd, mode="replicate")
    total = torch.zeros_like(x)
    for axis in range(2, x.ndim):
        n = x.shape[axis]
        d = padded.narrow(axis, 2, n) - padded.narrow(axis, 0, n)
        for other in range(2, x.ndim):  # drop the padding of the other axes
            if other != axis:
                d = d.narrow(other, 1, x.shape[other])
        total = total + d * d
    return torch.sqrt(total + eps)
