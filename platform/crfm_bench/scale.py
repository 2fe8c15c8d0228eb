"""Scale factors per spatial axis: ``2`` -> (2, 2, 2); ``"1x1x4"`` -> (1, 1, 4) (thick slices)."""

from __future__ import annotations

from crfm_bench.errors import InputError

Scale = tuple[int, ...]


def parse_scale(value: object, spatial_dims: int = 3, what: str = "scale") -> Scale:
    """Parse an integer scale per axis.

    Accepts an int (isotropic), a string ``"2"`` or ``"1x1x4"``, or a sequence of ints.
    Every factor must be an integer >= 1 and at least one must be > 1. Raises InputError
    naming ``what`` and the bad value otherwise (e.g. 0, 1.5, ``"1x1"`` for 3D).
    """
    raw = value
    if isinstance(value, bool):
        raise InputError(f"{what}: {raw!r} is not a scale")
    if isinstance(value, str):
        parts = value.lower().replace("×", "x").split("x")
    elif isinstance(value, int | float):
        parts = [value]
    else:
        try:
            parts = list(value)  # type: ignore[call-overload]
        except TypeError:
            raise InputError(f"{what}: {raw!r} is not a scale") from None
    factors: list[int] = []
    for p in parts:
        try:
            f = float(p)
        except (TypeError, ValueError):
            raise InputError(f"{what}: {raw!r} is not a scale (use e.g. 2 or 1x1x4)") from None
        if not f.is_integer() or f < 1:
            raise InputError(f"{what}: {raw!r} must be whole numbers >= 1 per axis (got {p})")
        factors.append(int(f))
    if len(factors) == 1:
        factors = factors * spatial_dims
    if len(factors) != spatial_dims:
        raise InputError(f"{what}: {raw!r} has {len(factors)} factors, need 1 or {spatial_dims}")
    if max(factors) < 2:
        raise InputError(f"{what}: {raw!r} does not reduce resolution (a factor must be >= 2)")
    return tuple(factors)


def format_scale(scale: Scale) -> str:
    """Canonical name: ``(2, 2, 2)`` -> ``"2"``, ``(1, 1, 4)`` -> ``"1x1x4"``."""
    if len(set(scale)) == 1:
        return str(scale[0])
    return "x".join(str(s) for s in scale)
