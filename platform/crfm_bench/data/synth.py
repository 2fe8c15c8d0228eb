r"""The embedded dataset: multi-contrast subjects synthesised from the ICBM 2009a template.

No registry package ships real, co-registered T1/T2/PD volumes of one brain, but the
``nilearn`` wheel ships the ICBM 2009a symmetric template (T1 and grey/white-matter
probability maps, 1 mm, RAS). We read those files by path (no fetcher, no network) and
synthesise contrasts with the spin-echo signal equation, summed over tissues :math:`t`:

.. math::

    S = \sum_t f_t \, PD_t \, (1 - e^{-TR/T1_t}) \, e^{-TE/T2_t}

and FLAIR by inversion recovery, :math:`PD \, |1 - 2e^{-TI/T1} + e^{-TR/T1}| \, e^{-TE/T2}`.
Tissue parameters are BrainWeb's 1.5 T values (3 T nominal values optional). Each subject
gets a smooth random deformation of the tissue maps (identical for all its contrasts),
jittered tissue parameters, a smooth multiplicative bias field per contrast, Rician noise
at a set SNR and optional lesions. Everything is seeded: the same parameters give the same
bytes.

Limits: the template is an average of many brains, so it holds less fine detail than one
real scan; it is skull-stripped; its maps are uint8-quantised.

Template data notice: Copyright (C) 1993-2004 Louis Collins, McConnell Brain Imaging
Centre, Montreal Neurological Institute, McGill University. Permission to use, copy,
modify, and distribute this software and its documentation for any purpose and without
fee is hereby granted, provided that the above copyright notice appear in all copies.
"""

from __future__ import annotations

import functools
import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from crfm_bench.atomic import atomic_dir
from crfm_bench.config import SynthConfig
from crfm_bench.data.manifest import assign_splits, save_hr_entry, write_manifest
from crfm_bench.errors import MissingInputError

TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}

# (T1 ms, T2 ms, PD) per tissue. 1.5 T: BrainWeb simulator tables; 3 T: nominal literature values.
TISSUES = {
    1.5: {"csf": (2569.0, 329.0, 1.0), "gm": (833.0, 83.0, 0.86), "wm": (500.0, 70.0, 0.77)},
    3.0: {"csf": (4160.0, 2100.0, 1.0), "gm": (1330.0, 99.0, 0.86), "wm": (830.0, 69.0, 0.77)},
}
# Sequence timings in ms: (TR, TE, TI). FLAIR's TI is the CSF null point of the field
# strength (see flair_null_ti): a fixed 2500 ms nulls CSF at 3 T but leaves it brighter
# than white matter with the 1.5 T CSF T1 of 2569 ms.
SEQUENCES = {
    "T1w": (500.0, 15.0, None),
    "T2w": (4000.0, 100.0, None),
    "PDw": (4000.0, 15.0, None),
    "FLAIR": (9000.0, 100.0, "null-csf"),
}


def flair_null_ti(field_strength: float, tr: float = 9000.0) -> float:
    """Inversion time (ms) that nulls CSF: ``T1_csf * ln(2 / (1 + exp(-TR / T1_csf)))``."""
    t1 = TISSUES[field_strength]["csf"][0]
    return float(t1 * np.log(2.0 / (1.0 + np.exp(-tr / t1))))


class Subject(NamedTuple):
    """One synthetic subject: ``images`` per contrast and tissue ``fractions`` (X,Y,Z) float32,
    boolean brain ``mask`` and the RAS ``affine`` (mm)."""

    images: dict[str, np.ndarray]
    fractions: dict[str, np.ndarray]
    mask: np.ndarray
    affine: np.ndarray


@dataclass(frozen=True)
class Template:
    """Tissue fractions ``gm``, ``wm``, ``csf`` in [0, 1], boolean ``mask``, and ``affine``."""

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    mask: np.ndarray
    affine: np.ndarray


def template_path(name: str) -> Path:
    """Path of one ICBM 2009a file inside the installed nilearn package."""
    path = Path(
        str(importlib.resources.files("nilearn") / "datasets" / "data" / TEMPLATE_FILES[name])
    )
    if not path.is_file():
        raise MissingInputError(
            f"{path}: ICBM 2009a template file not found in the nilearn package"
        )
    return path


@functools.lru_cache(maxsize=2)
def load_template() -> Template:
    """The 1 mm template maps (DATA.md recipe, step 1)."""
    imgs = {k: nib.load(str(template_path(k))) for k in TEMPLATE_FILES}
    t1 = np.asarray(imgs["t1"].dataobj, dtype=np.float32) / 255.0
    gm = np.asarray(imgs["gm"].dataobj, dtype=np.float32) / 255.0
    wm = np.asarray(imgs["wm"].dataobj, dtype=np.float32) / 255.0
    mask = ndimage.binary_fill_holes(t1 > 0.02)
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * mask
    return Template(gm * mask, wm * mask, csf.astype(np.float32), mask, imgs["t1"].affine)


