"""Label maps to exact pixel-edge polygons and back: the geometry under the GeoJSON format.

:func:`label_polygons` traces every 4-connected single-class region of a label map as a shell and its holes
along pixel edges; :func:`paint_polygons` rasterises such rings again (pixel-centre rule, winding number),
so a traced map paints back to the identical map.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["label_polygons", "paint_polygons"]


def _run_bounds(start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs along axis 1 from start/end flags: (row, first column, last column + 1), in row-major order."""
    rows, first = np.nonzero(start)
    _, last = np.nonzero(end)  # row-major order pairs each run's start with its end
    return rows, first, last + 1


def _cycles(succ: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decompose the permutation ``succ`` into cycles, with numpy only.

    Pointer doubling: after round k every element knows the smallest index among its next 2**k successors
    and how many steps ahead it is, so after log2(n) rounds it knows its cycle's smallest index (the
    leader) and its distance to it. O(n log n) vectorised work instead of a Python walk over every corner.

    Returns:
        ``(order, bounds)``: indices grouped by cycle (cycles ordered by leader), each cycle starting at its
        leader and following ``succ``; cycle ``i`` is ``order[bounds[i]:bounds[i+1]]``.
    """
    n = len(succ)
    leader = np.arange(n)
    dist = np.zeros(n, np.int64)  # steps from each element forward to ``leader``
    p = succ.copy()
    span = 1
    while span < n:
        ahead = leader[p]
        better = ahead < leader  # strict: on a tie the nearer occurrence (already stored) wins
        leader = np.where(better, ahead, leader)
        dist = np.where(better, dist[p] + span, dist)
        p = p[p]
        span *= 2
    sizes = np.bincount(leader, minlength=n)
    first = np.cumsum(sizes) - sizes  # start of each leader's block in the output
    size = sizes[leader]
    order = np.empty(n, np.int64)
    order[first[leader] + (size - dist) % size] = np.arange(n)
    leaders = np.flatnonzero(sizes)
    return order, np.r_[first[leaders], n]


def _split_at(keys: np.ndarray, piece: np.ndarray, key: int) -> Optional[tuple[np.ndarray, np.ndarray]]:
    pos = np.flatnonzero(keys[piece] == key)
    if len(pos) < 2:
        return None
    a, b = int(pos[0]), int(pos[1])
    return np.concatenate([piece[:a], piece[b:]]), piece[a:b]


def label_polygons(labels: np.ndarray, ignore: set[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact outlines of the 4-connected single-class regions of a label map.

    Returns ``(coords, ring_bounds, poly_bounds, values)``: ``coords`` (N, 2) int64 (x, y) pixel-corner
    points of closed rings (first point repeated at the end); ring ``i`` is
    ``coords[ring_bounds[i]:ring_bounds[i+1]]``; polygon ``j`` is rings ``poly_bounds[j]:poly_bounds[j+1]``,
    its shell first, then its holes, and has label value ``values[j]``. Polygons are sorted by value, then
    by the raster position of the region's first pixel. Shells run counter-clockwise and holes clockwise
    in (x, y) (RFC 7946 orientation); only corners are kept.

    Method: every pixel edge between a region and a pixel of another value (or the image border) is a
    directed boundary edge with the region on its left; straight runs of edges become segments, so every
    segment start is a corner. At a corner where a class touches itself only diagonally, two segments of
    that class start; the walk turns left, staying on the same pixel, which is what makes regions
    4-connected and keeps rings from crossing. A ring that still passes such a corner twice (a background
    pocket joined to the outside only through a corner) is split there into a shell and a hole touching at
    one point, which is valid polygon geometry (OGC / JTS, what QuPath uses), unlike a self-touching ring.
    All classes are traced in one pass; cycles are found with numpy pointer doubling, not a Python walk.
    """
    from skimage.measure import label as cc_label

    h, w = labels.shape
    empty = (np.zeros((0, 2), np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int64))
    if labels.size == 0:
        return empty
    pad = np.full((h + 2, w + 2), -1, np.int32)  # -1 differs from every label, so borders are boundaries
    pad[1:-1, 1:-1] = labels
    mid = pad[1:-1, 1:-1]
    up, down, lft, rgt = (
        mid != pad[:-2, 1:-1],
        mid != pad[2:, 1:-1],
        mid != pad[1:-1, :-2],
        mid != pad[1:-1, 2:],
    )
    # an edge run continues into the next pixel only if that pixel has the same value and the same edge
    cont_r = np.zeros((h, w), bool)
    cont_r[:, :-1] = ~rgt[:, :-1]  # pixel (r, c + 1) has the same value
    cont_d = np.zeros((h, w), bool)
    cont_d[:-1] = ~down[:-1]

    def _h_runs(edge: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        nxt = np.zeros((h, w), bool)
        nxt[:, :-1] = edge[:, 1:]
        prv = np.zeros((h, w), bool)
        prv[:, 1:] = edge[:, :-1] & cont_r[:, :-1]
        return _run_bounds(edge & ~prv, edge & ~(nxt & cont_r))

    def _v_runs(edge: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        nxt = np.zeros((h, w), bool)
        nxt[:-1] = edge[1:]
        prv = np.zeros((h, w), bool)
        prv[1:] = edge[:-1] & cont_d[:-1]
        return _run_bounds((edge & ~prv).T, (edge & ~(nxt & cont_d)).T)

    parts = []
    r, c0, c1 = _h_runs(up)  # direction 0: +x along y = r
    parts.append((c0, r, c1, r, 0, r, c0))
    c, r0, r1 = _v_runs(rgt)  # direction 1: +y along x = c + 1
    parts.append((c + 1, r0, c + 1, r1, 1, r0, c))
    r, c0, c1 = _h_runs(down)  # direction 2: -x along y = r + 1
    parts.append((c1, r + 1, c0, r + 1, 2, r, c0))
    c, r0, r1 = _v_runs(lft)  # direction 3: -y along x = c
    parts.append((c, r1, c, r0, 3, r0, c))
    del up, down, lft, rgt, pad  # free the full-size masks before the segment arrays grow

    sx, sy, ex, ey, pr, pc = (np.concatenate([p[i] for p in parts]).astype(np.int64) for i in (0, 1, 2, 3, 5, 6))
    dirs = np.concatenate([np.full(len(p[0]), p[4], np.int8) for p in parts])
    value = labels[pr, pc].astype(np.int64)
    if ignore:
        keep = ~np.isin(value, np.fromiter(ignore, np.int64))
        sx, sy, ex, ey, pr, pc, dirs, value = (a[keep] for a in (sx, sy, ex, ey, pr, pc, dirs, value))
    if len(sx) == 0:
        return empty
    n_vertices = (h + 1) * (w + 1)
    # one key per (class, corner): the walk of one class never continues on another class's segments
    skey = value * n_vertices + sy * (w + 1) + sx
    ekey = value * n_vertices + ey * (w + 1) + ex

    # successor: the segment starting where this one ends; at a diagonal-contact corner two start there and
    # the left turn (direction + 1) keeps the walk on the same pixel
    by_start = np.argsort(skey * 4 + dirs)
    sorted_keys = np.r_[skey[by_start], -1]
    lo = np.searchsorted(sorted_keys[:-1], ekey)
    succ = by_start[lo]
    two = np.flatnonzero(sorted_keys[lo + 1] == ekey)
    if len(two):
        alt = by_start[lo[two] + 1]
        want = (dirs[two] + 1) % 4
        succ[two] = np.where(dirs[succ[two]] == want, succ[two], alt)

    order, bounds = _cycles(succ)
    starts = bounds[:-1]
    cycle_of = np.repeat(np.arange(len(starts)), np.diff(bounds))
    cid = np.empty(len(order), np.int64)
    cid[order] = cycle_of

    # cycles passing a diagonal-contact corner twice (rare: background pocket joined to the rest by a corner)
    pinched: dict[int, list[int]] = {}
    if len(two):
        amb = np.unique(skey[by_start[lo[two]]])
        at = np.searchsorted(sorted_keys, amb, "left")
        same = cid[by_start[at]] == cid[by_start[at + 1]]
        for key, c in zip(amb[same].tolist(), cid[by_start[at[same]]].tolist()):
            pinched.setdefault(c, []).append(key)

    seq = order
    if pinched:
        # cut each pinched cycle at its repeated corners; the pieces go after the untouched cycles
        hit = np.zeros(len(starts), bool)
        hit[np.fromiter(pinched, np.int64)] = True
        pieces = [order[~hit[cycle_of]]]
        lengths = [np.diff(bounds)[~hit]]
        for i in np.flatnonzero(hit):
            todo = [order[bounds[i] : bounds[i + 1]]]
            for key in pinched[int(i)]:
                for j, piece in enumerate(todo):
                    parts = _split_at(skey, piece, key)
                    if parts is not None:
                        todo[j] = parts[0]
                        todo.append(parts[1])
                        break
            pieces += todo
            lengths.append(np.array([len(t) for t in todo]))
        seq = np.concatenate(pieces)
        bounds = np.r_[0, np.cumsum(np.concatenate(lengths))]
    starts, n_seg = bounds[:-1], np.diff(bounds)

    # regions of equal value, 4-connected; a region's shell and holes all have it on their left
    comp = cc_label(labels, background=-1, connectivity=1)
    x, y = sx[seq], sy[seq]
    nxt = np.arange(1, len(seq) + 1)
    nxt[bounds[1:] - 1] = starts
    area2 = np.add.reduceat(x * y[nxt] - x[nxt] * y, starts)  # > 0: shell, < 0: hole
    region = comp[pr[seq[starts]], pc[seq[starts]]]
    ring_value = value[seq[starts]]
    perm = np.lexsort((area2 < 0, region, ring_value))  # per region: its one shell, then its holes

    # closed rings in that order: each ring's corners followed by its first corner again
    closed_len = n_seg[perm] + 1
    ring_bounds = np.r_[0, np.cumsum(closed_len)]
    offs = np.arange(ring_bounds[-1]) - np.repeat(ring_bounds[:-1], closed_len)
    offs[ring_bounds[1:] - 1] = 0
    idx = np.repeat(starts[perm], closed_len) + offs
    coords = np.stack([x[idx], y[idx]], axis=1)
    reg = region[perm]
    poly_starts = np.flatnonzero(np.r_[True, reg[1:] != reg[:-1]])
    return coords, ring_bounds, np.r_[poly_starts, len(perm)], ring_value[perm][poly_starts]


def paint_polygons(out: np.ndarray, polygons: list[list[np.ndarray]], value: int) -> None:
    """Set ``out`` to ``value`` at every pixel whose centre lies inside the union of ``polygons``.

    Each polygon is a list of (N, 2) float (x, y) rings in ``out``'s pixel units, shell first. Rings are
    re-oriented (shell +1, holes -1) and a pixel is inside where the winding number is non-zero, so holes
    are subtracted and overlapping polygons of one class simply unite. skimage.draw.polygon tests every
    bounding-box pixel against every vertex, far too slow for slide-sized outlines; instead each edge
    crossing of a pixel-centre row adds its winding step at the first pixel right of it and a cumulative
    sum along the row gives the winding number: the same pixel-centre rule, cost ~ crossings + area,
    processed in row bands so memory stays bounded.
    """
    h, w = out.shape
    rings, wanted = [], []
    for polygon in polygons:
        for k, ring in enumerate(polygon):
            if len(ring) >= 3:
                rings.append(ring)
                wanted.append(1 if k == 0 else -1)
    if not rings:
        return
    lengths = np.array([len(r) for r in rings])
    pts = np.concatenate(rings)
    ring_starts = np.cumsum(lengths) - lengths
    nxt = np.arange(1, len(pts) + 1)
    nxt[ring_starts + lengths - 1] = ring_starts
    x0, y0 = pts[:, 0], pts[:, 1]
    x1, y1 = x0[nxt], y0[nxt]
    area2 = np.add.reduceat(x0 * y1 - x1 * y0, ring_starts)
    factor = np.repeat(np.sign(area2) * np.array(wanted), lengths)
    keep = (y0 != y1) & (factor != 0)
    x0, y0, x1, y1, factor = x0[keep], y0[keep], x1[keep], y1[keep], factor[keep]
    # pixel-centre rows i with min(y) <= i + 0.5 < max(y): half-open, so a shared vertex counts once
    first = np.clip(np.ceil(np.minimum(y0, y1) - 0.5), 0, h).astype(np.int64)
    stop = np.clip(np.ceil(np.maximum(y0, y1) - 0.5), 0, h).astype(np.int64)
    counts = stop - first
    total = int(counts.sum())
    if total == 0:
        return
    edge = np.repeat(np.arange(len(counts)), counts)
    rows = first[edge] + (np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts))
    t = (rows + 0.5 - y0[edge]) / (y1[edge] - y0[edge])
    xc = x0[edge] + t * (x1[edge] - x0[edge])
    # a counter-clockwise shell descends (y decreasing) on its left side: +1 entering, -1 leaving
    step = np.where(y1[edge] < y0[edge], 1.0, -1.0) * factor[edge]
    cols = np.floor(xc - 0.5).astype(np.int64) + 1  # first pixel whose centre is right of the crossing
    c_lo, c_hi = max(0, int(cols.min())), min(w, int(cols.max()))
    if c_lo >= c_hi:
        return
    inside_cols = cols < c_hi  # crossings at or right of c_hi change nothing inside [c_lo, c_hi)
    rows, cols, step = rows[inside_cols], np.maximum(cols[inside_cols], c_lo) - c_lo, step[inside_cols]
    by_row = np.argsort(rows, kind="stable")
    rows, cols, step = rows[by_row], cols[by_row], step[by_row]
    bw = c_hi - c_lo
    band = max(1, (1 << 22) // bw)
    for b0 in range(int(rows[0]), int(rows[-1]) + 1, band):
        i0, i1 = np.searchsorted(rows, [b0, b0 + band])
        if i0 == i1:
            continue
        bh = min(band, h - b0)
        winding = np.bincount((rows[i0:i1] - b0) * bw + cols[i0:i1], weights=step[i0:i1], minlength=bh * bw)
        inside = np.cumsum(winding.reshape(bh, bw), axis=1) != 0
        out[b0 : b0 + bh, c_lo:c_hi][inside] = value
