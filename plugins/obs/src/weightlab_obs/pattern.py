"""The sparsity pattern (``unstructured`` or ``N:M``) and how a layer's target count of zeros is
split over parts of it (column blocks, conv groups, rows). No torch here."""

from __future__ import annotations

from weightlab.pruners.base import parse_nm

UNSTRUCTURED = "unstructured"


def parse_pattern(text: str) -> tuple[int, int] | None:
    """None for ``unstructured``; (N, M) for ``N:M`` — N of every M consecutive input weights
    of a row are zero (SparseGPT's ``prunen:prunem``; 2:4 keeps 2 of 4; core's
    :func:`weightlab.pruners.parse_nm`). Raises ValueError naming the value and what is
    expected."""
    if text == UNSTRUCTURED:
        return None
    nm = parse_nm(text)
    if nm is None:
        raise ValueError(f"{text!r}: expected 'unstructured' or 'N:M' (N of every M "
                         f"consecutive inputs zero), e.g. '2:4'")
    return nm


def check_pattern(text: str) -> None:
    """The parameter's ``check``: ValueError for anything :func:`parse_pattern` refuses."""
    parse_pattern(text)


def split_target(total: int, sizes: list[int], old: list[int]) -> list[int]:
    """Zeros per part so that the parts reach ``total`` exactly, as evenly as the sizes allow:
    part b gets round(total · (end of b) / Σsizes) minus what the parts before it took, but at
    least its ``old`` (already pruned) zeros, at most its size, and never so many that the old
    zeros of the later parts no longer fit. Requires Σold ≤ total ≤ Σsizes."""
    n = sum(sizes)
    if not sum(old) <= total <= n:
        raise ValueError(f"cannot split {total} zeros over parts of sizes {sizes} "
                         f"with {sum(old)} already pruned")
    out, taken, end, old_after = [], 0, 0, sum(old)
    for size, o in zip(sizes, old, strict=True):
        end += size
        old_after -= o
        want = round(total * end / n) - taken
        z = max(o, min(want, size, total - taken - old_after))
        out.append(z)
        taken += z
    return out


def level_counts(total: int, old: list[int], size: int) -> list[int]:
    """Zeros per row, water-filled: every row at max(old_r, L) for the largest level L that fits
    ``total``; the rows at the level take the rest one each, in index order. Requires
    Σold ≤ total ≤ rows · size."""
    rows = len(old)
    if not sum(old) <= total <= rows * size:
        raise ValueError(f"cannot spread {total} zeros over {rows} rows of {size}")
    lo, hi = 0, size
    while lo < hi:  # largest L with Σ max(old_r, L) ≤ total
        mid = (lo + hi + 1) // 2
        if sum(max(o, mid) for o in old) <= total:
            lo = mid
        else:
            hi = mid - 1
    counts = [max(o, lo) for o in old]
    rest = total - sum(counts)
    for r in range(rows):
        if rest == 0:
            break
        if counts[r] == lo and lo < size:
            counts[r] += 1
            rest -= 1
    return counts