def output_grid(cfg: SynthConfig) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and RAS affine of the output grid: isotropic ``spacing_mm``, cropped to the brain.

    The grid covers the template's brain bounding box plus ``crop_margin_mm`` (or the whole
    template field of view without cropping), its shape rounded up to ``shape_multiple`` so
    that integer scales divide it, centred on the box.
    """
    tpl = load_template()
    if cfg.crop_to_brain:
        idx = np.argwhere(tpl.mask)
        lo_vox, hi_vox = idx.min(0), idx.max(0)
    else:
        lo_vox, hi_vox = np.zeros(3), np.array(tpl.mask.shape) - 1
    lo = nib.affines.apply_affine(tpl.affine, lo_vox) - cfg.crop_margin_mm
    hi = nib.affines.apply_affine(tpl.affine, hi_vox) + cfg.crop_margin_mm
    sp = cfg.spacing_mm
    m = cfg.shape_multiple
    shape = tuple(
        int(np.ceil((np.ceil((h - l) / sp) + 1) / m) * m) for l, h in zip(lo, hi, strict=True)
    )
    centre = (lo + hi) / 2.0
    origin = centre - sp * (np.array(shape) - 1) / 2.0
    affine = np.diag([sp, sp, sp, 1.0])
    affine[:3, 3] = origin
    return shape, affine


@functools.lru_cache(maxsize=4)
def _smoothed_maps(spacing_mm: float) -> tuple[np.ndarray, ...]:
    """Template maps low-passed for the output spacing (partial-volume averaging)."""
    tpl = load_template()
    sigma = max(0.0, (spacing_mm - 1.0)) / 2.355 * 1.2
    maps = (tpl.gm, tpl.wm, tpl.csf, tpl.mask.astype(np.float32))
    if sigma == 0:
        return maps
    return tuple(ndimage.gaussian_filter(m, sigma, mode="constant") for m in maps)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], cells: float) -> np.ndarray:
    """Zero-mean unit-std smooth random field: Gaussian noise on a coarse grid, cubic upsampling.

    The upsampling is ``ndimage.zoom(coarse, order=3)``, applied as one 1D interpolation matrix
    per axis (the tensor-product spline is separable, so this is the same field to ~1e-14 and
    about 40 times faster than zooming the volume: 7 fields per subject were 3/4 of the
    synthesis time).
    """
    coarse = tuple(max(2, int(np.ceil(n / cells)) + 2) for n in shape)
    matrices = [_zoom_matrix(c, n) for n, c in zip(shape, coarse, strict=True)]
    field = rng.standard_normal(coarse)
    for axis, matrix in enumerate(matrices):
        field = np.moveaxis(np.tensordot(matrix, field, axes=([1], [axis])), 0, axis)
    field -= field.mean()
    return field / (field.std() + 1e-12)


@functools.lru_cache(maxsize=64)
def _zoom_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in): column j is ``ndimage.zoom`` (cubic) of the j-th unit vector to n_out."""
    eye = np.eye(n_in)
    return np.stack([ndimage.zoom(eye[j], n_out / n_in, order=3) for j in range(n_in)], axis=1)


def _lesion_map(
    rng: np.random.Generator, cfg: SynthConfig, wm: np.ndarray, spacing: float
) -> np.ndarray:
    """Soft blobs (values in [0, 1]) centred in white matter."""
    out = np.zeros(wm.shape, dtype=np.float32)
    candidates = np.argwhere(wm > 0.8)
    if len(candidates) == 0:
        return out
    grid = np.indices(wm.shape, dtype=np.float32)
    for _ in range(int(rng.integers(1, cfg.lesions.max_count + 1))):
        centre = candidates[rng.integers(len(candidates))]
        radius = rng.uniform(*cfg.lesions.radius_mm) / spacing
        d2 = sum((grid[i] - centre[i]) ** 2 for i in range(3)) / radius**2
        out = np.maximum(out, 1.0 / (1.0 + np.exp((np.sqrt(d2) - 1.0) * 6.0)))
    return out


def signal(
    contrast: str, t1: np.ndarray, t2: np.ndarray, pd: np.ndarray, field_strength: float = 1.5
) -> np.ndarray:
    """Steady-state signal of one tissue (arrays broadcast) for a named sequence (SEQUENCES)."""
    tr, te, ti = SEQUENCES[contrast]
    if ti == "null-csf":
        ti = flair_null_ti(field_strength, tr)
    if ti is None:
        return pd * (1.0 - np.exp(-tr / t1)) * np.exp(-te / t2)
    return pd * np.abs(1.0 - 2.0 * np.exp(-ti / t1) + np.exp(-tr / t1)) * np.exp(-te / t2)


