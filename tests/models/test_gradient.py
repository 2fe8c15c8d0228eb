from __future__ import annotations

import torch

from crfm_bench.models.gradient import gradient_magnitude


def test_gradient_of_a_3d_ramp_is_constant_in_the_interior() -> None:
    z, y, x = torch.meshgrid(*(torch.arange(8.0, dtype=torch.float64),) * 3, indexing="ij")
    ramp = (3 * z + 4 * y + 0 * x)[None, None]
    g = gradient_magnitude(ramp, eps=0.0)
    # central difference over two voxels: (2*3, 2*4, 0) -> magnitude 10
    torch.testing.assert_close(g[..., 1:-1, 1:-1, 1:-1], torch.full((1, 1, 6, 6, 6), 10.0,
                               dtype=torch.float64))  # fmt: skip
    # replicate border: one-sided difference of one voxel along z -> sqrt(3^2 + 8^2)
    torch.testing.assert_close(g[0, 0, 0, 3, 3], torch.tensor(73.0, dtype=torch.float64).sqrt())


def test_gradient_of_a_constant_is_sqrt_eps_in_2d() -> None:
    g = gradient_magnitude(torch.ones(2, 1, 5, 5), eps=1e-6)
    torch.testing.assert_close(g, torch.full_like(g, 1e-3))