def synthesize_subject(cfg: SynthConfig, index: int) -> Subject:
    """Subject number ``index``, seeded by ``(cfg.seed, index)``."""
    rng = np.random.default_rng([cfg.seed, index])
    shape, affine = output_grid(cfg)
    tpl = load_template()
    gm_t, wm_t, csf_t, mask_t = _smoothed_maps(cfg.spacing_mm)

    # Output voxel -> world -> template voxel, plus a smooth displacement (same for all contrasts).
    vox = np.indices(shape, dtype=np.float64).reshape(3, -1)
    world = affine[:3, :3] @ vox + affine[:3, 3:4]
    if cfg.deform_mm > 0:
        cells = cfg.deform_smoothness_mm / cfg.spacing_mm
        for i in range(3):
            world[i] += cfg.deform_mm * _smooth_field(rng, shape, cells).reshape(-1)
    inv = np.linalg.inv(tpl.affine)
    coords = inv[:3, :3] @ world + inv[:3, 3:4]
    sample = lambda m: ndimage.map_coordinates(m, coords, order=1, mode="constant").reshape(shape)  # noqa: E731
    gm, wm, csf, mask = (sample(m).astype(np.float32) for m in (gm_t, wm_t, csf_t, mask_t))
    mask = mask > 0.5
    total = gm + wm + csf
    scale = np.where(total > 1.0, 1.0 / np.maximum(total, 1e-6), 1.0)
    fractions = {"gm": gm * scale, "wm": wm * scale, "csf": csf * scale}

    base = TISSUES[cfg.field_strength]
    params = {
        t: tuple(v * (1.0 + cfg.param_jitter * rng.standard_normal()) for v in base[t])
        for t in base
    }
    if cfg.lesions.enabled:
        lesion = _lesion_map(rng, cfg, fractions["wm"], cfg.spacing_mm)
        share = lesion * (fractions["wm"] + fractions["gm"])
        fractions["gm"] = fractions["gm"] * (1 - lesion)
        fractions["wm"] = fractions["wm"] * (1 - lesion)
        fractions["lesion"] = share
        t1w, t2w, pdw = params["wm"]
        params["lesion"] = (
            t1w * cfg.lesions.t1_factor,
            t2w * cfg.lesions.t2_factor,
            min(1.0, pdw * 1.15),
        )

    images: dict[str, np.ndarray] = {}
    for contrast in cfg.contrasts:
        s = sum(fractions[t] * signal(contrast, *params[t], cfg.field_strength) for t in fractions)
        if cfg.bias_strength > 0:
            s = s * np.exp(cfg.bias_strength * _smooth_field(rng, shape, 64.0 / cfg.spacing_mm))
        if cfg.snr is not None:
            sigma = float(s[mask].mean()) / cfg.snr
            s = np.hypot(s + sigma * rng.standard_normal(shape), sigma * rng.standard_normal(shape))
        images[contrast] = s.astype(np.float32)
    return Subject(images, fractions, mask, affine)


def synthesize_dataset(
    cfg: SynthConfig, out_dir: str | Path, progress: bool = False
) -> pd.DataFrame:
    """Write the synthetic dataset to ``out_dir`` (replaced whole, atomically); return the manifest.

    Files: ``sub-XXX_<contrast>.nii.gz`` (float32, RAS affine), ``manifest.csv``
    (see :mod:`crfm_bench.data.manifest`) and ``fingerprint.json``.
    """
    from crfm_bench.data.fingerprint import write_fingerprint

    out_dir = Path(out_dir)
    ids = [f"sub-{i:03d}" for i in range(cfg.n_subjects)]
    splits = assign_splits(ids, cfg.n_val, cfg.n_test, cfg.seed)
    recipe = {"generator": "icbm2009a", **cfg.model_dump(mode="json")}
    rows = []
    with atomic_dir(out_dir) as stage:
        iterator = _progress(range(cfg.n_subjects), "synthesising subjects", progress)
        for i in iterator:
            subject = synthesize_subject(cfg, i)
            affine = subject.affine
            for contrast, data in subject.images.items():
                rows.append(
                    save_hr_entry(
                        stage,
                        ids[i],
                        contrast,
                        data,
                        affine,
                        [cfg.spacing_mm] * 3,
                        split=splits[ids[i]],
                        source="synthetic",
                        resampled=False,
                        origin=f"icbm2009a:{cfg.field_strength}T:seed={cfg.seed}:index={i}",
                        recipe=recipe,
                    )
                )
        manifest = pd.DataFrame(rows)
        write_manifest(manifest, stage / "manifest.csv")
        write_fingerprint(stage)
    return manifest


def _progress(iterable, description: str, enabled: bool):
    if not enabled:
        return iterable
    from rich.progress import track

    return track(iterable, description=description, transient=True)
