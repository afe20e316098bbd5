# Cython (AOT) im2col / col2im and convolution kernels, parallel over the batch.
#
# Dimension legend: N batch, C channels, H/W input height/width, F filters,
# KH/KW kernel height/width, OH/OW output height/width, L = OH*OW, K = C*KH*KW,
# s stride, p pad, T worker chunks (one per OpenMP thread), PH/PW pooled
# height/width; Fp, Kp, Lp are F, K, L rounded up to the GEMM block sizes.
#
# Directives (language_level, boundscheck, wraparound, cdivision) are set once,
# in setup.py.  Everything here is unchecked: fastlenet/kernels/cython_backend.py
# wraps it with the contract's checks.
#
# Strategy: every call runs the plan that fastlenet/kernels/plan.py made for its
# geometry (the codes passed in; _geometry derives the sizes, _check_plan refuses a
# plan whose kernels cannot run the geometry): 'direct' convolves the zero-padded
# input with register tiles (csrc/direct_conv.h), 'im2col_gemm' unfolds it and runs
# the register-blocked GEMM (csrc/gemm.h), 'winograd_f2x2_3x3' runs 16 GEMMs over its
# transformed tiles (csrc/winograd.h: forward, dx and dW; 'winograd_f2x2_5x5' 36 GEMMs);
# a fused ReLU + max pool runs on the tile's
# accumulators or over the conv output kept in the workspace, and its backward turns
# the pooled gradient straight into the conv-output gradient (csrc/pool_grad.h); dW
# comes from the padded input (csrc/dw.h), a GEMM over im2row/im2col columns, or under
# a max pool from the pooled gradient at each window's argmax only (csrc/pool_dw.h).
# The batch is cut into blocks of SB samples that the T threads take dynamically;
# each thread owns zero-padded workspaces, each block its own dW/db accumulators,
# summed once at the end in block order (no atomics, no false sharing, and the same
# result whichever thread ran which block, for any thread count).  Padding the
# workspaces to the tile sizes removes every remainder loop.
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy, memset
cimport openmp

import numpy as np

from fastlenet.kernels import _workspace
from fastlenet.kernels._workspace import aligned_empty, aligned_zeros

from fl_kernels cimport *

if FL_MB != MB or FL_POOL_FLANES_TILE != FLANES_TILE:   # C and Cython agree
    raise ImportError("the tile sizes of csrc/*.h and csrc/fl_kernels.pxd / conv.pyx differ")

cdef enum:
    SB = 16      # samples per block: the threads take blocks dynamically (balanced)

# The plan's path codes: positions in plan.FORWARD, POOL, POOL_GRAD, DW and DX (the names
# there; tests/test_plan.py holds the two lists equal), and the limits the plan obeys.
cdef enum:
    FWD_IM2COL_GEMM = 0
    FWD_DIRECT = 1
    FWD_DIRECT_FILTER_LANES = 2
    FWD_WINOGRAD = 3
    FWD_WINOGRAD5 = 4
    FWD_GEMM_1X1 = 5
cdef enum:
    POOL_NONE = 0
    POOL_AFTER_CONV = 1
    POOL_AFTER_CONV_2X2 = 2
    POOL_TILE_F8 = 3
    POOL_TILE_F6 = 4
    POOL_TILE_FLANES = 5
cdef enum:
    POOL_GRAD_NONE = 0
    POOL_GRAD_ROUTE = 1
    POOL_GRAD_EXPAND_2X2 = 2
cdef enum:
    DW_GEMM_IM2COL = 0
    DW_GEMM_IM2ROW = 1
    DW_DIRECT_FILTER_LANES = 2
    DW_DIRECT_COLUMN_LANES = 3
    DW_WINOGRAD = 4
    DW_WINOGRAD5 = 5
    DW_POOLED_ARGMAX = 6
cdef enum:
    DX_COL2IM = 0
    DX_COL2IM_S1 = 1
    DX_FLIPPED_CONV_S1 = 2   # the Numba backend's ("dots" plan rules); not built here
    DX_GEMM_1X1 = 3
    DX_WINOGRAD = 4
    DX_WINOGRAD5 = 5
cdef enum:
    MIN_DIRECT_OW = 8    # plan.MIN_DIRECT_OW
    MAX_DIRECT_K = 512   # plan.MAX_DIRECT_K
    MAX_FLANES_K = 2304  # plan.MAX_FLANES_K
    FLANES_TILE = 5      # plan.FLANES_TILE: pooled columns per filter-lanes tile
    WINOGRAD_TILES = 64  # Winograd tiles per pass, about (whole tile rows): V and M stay in L2
    WINOGRAD_DW_COLUMNS = 128  # Winograd dW: tile columns per GEMM, about (whole samples side by side)

#: the names behind the codes, for tests/test_plan.py
PLAN_NAMES = {
    "forward": ("im2col_gemm", "direct", "direct_filter_lanes", "winograd_f2x2_3x3", "winograd_f2x2_5x5",
                "gemm_1x1"),
    "pool": (None, "after_conv", "after_conv_2x2", "tile_f8", "tile_f6", "tile_filter_lanes"),
    "pool_grad": (None, "route", "expand_2x2"),
    "dw": ("gemm_im2col", "gemm_im2row", "direct_filter_lanes", "direct_column_lanes", "winograd_f2x2_3x3",
           "winograd_f2x2_5x5", "pooled_argmax"),
    "dx": ("col2im", "col2im_s1", "flipped_conv_s1", "gemm_1x1", "winograd_f2x2_3x3", "winograd_f2x2_5x5"),
}
LANES = LB


def set_num_threads(int n):
    """Threads used by the OpenMP kernels."""
    openmp.omp_set_num_threads(n)


cdef inline void _valid_range(Py_ssize_t j, Py_ssize_t s, Py_ssize_t p, Py_ssize_t size,
                              Py_ssize_t out_len, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """Output positions o in [lo, hi) whose input index o*s + j - p lies in [0, size)."""
    lo[0] = 0
    if p - j > 0:
        lo[0] = (p - j + s - 1) // s
    hi[0] = 0
    if size + p - j > 0:
        hi[0] = (size + p - j - 1) // s + 1
    if hi[0] > out_len:
        hi[0] = out_len
    if lo[0] > hi[0]:
        lo[0] = hi[0]


# ----------------------------------------------------------------------------- GEMM micro-kernels
# ----------------------------------------------------------------------------- im2col / col2im
cdef void _im2col_one(const floating[:, :, ::1] xs, Py_ssize_t kh, Py_ssize_t kw,
                      Py_ssize_t s, Py_ssize_t p, Py_ssize_t oh, Py_ssize_t ow,
                      floating[:, ::1] cols) noexcept nogil:
    """xs (C, H, W) -> cols[:K, :L] for one sample (cols may be wider/taller: padding untouched)."""
    cdef Py_ssize_t C = xs.shape[0], H = xs.shape[1], W = xs.shape[2]
    cdef Py_ssize_t c, i, j, r, oy, ox, yy, base, lo, hi
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                _valid_range(j, s, p, W, ow, &lo, &hi)
                for oy in range(oh):
                    base = oy * ow
                    yy = oy * s + i - p
                    if yy < 0 or yy >= H:
                        for ox in range(ow):
                            cols[r, base + ox] = 0
                        continue
                    for ox in range(lo):
                        cols[r, base + ox] = 0
                    for ox in range(lo, hi):
                        cols[r, base + ox] = xs[c, yy, ox * s + j - p]
                    for ox in range(hi, ow):
                        cols[r, base + ox] = 0


cdef void _col2im_one(const floating[:, ::1] cols, Py_ssize_t kh, Py_ssize_t kw,
                      Py_ssize_t s, Py_ssize_t p, Py_ssize_t oh, Py_ssize_t ow,
                      floating[:, :, ::1] xs) noexcept nogil:
    """xs (C, H, W) += fold(cols[:K, :L]) for one sample; xs must start zeroed."""
    cdef Py_ssize_t C = xs.shape[0], H = xs.shape[1], W = xs.shape[2]
    cdef Py_ssize_t c, i, j, r, oy, ox, yy, base, lo, hi
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                _valid_range(j, s, p, W, ow, &lo, &hi)
                for oy in range(oh):
                    yy = oy * s + i - p
                    if yy < 0 or yy >= H:
                        continue
                    base = oy * ow
                    for ox in range(lo, hi):
                        xs[c, yy, ox * s + j - p] += cols[r, base + ox]


def im2col(const floating[:, :, :, ::1] x, Py_ssize_t kh, Py_ssize_t kw,
           Py_ssize_t stride, Py_ssize_t pad, Py_ssize_t oh, Py_ssize_t ow):
    """x (N, C, H, W) -> cols (N, K, L)."""
    cdef Py_ssize_t n = x.shape[0], b
    dtype = np.float32 if floating is float else np.float64
    out = np.empty((n, x.shape[1] * kh * kw, oh * ow), dtype=dtype)
    cdef floating[:, :, ::1] cols = out
    for b in prange(n, nogil=True, schedule="static"):
        _im2col_one(x[b], kh, kw, stride, pad, oh, ow, cols[b])
    return out


def col2im(const floating[:, :, ::1] cols, tuple x_shape, Py_ssize_t kh, Py_ssize_t kw,
           Py_ssize_t stride, Py_ssize_t pad, Py_ssize_t oh, Py_ssize_t ow):
    """cols (N, K, L) -> x (N, C, H, W), overlaps summed."""
    dtype = np.float32 if floating is float else np.float64
    out = np.zeros(x_shape, dtype=dtype)
    cdef floating[:, :, :, ::1] x = out
    cdef Py_ssize_t b
    for b in prange(x.shape[0], nogil=True, schedule="static"):
        _col2im_one(cols[b], kh, kw, stride, pad, oh, ow, x[b])
    return out


# ----------------------------------------------------------------------------- geometry + plan
cdef struct Geometry:
    Py_ssize_t n, c, h, w, f, kh, kw, s, p, oh, ow, k, l, fp, kp, lp, kq
    Py_ssize_t size, ps, ph, pw    # max pool after the conv (fused path only; size 0: none)
    int fwd, pool, pool_grad, dw, dx   # the plan's paths (fastlenet/kernels/plan.py), never changed
    Py_ssize_t f8, hs, ws          # direct filter count (multiple of 8) and padded-input plane
    Py_ssize_t pool_fb             # filters per register tile of the in-tile pool (0: no tile)
    Py_ssize_t fq                  # F rounded up to LB: the lanes of the transposed dz
    Py_ssize_t owr                 # OW rounded up to LB: the row stride of the row-padded dz
    Py_ssize_t wq                  # Winograd: tile positions (KH + 1)^2 (16 for 3x3, 36 for 5x5)
    Py_ssize_t wtr, wpp            # Winograd forward: tile rows and tiles (Lanes-padded) per pass
    Py_ssize_t xtr, xpp, zhs, zws  # Winograd dx: the same, and the plane of dz padded by KH-1 - p
    Py_ssize_t cq, zrows           # Winograd dW: C rounded up to MB; rows of the row-padded dz
    Py_ssize_t dwps, dwg, dwcols   # ... tile columns per sample (whole vectors), samples per GEMM
                                   # (0: passes of tile rows), tile columns of its workspaces


cdef Geometry _geometry(Py_ssize_t n, Py_ssize_t c, Py_ssize_t h, Py_ssize_t w, Py_ssize_t f,
                        Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t s, Py_ssize_t p,
                        Py_ssize_t oh, Py_ssize_t ow, tuple codes, Py_ssize_t size, Py_ssize_t ps,
                        Py_ssize_t ph, Py_ssize_t pw):
    """The sizes of one call, and its plan's codes (forward, pool, pool_grad, dw, dx).
    Everything here follows from the shapes and the plan: nothing is chosen."""
    cdef Geometry g
    g.n, g.c, g.h, g.w, g.f, g.kh, g.kw, g.s, g.p, g.oh, g.ow = n, c, h, w, f, kh, kw, s, p, oh, ow
    g.fwd, g.pool, g.pool_grad, g.dw, g.dx = codes
    g.k, g.l = c * kh * kw, oh * ow
    g.fp, g.kp, g.lp = _round_up(f, MB), _round_up(g.k, MB), _round_up(g.l, LB)
    g.kq = _round_up(g.k, LB) if g.dw == DW_GEMM_IM2ROW else g.kp
    g.size, g.ps, g.ph, g.pw = size, ps, ph, pw
    g.fq, g.owr = _round_up(f, LB), _round_up(ow, LB)
    g.f8 = _round_up(f, 8)
    g.pool_fb = {POOL_TILE_F8: 8, POOL_TILE_F6: 6, POOL_TILE_FLANES: LB}.get(g.pool, 0)
    # padded planes: wide enough for the direct kernels' vector rows and the col2im's
    g.hs, g.ws = h + 2 * p, max(_round_up(ow, LB) + kw - 1, w + 2 * p, _round_up(ow + kw - 1, LB))
    if g.pool == POOL_TILE_FLANES:      # the last tile of FLANES_TILE pooled columns reads this far
        g.ws = max(g.ws, 2 * _round_up(g.pw, FLANES_TILE) + g.kw - 1)
    if g.fwd == FWD_DIRECT_FILTER_LANES:  # ... and the last tile of FL_FLANES_COLS conv columns
        g.ws = max(g.ws, s * (_round_up(ow, FL_FLANES_COLS) - 1) + g.kw)
    if g.dw == DW_POOLED_ARGMAX:          # ... and the pooled dW's vector of a kernel row, in its row
        g.ws = max(g.ws, s * (ow - 1) + LB)
    if _fwd_winograd(g) or _dw_winograd(g):       # ... and the Winograd tiles' vector rows
        g.hs, g.ws = max(g.hs, _winograd_rows(oh, kh)), max(g.ws, _winograd_cols(ow, kw))
    g.cq, g.zrows = _round_up(c, MB), oh
    if _dw_winograd(g):                   # dz tiles of 2x2 read as whole vector rows
        g.zrows, g.owr = 2 * ((oh + 1) // 2), max(g.owr, _winograd_cols(ow, 1))
    g.wq = (kh + 1) * (kh + 1)
    _winograd_passes(oh, ow, &g.wtr, &g.wpp)
    _winograd_passes(h, w, &g.xtr, &g.xpp)           # dx: a conv with output H x W
    _winograd_dw_groups(&g)
    g.zhs, g.zws = _winograd_rows(h, kh), _winograd_cols(w, kw)  # >= OH + 2(KH-1 - p) = H + KH-1
    _check_plan(g)
    return g


cdef inline bint _fwd_winograd(Geometry g) noexcept nogil:
    return g.fwd == FWD_WINOGRAD or g.fwd == FWD_WINOGRAD5


cdef inline bint _dx_winograd(Geometry g) noexcept nogil:
    return g.dx == DX_WINOGRAD or g.dx == DX_WINOGRAD5


cdef inline bint _dw_winograd(Geometry g) noexcept nogil:
    return g.dw == DW_WINOGRAD or g.dw == DW_WINOGRAD5


cdef inline Py_ssize_t _winograd_rows(Py_ssize_t oh, Py_ssize_t k) noexcept nogil:
    """Rows of the padded plane a Winograd conv (K x K) with OH output rows reads: 2 TH + K - 1."""
    return 2 * ((oh + 1) // 2) + k - 1


cdef inline Py_ssize_t _winograd_cols(Py_ssize_t ow, Py_ssize_t k) noexcept nogil:
    """Columns of the padded plane it reads: 2 round_up(TW, LB) + K - 1 (whole vector rows)."""
    return 2 * _round_up((ow + 1) // 2, LB) + k - 1


cdef void _winograd_dw_groups(Geometry* g) noexcept:
    """How the Winograd dW sums its GEMMs: over WINOGRAD_DW_COLUMNS tile columns or so, of
    whole samples side by side where one sample's tiles fit one pass (its dot-product GEMM
    sums lanes once per tile of the product: 16 columns of an 8x8 output alone would waste
    most of it), else over each pass of tile rows."""
    cdef Py_ssize_t th = (g.oh + 1) // 2, tw = (g.ow + 1) // 2
    g.dwps = _round_up(th * tw, LB)
    if th <= g.wtr:
        g.dwg = min(SB, max(1, WINOGRAD_DW_COLUMNS // g.dwps))
        g.dwcols = g.dwg * g.dwps
    else:
        g.dwg, g.dwcols = 0, g.wpp


cdef void _winograd_passes(Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t* tr, Py_ssize_t* pp) noexcept:
    """Tile rows per pass of a Winograd conv with output OH x OW (at most about
    WINOGRAD_TILES tiles, at least one row; of those, the count whose passes pad the
    fewest tiles to whole vectors, then the most), and the tiles of a pass rounded up to
    whole vectors (24x24 outputs: 4 rows of 12 tiles, 3 passes of 48 columns, not 5 rows
    and passes of 64, 64 and 32 columns)."""
    cdef Py_ssize_t th = (oh + 1) // 2, tw = (ow + 1) // 2, rows, cols, best = -1
    for rows in range(1, min(th, max(1, WINOGRAD_TILES // tw)) + 1):
        cols = (th + rows - 1) // rows * _round_up(rows * tw, LB)   # tile columns over the passes
        if best < 0 or cols <= best:
            best, tr[0] = cols, rows
    pp[0] = _round_up(tr[0] * tw, LB)     # the workspaces' rows: pp + LB (csrc/winograd.h)


cdef _check_plan(Geometry g):
    """A plan whose kernels cannot run this geometry is refused (never run out of bounds)."""
    cdef list bad = []
    if g.fwd == FWD_DIRECT and (g.s != 1 or g.ow < MIN_DIRECT_OW or g.k > MAX_DIRECT_K):
        bad.append("forward 'direct' needs stride 1, OW >= 8, K <= 512")
    if g.fwd == FWD_DIRECT_FILTER_LANES and (g.s > 2 or g.ow < MIN_DIRECT_OW or g.k > MAX_FLANES_K):
        bad.append("forward 'direct_filter_lanes' needs stride 1 or 2, OW >= 8, K <= 2304")
    if g.pool_fb and not (g.size == 2 and g.ps == 2 and
                          g.fwd == (FWD_DIRECT_FILTER_LANES if g.pool == POOL_TILE_FLANES else FWD_DIRECT)):
        bad.append("an in-tile pool needs its direct forward and a 2x2/2 pool")
    if (g.pool == POOL_TILE_F8 and g.ow > LB) or (g.pool == POOL_TILE_F6 and LB == 16 and g.ow > 2 * LB):
        bad.append("the tile holds fewer conv columns than the output row has")
    if (g.pool == POOL_AFTER_CONV_2X2 or g.pool_grad == POOL_GRAD_EXPAND_2X2) and not (g.size == 2 and g.ps == 2):
        bad.append("a 2x2 pool path needs a 2x2/2 pool")
    if (g.pool == POOL_NONE) != (g.size == 0) or (g.pool_grad == POOL_GRAD_NONE) != (g.size == 0):
        bad.append("pool paths and the pool itself disagree")
    if g.dw == DW_DIRECT_FILTER_LANES and g.kw != 3 and g.kw != 5:
        bad.append("dw 'direct_filter_lanes' needs KW 3 or 5")
    if g.dw == DW_DIRECT_COLUMN_LANES and (g.kw not in (3, 5) or g.s != 1):
        bad.append("dw 'direct_column_lanes' needs KW 3 or 5 and stride 1")
    if g.dw == DW_POOLED_ARGMAX and (g.size == 0 or g.kw > LB or g.c * g.hs * g.ws >= 1 << 31):
        bad.append(f"dw 'pooled_argmax' needs a fused max pool, KW <= {LB} and a sample of < 2^31 elements")
    if g.dx == DX_COL2IM_S1 and g.s != 1:
        bad.append("dx 'col2im_s1' needs stride 1")
    if g.fwd == FWD_GEMM_1X1 and not (g.kh == 1 and g.kw == 1 and g.s == 1 and g.p == 0 and g.lp == g.l):
        bad.append("forward 'gemm_1x1' needs a 1x1 kernel, stride 1, no padding and OH*OW of the lanes")
    if g.dx == DX_GEMM_1X1 and not (g.kh == 1 and g.kw == 1 and g.s == 1 and g.p == 0 and g.kp == g.c
                                    and g.lp == g.l):
        bad.append("dx 'gemm_1x1' needs a 1x1 kernel, stride 1, no padding, C a multiple of 4 and "
                   "OH*OW of the lanes")
    if g.fwd == FWD_WINOGRAD and not (g.kh == 3 and g.kw == 3 and g.s == 1):
        bad.append("forward 'winograd_f2x2_3x3' needs a 3x3 kernel and stride 1")
    if g.dx == DX_WINOGRAD and not (g.kh == 3 and g.kw == 3 and g.s == 1 and g.p <= 2):
        bad.append("dx 'winograd_f2x2_3x3' needs a 3x3 kernel, stride 1 and pad <= 2")
    if g.fwd == FWD_WINOGRAD5 and not (g.kh == 5 and g.kw == 5 and g.s == 1):
        bad.append("forward 'winograd_f2x2_5x5' needs a 5x5 kernel and stride 1")
    if g.dx == DX_WINOGRAD5 and not (g.kh == 5 and g.kw == 5 and g.s == 1 and g.p <= 4):
        bad.append("dx 'winograd_f2x2_5x5' needs a 5x5 kernel, stride 1 and pad <= 4")
    if g.dw == DW_WINOGRAD and not (g.kh == 3 and g.kw == 3 and g.s == 1):
        bad.append("dw 'winograd_f2x2_3x3' needs a 3x3 kernel and stride 1")
    if g.dw == DW_WINOGRAD5 and not (g.kh == 5 and g.kw == 5 and g.s == 1):
        bad.append("dw 'winograd_f2x2_5x5' needs a 5x5 kernel and stride 1")
    if g.dx == DX_FLIPPED_CONV_S1:
        bad.append("dx 'flipped_conv_s1' is a Numba path, not built in this backend")
    if bad:
        raise ValueError("conv plan does not fit its geometry: " + "; ".join(bad))


def _dims(*dims):
    """A shape tuple (a Python object whatever the types of its entries)."""
    return dims


cdef tuple _geometry_key(Geometry g):
    return (g.c, g.h, g.w, g.f, g.kh, g.kw, g.s, g.p, g.oh, g.ow, g.size, g.ps,
            g.fwd, g.pool, g.pool_grad, g.dw, g.dx)


cdef inline object _result(object out, tuple shape, dtype):
    """The caller's ``out`` (checked by the caller) or a new 64-byte aligned array."""
    return aligned_empty(shape, dtype) if out is None else out


# ----------------------------------------------------------------------------- forward
cdef inline void _direct_conv_pool2(const floating* xp, Geometry g, const floating* wd,
                                    const floating* bias, Py_ssize_t nf, floating* y, int* arg) noexcept nogil:
    """One sample: y (NF, PH, PW), arg = maxpool2x2(relu(conv(xp))) from the padded input, for
    NF filters (wd, bias, y and arg start at the first of them)."""
    if g.pool == POOL_TILE_FLANES:
        if floating is float:
            fl_direct_conv_pool2_flanes5_f32(xp, g.c, g.hs, g.ws, wd, nf, _round_up(nf, LB), g.kh, g.kw,
                                             bias, g.ow, g.ph, g.pw, y, arg, g.ph * g.pw)
        else:
            fl_direct_conv_pool2_flanes5_f64(xp, g.c, g.hs, g.ws, wd, nf, _round_up(nf, LB), g.kh, g.kw,
                                             bias, g.ow, g.ph, g.pw, y, arg, g.ph * g.pw)
    elif g.pool == POOL_TILE_F8:
        if floating is float:
            fl_direct_conv_pool2_f8v1_f32(xp, g.c, g.hs, g.ws, wd, nf, g.kh, g.kw, bias, g.ow,
                                          g.ph, g.pw, y, arg, g.ph * g.pw)
        else:
            fl_direct_conv_pool2_f8v1_f64(xp, g.c, g.hs, g.ws, wd, nf, g.kh, g.kw, bias, g.ow,
                                          g.ph, g.pw, y, arg, g.ph * g.pw)
    else:                               # the build's tile_f6 kernel (f6v2, or f6cols < 16 lanes)
        if floating is float:
            fl_direct_conv_pool2_tile_f6_f32(xp, g.c, g.hs, g.ws, wd, nf, g.kh, g.kw, bias, g.ow,
                                             g.ph, g.pw, y, arg, g.ph * g.pw)
        else:
            fl_direct_conv_pool2_tile_f6_f64(xp, g.c, g.hs, g.ws, wd, nf, g.kh, g.kw, bias, g.ow,
                                             g.ph, g.pw, y, arg, g.ph * g.pw)


cdef inline void _gemm_forward(const floating[:, :, :, ::1] x, Py_ssize_t n, const floating[:, ::1] wp,
                               Py_ssize_t f0, Py_ssize_t nf, const floating* bias, Geometry g,
                               floating[:, ::1] cols, floating* z, Py_ssize_t ldz) noexcept nogil:
    """z (NF rows of stride ldz) = W[f0:f0 + NF] @ cols + b (z and bias start at filter f0),
    cols = im2col(x[n]) (Kp, Lp), or for 'gemm_1x1' x[n] (C, L) itself, copied whole: a
    sequential read that the GEMM's strided passes over its rows then find in cache,
    straight into y[n] (ldz = L = Lp; 2 threads, medians, ms, im2col_gemm -> gemm_1x1: 64 ->
    128 on 16x16 batch 128 7.06 -> 6.85, batch 32 1.87 -> 1.77, batch 1 0.121 -> 0.107; 256
    -> 64 on 8x8 4.04 -> 3.22; reading x[n] in place instead lost 5% at batch 128).  One call
    of the GEMM for both: GCC inlines it here, and a second call site made it an out-of-line
    copy that spills its B vectors (1x1 at batch 32: 0.9 -> 1.4 ms)."""
    cdef Py_ssize_t k = g.kp
    if g.fwd == FWD_GEMM_1X1:
        memcpy(&cols[0, 0], &x[n, 0, 0, 0], g.c * g.l * sizeof(floating))
        k = g.c
    else:
        _im2col_one(x[n], g.kh, g.kw, g.s, g.p, g.oh, g.ow, cols)
    _gemm_nn(&wp[f0, 0], g.kp, 1, &cols[0, 0], g.lp, z, ldz, nf, k, g.lp, bias, False)


cdef inline bint _writes_in_place(Geometry g) noexcept nogil:
    """Whether a plain convolution's forward writes y[n] (F, L) itself, not a workspace it
    then copies (_conv_into): the direct and Winograd kernels, which store only the real
    filters and columns (direct 3 -> 32 on 32x32, 2 threads: 2.4 -> 1.8 ms), and the 1x1
    GEMM (whole tiles of the lanes, real rows only).  The other
    kernels write padded tiles, or ran slower straight into y (the filter-lanes kernel's
    per-filter stores: 64 -> 64 on 8x8 3.1 -> 3.6 ms)."""
    return g.fwd == FWD_DIRECT or _fwd_winograd(g) or g.fwd == FWD_GEMM_1X1


cdef inline void _conv_into(const floating* xs, Geometry g, floating[:, :, ::1] xp,
                            const floating* wd, const floating* w, const floating* bias,
                            Py_ssize_t nf, floating[:, ::1] vm, floating* z, Py_ssize_t ldz) noexcept nogil:
    """z (NF rows of stride ldz) = conv(xs) + b by a kernel reading the padded input (direct,
    filter lanes or Winograd) for the NF filters that wd (their weights in the path's layout),
    w (the layer's (F, C, KH, KW)), bias and z start at; vm the Winograd V and M workspace;
    z the workspace (ldz = Lp), or y[n] itself (ldz = L, where _writes_in_place)."""
    _pad_copy(xs, g.c, g.h, g.w, g.p, &xp[0, 0, 0], g.hs, g.ws)
    if _fwd_winograd(g):
        _winograd(&xp[0, 0, 0], g.c, g.hs, g.ws, g.kh, wd, g.f * g.c, w, False, nf, bias, g.oh, g.ow,
                  g.wtr, g.wpp, vm, z, ldz)
    elif g.fwd == FWD_DIRECT_FILTER_LANES:
        if floating is float:
            fl_direct_conv_flanes_f32(&xp[0, 0, 0], g.c, g.hs, g.ws, g.s, wd, nf, _round_up(nf, LB), g.kh,
                                      g.kw, bias, z, ldz, g.oh, g.ow)
        else:
            fl_direct_conv_flanes_f64(&xp[0, 0, 0], g.c, g.hs, g.ws, g.s, wd, nf, _round_up(nf, LB), g.kh,
                                      g.kw, bias, z, ldz, g.oh, g.ow)
    elif floating is float:
        fl_direct_conv_f32(&xp[0, 0, 0], g.c, g.hs, g.ws, wd, nf, g.kh, g.kw, bias, z, ldz, g.oh, g.ow)
    else:
        fl_direct_conv_f64(&xp[0, 0, 0], g.c, g.hs, g.ws, wd, nf, g.kh, g.kw, bias, z, ldz, g.oh, g.ow)


cdef inline void _winograd(const floating* xp, Py_ssize_t c, Py_ssize_t hs, Py_ssize_t ws, Py_ssize_t k,
                           const floating* u, Py_ssize_t uq, const floating* w, bint flip, Py_ssize_t f,
                           const floating* bias, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t tr,
                           Py_ssize_t pp, floating[:, ::1] vm, floating* out, Py_ssize_t ldo) noexcept nogil:
    """out (F planes of stride ldo, rows of OW) = convKxK(xp (C, HS, WS)) + bias by Winograd
    F(2x2, KxK), K 3 or 5, with the transformed filters u (Q, F, C) (position stride uq: F C,
    or more when these F are a share of the layer's), Q = (K + 1)^2; vm holds V (Q C, PP +
    LB) then M (Q F, PP + LB).  Where a result is not finite, the sample is computed again
    as plain sums from the weights w (F, C, K, K), or rotated (C, F, K, K) with flip: NaN
    and Inf then reach the outputs they reach in the reference."""
    cdef int nonfinite
    cdef floating* m = &vm[(k + 1) * (k + 1) * c, 0]
    if floating is float:
        nonfinite = fl_winograd_run_f32(xp, c, hs, ws, k, u, uq, f, bias, oh, ow, tr, pp, &vm[0, 0], m, out,
                                        ldo)
        if nonfinite:
            fl_conv_exact_f32(xp, c, hs, ws, w, k, flip, f, bias, oh, ow, out, ldo)
    else:
        nonfinite = fl_winograd_run_f64(xp, c, hs, ws, k, u, uq, f, bias, oh, ow, tr, pp, &vm[0, 0], m, out,
                                        ldo)
        if nonfinite:
            fl_conv_exact_f64(xp, c, hs, ws, w, k, flip, f, bias, oh, ow, out, ldo)


cdef inline void _relu_maxpool_plane(const floating* zf, Geometry g, floating* yf, int* af) noexcept nogil:
    """One conv-output plane zf (OH, OW) -> yf, af (PH, PW) = maxpool(relu(zf)), arg = -1 where
    the max is <= 0 (the 'after_conv' pool paths)."""
    cdef Py_ssize_t oy, ox, i, j, bi, idx, top
    cdef floating best, v
    cdef bint takes
    if g.pool == POOL_AFTER_CONV_2X2:
        if floating is float:
            fl_relu_maxpool2_f32(zf, g.ow, yf, af, g.ph, g.pw)
        else:
            fl_relu_maxpool2_f64(zf, g.ow, yf, af, g.ph, g.pw)
        return
    for oy in range(g.ph):
        for ox in range(g.pw):
            bi = oy * g.ps * g.ow + ox * g.ps
            best = zf[bi]
            top = bi
            for i in range(g.size):
                for j in range(g.size):
                    idx = bi + i * g.ow + j
                    v = zf[idx]
                    # branch-free select (cmov): data-dependent branches mispredict
                    takes = fl_takes(v, best)                  # larger, or the first NaN
                    top = idx if takes else top
                    best = v if takes else best
            yf[oy * g.pw + ox] = 0 if best <= 0 else best        # NaN stays NaN
            af[oy * g.pw + ox] = <int> top if best > 0 else -1


cdef inline void _relu_rows(floating* out, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld) noexcept nogil:
    """out[r, :cols] = max(out[r, :cols], 0) for r < rows (rows ld apart); NaN stays NaN,
    like np.maximum (a sample's rows, still in cache from the conv that wrote them)."""
    cdef Py_ssize_t r, l
    cdef floating v
    for r in range(rows):
        for l in range(cols):
            v = out[r * ld + l]
            out[r * ld + l] = 0 if v < 0 else v


cdef void _forward_chunk(const floating[:, :, :, ::1] x, const floating[:, ::1] wp,
                         const floating* bias, Geometry g, Py_ssize_t start, Py_ssize_t stop,
                         Py_ssize_t f0, Py_ssize_t nf, floating[:, ::1] cols, floating[:, :, ::1] xp,
                         const floating* wd, const floating* w, floating[:, ::1] z, floating[:, :, ::1] y,
                         floating[:, :, :, ::1] py, int[:, :, :, ::1] arg, bint relu) noexcept nogil:
    """For n in [start, stop) and the NF filters from f0: y[n, f0:f0 + NF] = conv(x[n]) (no
    pool; relu(conv(x[n])) with ``relu``), or py[n, ...], arg[n, ...] = maxpool(relu(conv(x[n])))
    on the plan's pool path (wd: the weights in its layout from filter f0's group, bias from
    f0; w the layer's own)."""
    cdef Py_ssize_t n, f, l
    cdef bint in_place = g.pool == POOL_NONE and _writes_in_place(g)
    cdef Py_ssize_t ldo = g.l if in_place else g.lp
    cdef floating* out
    for n in range(start, stop):
        if g.pool_fb:                 # conv, ReLU and pool in one register tile
            _pad_copy(&x[n, 0, 0, 0], g.c, g.h, g.w, g.p, &xp[0, 0, 0], g.hs, g.ws)
            _direct_conv_pool2(&xp[0, 0, 0], g, wd, bias, nf, &py[n, f0, 0, 0], &arg[n, f0, 0, 0])
            continue
        out = &y[n, f0, 0] if in_place else &z[f0, 0]     # y[n] itself, or the workspace
        if g.fwd == FWD_IM2COL_GEMM or g.fwd == FWD_GEMM_1X1:
            _gemm_forward(x, n, wp, f0, nf, bias, g, cols, out, ldo)
        else:
            _conv_into(&x[n, 0, 0, 0], g, xp, wd, w + f0 * g.k, bias, nf, cols, out, ldo)
        if in_place:
            if relu:
                _relu_rows(out, nf, g.l, ldo)
            continue
        if g.pool == POOL_NONE:
            for f in range(f0, f0 + nf):
                for l in range(g.l):
                    y[n, f, l] = z[f, l]
            if relu:
                _relu_rows(&y[n, f0, 0], nf, g.l, g.l)
            continue
        for f in range(f0, f0 + nf):
            _relu_maxpool_plane(&z[f, 0], g, &py[n, f, 0, 0], &arg[n, f, 0, 0])


cdef inline Py_ssize_t _forward_block(Py_ssize_t n) noexcept nogil:
    """Samples per work item of the forward: SB, or fewer when that leaves threads idle (a
    batch of 16 on 2 threads was one block: one thread); each sample's output is the same
    whoever computes it, so the forward may cut the batch by the thread count."""
    cdef Py_ssize_t threads = openmp.omp_get_max_threads()
    return SB if n >= SB * threads else max(1, (n + threads - 1) // threads)


cdef inline Py_ssize_t _weights_at(Geometry g, Py_ssize_t f0, Py_ssize_t blk) noexcept nogil:
    """Where filter f0's weights start in the forward's layout of them (f0 a multiple of the
    share unit): U (Q, F, C) for Winograd, groups (F/blk, K, blk) for the direct kernels; the
    GEMM paths read wp instead (0)."""
    if _fwd_winograd(g):
        return f0 * g.c
    if g.fwd == FWD_IM2COL_GEMM or g.fwd == FWD_GEMM_1X1:
        return 0
    return (f0 // blk) * g.k * blk


cdef Py_ssize_t _filter_share(Geometry g, Py_ssize_t blk, Py_ssize_t blocks) noexcept nogil:
    """Filters per work item of the forward: all of them, unless the batch has fewer blocks of
    samples than there are threads (a small batch: batch 1 ran on one of two threads), then
    a share of them when a sample is worth sharing (_worth_sharing), whole weight groups of
    the path (blk: 8 direct, LB filter lanes, the in-tile pool's; GEMM and Winograd rows by
    8), so every thread takes filters of the same samples.  Winograd's shares each transform
    the sample's tiles again, for a third of the multiplies: from 6M multiply-adds (batch 1,
    2 threads, medians, ms: 5x5 16 -> 32 on 24x24, 7.4M, 0.138 -> 0.125; not 32 -> 64 on
    16x16, 4.7M, 0.102 -> 0.105, nor 64 -> 64 on 8x8, 2.4M, 0.064 -> 0.10).  Each filter's
    output is the same sum whoever computes it."""
    cdef Py_ssize_t threads = openmp.omp_get_max_threads()
    cdef Py_ssize_t unit = blk if g.fwd == FWD_DIRECT or g.fwd == FWD_DIRECT_FILTER_LANES or g.pool_fb else 8
    cdef Py_ssize_t shares
    if blocks >= threads or not _worth_sharing(g, (6 << 20) if _fwd_winograd(g) else (1 << 19)):
        return g.f
    shares = (threads + blocks - 1) // blocks
    return min(g.f, _round_up((g.f + shares - 1) // shares, unit))


cdef tuple _forward_workspaces(Geometry g, Py_ssize_t chunks, Py_ssize_t blk, Py_ssize_t fpad, dtype):
    """(W padded (Fp, Kp), regrouped weights (Fpad/blk, K, blk), bias (max(Fp, Fpad),),
    padded input planes, im2col columns, conv output); padding zero."""
    one = np.zeros((1, 1), dtype=dtype)
    if _fwd_winograd(g):          # U (Q, F, C); V and M (Q (C + F), PP) per thread
        return (one, aligned_zeros((g.wq, g.f, g.c), dtype), np.zeros(g.f, dtype=dtype),
                aligned_zeros((chunks, g.c, g.hs, g.ws), dtype),        # borders stay zero
                aligned_zeros((chunks, g.wq * (g.c + g.f), g.wpp + LB), dtype),
                aligned_empty(_dims(chunks, g.f, g.lp) if g.size else _dims(chunks, 1, 1), dtype))
    if g.fwd != FWD_IM2COL_GEMM and g.fwd != FWD_GEMM_1X1:
        return (one, aligned_zeros((fpad // blk, g.k, blk), dtype),
                np.zeros(max(g.fp, fpad), dtype=dtype),
                aligned_zeros((chunks, g.c, g.hs, g.ws), dtype),        # borders stay zero
                np.zeros((chunks, 1, 1), dtype=dtype),
                aligned_empty(_dims(chunks, 1, 1) if g.pool_fb else _dims(chunks, g.f8, g.lp), dtype))
    return (aligned_zeros((g.fp, g.kp), dtype), np.zeros((1, 1, 1), dtype=dtype),
            np.zeros(max(g.fp, fpad), dtype=dtype), np.zeros((chunks, 1, 1, 1), dtype=dtype),
            aligned_zeros((chunks, g.kp, g.lp), dtype),    # padding stays zero; gemm_1x1: x[n] copied
            aligned_empty((chunks, g.fp, g.lp), dtype))


cdef void _layout_weights(const floating* wf, const floating[::1] b, Geometry g, Py_ssize_t blk,
                          floating[:, ::1] wp, floating[::1] wd, floating[::1] bias) noexcept nogil:
    """The bias, and the weights w (F, K) in the layout the plan's forward reads: transformed
    (Q, F, C) for Winograd, regrouped (Fpad/blk, K, blk) for the direct kernels, padded
    (Fp, Kp) for the GEMM."""
    cdef Py_ssize_t f, k, f0, nf
    cdef floating* dst
    for f in range(g.f):
        bias[f] = b[f]
    if _fwd_winograd(g):
        _winograd_filters(wf, g.f, g.c, g.kh, False, &wd[0])
        return
    if g.fwd == FWD_IM2COL_GEMM or g.fwd == FWD_GEMM_1X1:
        for f in range(g.f):
            memcpy(&wp[f, 0], wf + f * g.k, g.k * sizeof(floating))
        return
    f0 = 0
    while f0 < g.f:                     # group f0 // blk: tap k's blk filters contiguous
        nf = min(blk, g.f - f0)
        for k in range(g.k):
            dst = &wd[f0 * g.k + k * blk]
            for f in range(nf):
                dst[f] = wf[(f0 + f) * g.k + k]
        f0 += blk


def _forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w, const floating[::1] b,
             Py_ssize_t stride, Py_ssize_t pad, Py_ssize_t oh, Py_ssize_t ow, tuple codes,
             Py_ssize_t size, Py_ssize_t pstride, y_out, arg_out, bint relu=False):
    cdef Py_ssize_t ph = (oh - size) // pstride + 1 if size else 0
    cdef Py_ssize_t pw = (ow - size) // pstride + 1 if size else 0
    cdef Geometry g = _geometry(x.shape[0], x.shape[1], x.shape[2], x.shape[3], w.shape[0],
                                w.shape[2], w.shape[3], stride, pad, oh, ow, codes, size, pstride, ph, pw)
    dtype = np.float32 if floating is float else np.float64
    # filters per weight group: the in-tile pool's, LB for the filter-lanes forward, else 8
    cdef Py_ssize_t blk = g.pool_fb if g.pool_fb else (LB if g.fwd == FWD_DIRECT_FILTER_LANES else 8)
    cdef Py_ssize_t fpad = _round_up(g.f, blk)
    # work items: blocks of SB samples, each split into shares of its filters when they are few
    cdef Py_ssize_t sb = _forward_block(g.n)
    cdef Py_ssize_t blocks = (g.n + sb - 1) // sb, q, tid, f0
    cdef Py_ssize_t share = _filter_share(g, blk, blocks)
    cdef Py_ssize_t shares = (g.f + share - 1) // share
    cdef Py_ssize_t chunks = _team_size(blocks * shares)
    key = ("conv forward", dtype, chunks) + _geometry_key(g)
    ws = _workspace.lookup(key)
    if ws is None:
        ws = _workspace.store(key, _forward_workspaces(g, chunks, blk, fpad, dtype))
    wp_arr, wd_arr, bias_arr, xp_ws, cols_ws, z_ws = ws
    if size:
        y_out, py_out = np.empty((1, 1, 1), dtype=dtype), _result(y_out, (g.n, g.f, g.ph, g.pw), dtype)
        arg_out = _result(arg_out, (g.n, g.f, g.ph, g.pw), np.int32)
    else:
        y_full = _result(y_out, (g.n, g.f, oh, ow), dtype)
        y_out = y_full.reshape(g.n, g.f, g.l)
        py_out, arg_out = np.empty((1, 1, 1, 1), dtype=dtype), np.empty((1, 1, 1, 1), dtype=np.int32)
    cdef floating[::1] wd = wd_arr.reshape(-1)   # a view: the cached array
    cdef floating[:, ::1] wp = wp_arr
    cdef floating[::1] bias = bias_arr
    _layout_weights(&w[0, 0, 0, 0], b, g, blk, wp, wd, bias)
    cdef floating[:, :, ::1] cols = cols_ws
    cdef floating[:, :, :, ::1] xp = xp_ws
    cdef floating[:, :, ::1] z = z_ws
    cdef floating[:, :, ::1] y = y_out
    cdef floating[:, :, :, ::1] py = py_out
    cdef int[:, :, :, ::1] arg = arg_out
    for q in prange(blocks * shares, nogil=True, schedule="dynamic", num_threads=chunks):
        tid = openmp.omp_get_thread_num()
        f0 = (q % shares) * share
        _forward_chunk(x, wp, &bias[f0], g, (q // shares) * sb, min(g.n, (q // shares + 1) * sb), f0,
                       min(share, g.f - f0), cols[tid], xp[tid], &wd[_weights_at(g, f0, blk)],
                       &w[0, 0, 0, 0], z[tid], y, py, arg, relu)
    if size:
        return py_out, arg_out
    return y_full


def conv2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                   const floating[::1] b, Py_ssize_t stride, Py_ssize_t pad,
                   Py_ssize_t oh, Py_ssize_t ow, tuple codes, out=None):
    """x (N, C, H, W), w (F, C, KH, KW), b (F,) -> y (N, F, OH, OW) (into ``out`` when given),
    on the paths of ``codes`` (ConvPlan.codes)."""
    return _forward(x, w, b, stride, pad, oh, ow, codes, 0, 1, out, None)


def conv2d_relu_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                        const floating[::1] b, Py_ssize_t stride, Py_ssize_t pad,
                        Py_ssize_t oh, Py_ssize_t ow, tuple codes, out=None):
    """y (N, F, OH, OW) = max(conv(x), 0), the ReLU applied to each sample's output while it
    is still in cache (a conv followed by a ReLU and no pool)."""
    return _forward(x, w, b, stride, pad, oh, ow, codes, 0, 1, out, None, True)


def conv2d_relu_maxpool_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                                const floating[::1] b, Py_ssize_t stride, Py_ssize_t pad,
                                Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t size, Py_ssize_t pstride,
                                tuple codes, out=None, arg_out=None):
    """maxpool(relu(conv(x))) without materialising the conv output:
    -> y (N, F, PH, PW), arg (N, F, PH, PW) int32 (flat oy*OW + ox of the max in the
    conv-output plane, or -1 where the max is <= 0 and no gradient flows)."""
    return _forward(x, w, b, stride, pad, oh, ow, codes, size, pstride, out, arg_out)


# ----------------------------------------------------------------------------- backward
cdef inline floating _route(const floating* dpy, const int* arg, Geometry g, floating* out,
                           Py_ssize_t ystride, Py_ssize_t xstride) noexcept nogil:
    """out[oy*ystride + ox*xstride] += the pooled gradient at its window's max; -> its sum."""
    if floating is float:
        return fl_route_pool_grad_f32(dpy, arg, g.ph, g.pw, g.ow, g.size, g.ps, out, ystride, xstride)
    else:
        return fl_route_pool_grad_f64(dpy, arg, g.ph, g.pw, g.ow, g.size, g.ps, out, ystride, xstride)


cdef inline floating _routed_sum(const floating* dpy, const int* arg, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return fl_routed_sum_f32(dpy, arg, n)
    else:
        return fl_routed_sum_f64(dpy, arg, n)


cdef inline void _expand(const floating* dpy, const int* arg, Geometry g, floating* out,
                         Py_ssize_t ldrow, const floating* end) noexcept nogil:
    """out[oy*ldrow + ox] = the 2x2-pooled gradient where (oy, ox) is its window's max, else 0
    (end: the end of the pooled-gradient array, which bounds the vector loads)."""
    if floating is float:
        fl_expand_pool2_grad_f32(dpy, arg, g.ph, g.pw, g.oh, g.ow, out, ldrow, end)
    else:
        fl_expand_pool2_grad_f64(dpy, arg, g.ph, g.pw, g.oh, g.ow, out, ldrow, end)


cdef inline void _dw_columns(const floating* xp, Geometry g, const floating* dzr, Py_ssize_t nf,
                             floating* dwv) noexcept nogil:
    """dwv (NF, K*LB) += per-lane dW sums of one sample from its padded input xp and the
    row-padded dz (NF, OH, OWr) of NF filters: the output columns along the lanes (KW 3 or 5,
    stride 1)."""
    if g.kw == 3:
        if floating is float:
            fl_dw_lanes_k3_f32(xp, g.c, g.hs, g.ws, g.kh, dzr, nf, g.oh, g.owr, dwv)
        else:
            fl_dw_lanes_k3_f64(xp, g.c, g.hs, g.ws, g.kh, dzr, nf, g.oh, g.owr, dwv)
    else:
        if floating is float:
            fl_dw_lanes_k5_f32(xp, g.c, g.hs, g.ws, g.kh, dzr, nf, g.oh, g.owr, dwv)
        else:
            fl_dw_lanes_k5_f64(xp, g.c, g.hs, g.ws, g.kh, dzr, nf, g.oh, g.owr, dwv)


cdef inline void _dw_pooled(const floating* xp, Geometry g, const floating* dpy, const int* arg,
                            Py_ssize_t nf, const int* offsets, const int* row_offsets, floating* active_g,
                            int* active_off, floating* dwl) noexcept nogil:
    """dwl (NF, C*KH*LB) += per-lane dW sums of one sample from its padded input xp and the
    pooled gradient dpy (NF, PH, PW) at its windows' argmaxes arg (csrc/pool_dw.h)."""
    if floating is float:
        fl_dw_pooled_argmax_f32(xp, row_offsets, g.c * g.kh, dpy, arg, g.ph * g.pw, g.ph * g.pw, offsets, nf,
                                active_g, active_off, dwl)
    else:
        fl_dw_pooled_argmax_f64(xp, row_offsets, g.c * g.kh, dpy, arg, g.ph * g.pw, g.ph * g.pw, offsets, nf,
                                active_g, active_off, dwl)


cdef bint _all_finite(const floating[:, :, :, ::1] x):
    """Whether x holds no Inf and no NaN."""
    cdef Py_ssize_t n = x.shape[0] * x.shape[1] * x.shape[2] * x.shape[3]
    with nogil:
        if floating is float:
            return fl_all_finite_f32(&x[0, 0, 0, 0], n) != 0
        else:
            return fl_all_finite_f64(&x[0, 0, 0, 0], n) != 0


cdef inline int _winograd_dw(const floating* xp, Geometry g, const floating* dzr, floating[:, ::1] vm,
                             floating* du, int k, bint last) noexcept nogil:
    """du (Q, Fp, Cq) += the Winograd weight gradient (before its filter-domain transform,
    _sum_winograd_dw) of one sample, from its padded input xp and the row-padded dz (F, ZROWS,
    OWr): its tiles go to columns k * DWPS.. of vm (V (Q Cq, DWCOLS + LB), then the gradient
    tiles (Q Fp, DWCOLS + LB)), and the GEMMs run once DWG samples (or the ``last``) are
    there; -> the samples waiting.  Large samples: tiles and GEMMs per pass of tile rows."""
    cdef Py_ssize_t th = (g.oh + 1) // 2, tw = (g.ow + 1) // 2, ty0, ty1, ldp = g.dwcols + LB
    cdef floating* v = &vm[0, 0]
    cdef floating* mq = &vm[g.wq * g.cq, 0]
    if g.dwg:
        _winograd_dw_tiles(xp, g, dzr, 0, th, v + k * g.dwps, mq + k * g.dwps, ldp)
        k += 1
        if k == g.dwg or last:
            _winograd_dw_gemms(g, v, mq, ldp, k * g.dwps, du)
            k = 0
        return k
    ty0 = 0
    while ty0 < th:
        ty1 = min(th, ty0 + g.wtr)
        _winograd_dw_tiles(xp, g, dzr, ty0, ty1, v, mq, ldp)
        _winograd_dw_gemms(g, v, mq, ldp, _round_up((ty1 - ty0) * tw, LB), du)
        ty0 = ty1
    return 0


cdef inline void _winograd_dw_tiles(const floating* xp, Geometry g, const floating* dzr, Py_ssize_t ty0,
                                    Py_ssize_t ty1, floating* v, floating* mq, Py_ssize_t ldp) noexcept nogil:
    if floating is float:
        fl_winograd_dw_tiles_f32(xp, g.c, g.hs, g.ws, dzr, g.f, g.owr, g.oh, g.ow, ty0, ty1,
                                 v, g.cq * ldp, mq, g.fp * ldp, ldp, g.kh)
    else:
        fl_winograd_dw_tiles_f64(xp, g.c, g.hs, g.ws, dzr, g.f, g.owr, g.oh, g.ow, ty0, ty1,
                                 v, g.cq * ldp, mq, g.fp * ldp, ldp, g.kh)


cdef inline void _winograd_dw_gemms(Geometry g, const floating* v, const floating* mq, Py_ssize_t ldp,
                                    Py_ssize_t cols, floating* du) noexcept nogil:
    if floating is float:
        fl_winograd_dw_gemms_f32(v, g.cq * ldp, mq, g.fp * ldp, ldp, g.cq, g.fp, cols, g.wq, du)
    else:
        fl_winograd_dw_gemms_f64(v, g.cq * ldp, mq, g.fp * ldp, ldp, g.cq, g.fp, cols, g.wq, du)


cdef inline void _dw_direct(const floating* xp, Geometry g, const floating* dzt, Py_ssize_t lanes,
                            floating* dwt) noexcept nogil:
    """dwt (K, Fq) += dW^T of one sample from its padded input xp and dzt (L, Fq), for the
    filter lanes dzt and dwt start at (lanes: a multiple of LB)."""
    if g.kw == 5:
        if floating is float:
            fl_dw_direct_k5_f32(xp, g.c, g.hs, g.ws, g.kh, g.s, dzt, g.fq, lanes, g.oh, g.ow, dwt)
        else:
            fl_dw_direct_k5_f64(xp, g.c, g.hs, g.ws, g.kh, g.s, dzt, g.fq, lanes, g.oh, g.ow, dwt)
    else:
        if floating is float:
            fl_dw_direct_k3_f32(xp, g.c, g.hs, g.ws, g.kh, g.s, dzt, g.fq, lanes, g.oh, g.ow, dwt)
        else:
            fl_dw_direct_k3_f64(xp, g.c, g.hs, g.ws, g.kh, g.s, dzt, g.fq, lanes, g.oh, g.ow, dwt)


cdef void _gradient_layouts(const floating[:, :, ::1] dy, const floating[:, :, :, ::1] dpy,
                            const int[:, :, :, ::1] arg, const floating[:, :, ::1] yr, bint relu,
                            Geometry g, Py_ssize_t n, bint fused, bint want_dz, bint want_dzt, bint want_dzr,
                            floating[:, ::1] dz, floating[:, ::1] dzt, floating[:, :, ::1] dzr,
                            bint with_db, floating[::1] db) noexcept nogil:
    """Sample n's conv-output gradient in the layouts its dW and dx kernels read --
    dz (F, L) (rows padded to Lp), dzt (L, Fq) transposed, dzr (F, OH, OWr) row-padded --
    from dy[n] (plain; with a ReLU after the conv, yr (N, F, L) its output, only where
    yr > 0) or from the pooled gradient routed to each window's max (fused);
    with_db: db += its sum over positions."""
    cdef Py_ssize_t f, l, oy
    cdef floating acc
    cdef const floating* end
    cdef const floating* src
    cdef const floating* ysrc
    cdef floating* masked
    if g.pool_grad == POOL_GRAD_EXPAND_2X2:     # vector selects, no zeroing or scatter
        end = &dpy[0, 0, 0, 0] + g.n * g.f * g.ph * g.pw
        for f in range(g.f):
            if with_db:
                db[f] += _routed_sum(&dpy[n, f, 0, 0], &arg[n, f, 0, 0], g.ph * g.pw)
            if want_dz or want_dzt:
                _expand(&dpy[n, f, 0, 0], &arg[n, f, 0, 0], g, &dz[f, 0], g.ow, end)
            if want_dzr:
                _expand(&dpy[n, f, 0, 0], &arg[n, f, 0, 0], g, &dzr[f, 0, 0], g.owr, end)
        if want_dzt:
            _transpose(&dz[0, 0], g.lp, g.f, g.l, &dzt[0, 0], g.fq)
        return
    if not fused:           # a plain conv: whole rows copied, db a vectorised sum
        for f in range(g.f):
            src = &dy[n, f, 0]
            if relu:                        # only where the ReLU after the conv passed it
                ysrc, masked = &yr[n, f, 0], &dz[f, 0]
                for l in range(g.l):
                    masked[l] = src[l] if ysrc[l] > 0 else 0
                src = masked
            if with_db:
                acc = 0
                for l in range(g.l):
                    acc = acc + src[l]
                db[f] += acc
            if (want_dz or want_dzt) and src != &dz[f, 0]:
                memcpy(&dz[f, 0], src, g.l * sizeof(floating))
            if want_dzr:
                for oy in range(g.oh):
                    memcpy(&dzr[f, oy, 0], src + oy * g.ow, g.ow * sizeof(floating))
        if want_dzt:        # dz (padding zero) as the source of the transposed layout
            _transpose(&dz[0, 0], g.lp, g.f, g.l, &dzt[0, 0], g.fq)
        return
    if want_dz:
        memset(&dz[0, 0], 0, dz.shape[0] * dz.shape[1] * sizeof(floating))
    if want_dzt:
        memset(&dzt[0, 0], 0, dzt.shape[0] * dzt.shape[1] * sizeof(floating))
    if want_dzr:
        memset(&dzr[0, 0, 0], 0, dzr.shape[0] * dzr.shape[1] * dzr.shape[2] * sizeof(floating))
    for f in range(g.f):    # any other pool: a branch-free scatter
        acc = 0
        if with_db and not (want_dz or want_dzt or want_dzr):    # the pooled dW: db only
            acc = _routed_sum(&dpy[n, f, 0, 0], &arg[n, f, 0, 0], g.ph * g.pw)
        if want_dz:
            acc = _route(&dpy[n, f, 0, 0], &arg[n, f, 0, 0], g, &dz[f, 0], g.ow, 1)
        if want_dzt:
            acc = _route(&dpy[n, f, 0, 0], &arg[n, f, 0, 0], g, &dzt[0, f], g.ow * g.fq, g.fq)
        if want_dzr:
            acc = _route(&dpy[n, f, 0, 0], &arg[n, f, 0, 0], g, &dzr[f, 0, 0], g.owr, 1)
        if with_db:
            db[f] += acc


cdef inline void _winograd_dx(const floating[:, ::1] dz, Geometry g, floating[:, :, ::1] dzp,
                              const floating[:, ::1] u, const floating* w, floating[:, ::1] vm,
                              floating* dx) noexcept nogil:
    """dx (C, H, W) of one sample = dz (F, OH, OW) (rows of stride Lp) padded by KH-1 - p into
    dzp (F, ZHS, ZWS), convolved by Winograd with u (Q, C, F): the rotated filters (of the
    layer's w (F, C, KH, KW))."""
    cdef Py_ssize_t f
    for f in range(g.f):
        _pad_copy(&dz[f, 0], 1, g.oh, g.ow, g.kh - 1 - g.p, &dzp[f, 0, 0], g.zhs, g.zws)
    _winograd(&dzp[0, 0, 0], g.f, g.zhs, g.zws, g.kh, &u[0, 0], g.c * g.f, w, True, g.c, NULL, g.h,
              g.w, g.xtr, g.xpp, vm, dx, g.h * g.w)


cdef void _backward_chunk(const floating[:, :, ::1] dy, const floating[:, :, :, ::1] dpy,
                          const int[:, :, :, ::1] arg, const floating[:, :, ::1] yr, bint relu,
                          const floating[:, :, :, ::1] x,
                          const floating[:, ::1] wpt, const floating* w, Geometry g, Py_ssize_t start,
                          Py_ssize_t stop, bint need_dx, bint fused, Py_ssize_t f0, Py_ssize_t nf,
                          Py_ssize_t c0, Py_ssize_t nc, bint with_db, floating[:, ::1] rows,
                          floating[:, ::1] dz,
                          floating[:, ::1] dzt, floating[:, :, ::1] dzr, floating[:, ::1] dcols,
                          floating[:, :, ::1] xp, floating[:, :, ::1] dxp, floating[:, ::1] dw,
                          floating[::1] db, floating[:, :, :, ::1] dx, const int* offsets,
                          const int* row_offsets, floating* active_g, int* active_off) noexcept nogil:
    """Accumulate dW of the NF filters from f0 (none when NF = 0) and, with_db, db over
    samples [start, stop); fold dx of the NC input channels from c0 per sample.
    dW accumulates as dw: (Fp, Kq) for the GEMM paths, (K, Fq) (transposed) with
    filters along the lanes, (F, K*LB) per-lane partial sums with columns along the
    lanes.  xp and dxp (C, HS, WS) are padded-plane workspaces: the input for dW, and
    the dx accumulator of the stride-1 col2im.  The padding of dz, dzt and dzr (past
    L, F and OW) is zero and never written.  The pooled dW (F, C*KH*LB) per-lane sums
    reads the pooled gradient itself, with its tables (offsets, row_offsets) and the
    thread's scratch for the active outputs (active_g, active_off)."""
    cdef Py_ssize_t n, c, yy, kk = g.kh * g.kw
    cdef Py_ssize_t r0 = (c0 * kk) // MB * MB, r1 = min(g.kp, _round_up((c0 + nc) * kk, MB))
    cdef bint want_dz = (need_dx and nc > 0) or (nf > 0 and (g.dw == DW_GEMM_IM2COL or
                                                            g.dw == DW_GEMM_IM2ROW))
    cdef bint want_dzt = nf > 0 and g.dw == DW_DIRECT_FILTER_LANES
    cdef int waiting = 0          # Winograd dW: samples whose tiles wait for their GEMMs
    cdef bint want_dzr = nf > 0 and (g.dw == DW_DIRECT_COLUMN_LANES or _dw_winograd(g))
    cdef bint rows_transposed = g.dw == DW_GEMM_IM2ROW and _im2row_is_transpose(g)
    for n in range(start, stop):
        _gradient_layouts(dy, dpy, arg, yr, relu, g, n, fused, want_dz, want_dzt, want_dzr, dz, dzt, dzr,
                          with_db, db)
        if nf and g.dw != DW_GEMM_IM2COL and not rows_transposed:
            _pad_copy(&x[n, 0, 0, 0], g.c, g.h, g.w, g.p, &xp[0, 0, 0], g.hs, g.ws)
        if nf == 0:
            pass
        elif g.dw == DW_DIRECT_COLUMN_LANES:
            _dw_columns(&xp[0, 0, 0], g, &dzr[f0, 0, 0], nf, &dw[f0, 0])
        elif g.dw == DW_POOLED_ARGMAX:
            _dw_pooled(&xp[0, 0, 0], g, &dpy[n, f0, 0, 0], &arg[n, f0, 0, 0], nf, offsets, row_offsets,
                       active_g, active_off, &dw[f0, 0])
        elif _dw_winograd(g):
            waiting = _winograd_dw(&xp[0, 0, 0], g, &dzr[0, 0, 0], rows, &dw[0, 0], waiting, n == stop - 1)
        elif g.dw == DW_DIRECT_FILTER_LANES:
            _dw_direct(&xp[0, 0, 0], g, &dzt[0, f0], _round_up(nf, LB), &dw[0, f0])
        elif g.dw == DW_GEMM_IM2ROW:
            if rows_transposed:             # a 1x1 conv's rows: x[n] (C, L) transposed, in registers
                _transpose(&x[n, 0, 0, 0], g.l, g.c, g.l, &rows[0, 0], g.kq)
            elif floating is float:
                fl_im2row_f32(&xp[0, 0, 0], g.c, g.hs, g.ws, g.kh, g.kw, g.s, g.oh, g.ow, &rows[0, 0], g.kq)
            else:
                fl_im2row_f64(&xp[0, 0, 0], g.c, g.hs, g.ws, g.kh, g.kw, g.s, g.oh, g.ow, &rows[0, 0], g.kq)
            _gemm_nn(&dz[f0, 0], g.lp, 1, &rows[0, 0], g.kq, &dw[f0, 0], g.kq,
                     min(_round_up(nf, MB), g.fp - f0), g.l, g.kq, NULL, True)
        else:
            _im2col_one(x[n], g.kh, g.kw, g.s, g.p, g.oh, g.ow, rows)
            _gemm_nt_acc(&dz[f0, 0], g.lp, &rows[0, 0], g.lp, &dw[f0, 0], g.kq,
                         min(_round_up(nf, MB), g.fp - f0), g.kq, g.lp)
        if not need_dx or nc == 0:
            continue
        if _dx_winograd(g):
            _winograd_dx(dz, g, dxp, wpt, w, dcols, &dx[n, 0, 0, 0])
            continue
        if g.dx == DX_GEMM_1X1:     # dx[n] (C, L) = W^T dz: a 1x1 conv's col2im is the identity
            _gemm_nn(&wpt[c0, 0], g.fp, 1, &dz[0, 0], g.lp, &dx[n, c0, 0, 0], g.l, nc, g.fp, g.lp, NULL, False)
            continue
        # dcols rows of channels c0 .. c0 + NC (whole GEMM tiles: a few more rows at the ends)
        _gemm_nn(&wpt[r0, 0], g.fp, 1, &dz[0, 0], g.lp, &dcols[1 + r0, 0], g.lp, r1 - r0, g.fp, g.lp,
                 NULL, False)
        if g.dx == DX_COL2IM:
            _col2im_one(dcols[1 + c0 * kk:], g.kh, g.kw, g.s, g.p, g.oh, g.ow, dx[n, c0:c0 + nc])
            continue
        # stride 1: fold into the padded planes with whole vectors, then crop
        memset(&dxp[c0, 0, 0], 0, nc * g.hs * g.ws * sizeof(floating))
        if floating is float:
            fl_col2im_s1_f32(&dcols[1 + c0 * kk, 0], g.lp, nc, g.kh, g.kw, g.oh, g.ow, &dxp[c0, 0, 0],
                             g.hs, g.ws)
        else:
            fl_col2im_s1_f64(&dcols[1 + c0 * kk, 0], g.lp, nc, g.kh, g.kw, g.oh, g.ow, &dxp[c0, 0, 0],
                             g.hs, g.ws)
        for c in range(c0, c0 + nc):
            for yy in range(g.h):
                memcpy(&dx[n, c, yy, 0], &dxp[c, yy + g.p, g.p], g.w * sizeof(floating))


cdef tuple _backward_workspaces(Geometry g, Py_ssize_t chunks, Py_ssize_t blocks, bint need_dx, dtype):
    """(W^T (Kp, Fp), im2row/im2col rows, dz (Fp, Lp), dzt (L, Fq),
    dzr (F, OH, OWr), dcols, padded input planes, padded dx planes, dW and db partial
    sums per block); every padding zero."""
    cdef tuple none3 = (chunks, 1, 1)
    rows_ws = dzt_ws = np.zeros(none3, dtype=dtype)
    dzr_ws = np.zeros((chunks, 1, 1, 1), dtype=dtype)
    if g.dw == DW_DIRECT_COLUMN_LANES:    # row-padded dz; per-lane partial sums (F, K*LB)
        dzr_ws = aligned_zeros((chunks, g.f, g.oh, g.owr), dtype)
        dw_part = aligned_zeros((blocks, g.f, g.k * LB), dtype)
    elif _dw_winograd(g):                 # row-padded dz; V and gradient tiles; dU (Q Fp, Cq)
        dzr_ws = aligned_zeros((chunks, g.f, g.zrows, g.owr), dtype)
        rows_ws = aligned_zeros((chunks, g.wq * (g.cq + g.fp), g.dwcols + LB), dtype)
        dw_part = aligned_zeros((blocks, g.wq * g.fp, g.cq), dtype)
    elif g.dw == DW_DIRECT_FILTER_LANES:  # transposed (K, Fq)
        dzt_ws = aligned_zeros((chunks, g.l, g.fq), dtype)
        dw_part = aligned_zeros((blocks, g.k, g.fq), dtype)
    elif g.dw == DW_POOLED_ARGMAX:        # per-lane partial sums (F, C*KH*LB); no dz layout
        dw_part = aligned_zeros((blocks, g.f, g.c * g.kh * LB), dtype)
    else:
        by_rows = g.dw == DW_GEMM_IM2ROW
        rows_ws = aligned_zeros(_dims(chunks, g.l, g.kq) if by_rows else _dims(chunks, g.kp, g.lp), dtype)
        dw_part = aligned_zeros((blocks, g.fp, g.kq), dtype)
    # dcols: a spare row before and two after (the vector col2im reads a little
    # outside the rows); the padded planes' borders stay zero
    dcols_ws = aligned_zeros(_dims(chunks, g.kp + 3, g.lp) if need_dx else none3, dtype)
    dxp_ws = aligned_zeros(_dims(chunks, g.c, g.hs, g.ws) if need_dx else _dims(chunks, 1, 1, 1), dtype)
    wpt_ws = aligned_zeros((g.kp, g.fp), dtype)
    if need_dx and _dx_winograd(g):       # V and M per thread; dz padded; U (Q C, F)
        dcols_ws = aligned_zeros((chunks, g.wq * (g.f + g.c), g.xpp + LB), dtype)
        dxp_ws = aligned_zeros((chunks, g.f, g.zhs, g.zws), dtype)
        wpt_ws = aligned_zeros((g.wq * g.c, g.f), dtype)
    return (wpt_ws, rows_ws,
            aligned_zeros((chunks, g.fp, g.lp), dtype), dzt_ws, dzr_ws, dcols_ws,
            aligned_zeros((chunks, g.c, g.hs, g.ws), dtype), dxp_ws,
            dw_part, aligned_zeros((blocks, g.f), dtype), _pooled_workspaces(g, chunks, dtype))


cdef tuple _pooled_workspaces(Geometry g, Py_ssize_t chunks, dtype):
    """The pooled dW's tables -- the offset in the padded input of each conv output's
    receptive field (L,) and of each (channel, kernel row) (C*KH,) -- and each thread's
    active pooled outputs, gradients (T, P) and offsets (T, P); dummies for other paths."""
    if g.dw != DW_POOLED_ARGMAX:
        return (np.zeros(1, np.int32), np.zeros(1, np.int32), np.zeros((chunks, 1), dtype),
                np.zeros((chunks, 1), np.int32))
    positions = np.arange(g.l, dtype=np.int64)
    offsets = (positions // g.ow * g.ws + positions % g.ow) * g.s
    rows = np.arange(g.c * g.kh, dtype=np.int64)
    row_offsets = rows // g.kh * (g.hs * g.ws) + rows % g.kh * g.ws
    return (offsets.astype(np.int32), row_offsets.astype(np.int32),
            np.zeros((chunks, g.ph * g.pw), dtype), np.zeros((chunks, g.ph * g.pw), np.int32))


cdef inline bint _im2row_is_transpose(Geometry g) noexcept nogil:
    """Whether im2row (L, K) of a sample is its input (C, L) transposed: a 1x1 kernel at
    stride 1 without padding."""
    return g.kh == 1 and g.kw == 1 and g.s == 1 and g.p == 0


cdef Py_ssize_t _backward_shares(Geometry g, Py_ssize_t blocks, bint need_dx, Py_ssize_t* fshare,
                                 Py_ssize_t* cshare, Py_ssize_t* dw_items) noexcept nogil:
    """Work items per block of samples in the backward: 1 (fshare = F, cshare = C), unless the
    blocks are fewer than the threads and a sample is worth sharing (_worth_sharing): then
    dw_items items take dW of fshare filters each (whole tiles: 6 with columns along the
    lanes, LB filter lanes, 8 GEMM rows) and the others dx of cshare input channels each (4
    for the 1x1 GEMM, 1 for col2im), so every thread works on the same samples; the first
    item also sums db.  dW and dx take half the items each (about the same work), and a
    Winograd dW or dx (one transform for every filter and channel) one item.  Each output
    element is the same sum, in the same order, whichever item computes it."""
    cdef Py_ssize_t threads = openmp.omp_get_max_threads(), want, dw_most, dx_most, dwi, dxi
    cdef Py_ssize_t funit = 0 if _dw_winograd(g) else (6 if g.dw == DW_DIRECT_COLUMN_LANES else
                                                       (LB if g.dw == DW_DIRECT_FILTER_LANES else
                                                        (1 if g.dw == DW_POOLED_ARGMAX else 8)))
    cdef Py_ssize_t cunit = 0 if _dx_winograd(g) else (MB if g.dx == DX_GEMM_1X1 else 1)
    fshare[0], cshare[0], dw_items[0] = g.f, g.c, 1
    if blocks >= threads or not _worth_sharing(g, 1 << 22):
        return 1
    want = (threads + blocks - 1) // blocks
    dw_most = (g.f + funit - 1) // funit if funit else 1
    dx_most = ((g.c + cunit - 1) // cunit if cunit else 1) if need_dx else 0
    dwi = min(dw_most, max(1, want // 2) if need_dx else want)
    dxi = min(dx_most, want - dwi)
    if dwi + dxi <= 1:
        return 1
    if funit:
        fshare[0] = _round_up((g.f + dwi - 1) // dwi, funit)
    if cunit and dxi:
        cshare[0] = _round_up((g.c + dxi - 1) // dxi, cunit)
    dw_items[0] = dwi
    return dwi + dxi


cdef inline bint _worth_sharing(Geometry g, Py_ssize_t least) noexcept nogil:
    """Whether a block of samples (F*K*L multiply-adds each) is worth splitting among
    threads: at least ``least`` multiply-adds.  Waking a second thread, and the data it then
    pulls into its own caches, cost about what 2^19 multiply-adds take in the forward (batch
    1, 2 threads, medians, ms: 3 -> 32 on 32x32, 0.9M, 0.041 -> 0.030; 64 -> 128 1x1 on
    16x16, 2.1M, 0.064 -> 0.043).  The backward's items also each redo the sample's gradient
    layouts and are less even (dW and dx rarely cost the same): 2^22 (32 -> 64 stride 2,
    4.7M, 0.285 -> 0.214; 5x5 16 -> 32 on 24x24, 7.4M, 0.336 -> 0.28; but 64 -> 64 on 8x8,
    2.4M, 0.187 -> 0.20 and 1x1 64 -> 128, 2.1M, 0.154 -> 0.156)."""
    return min(g.n, SB) * g.f * g.k * g.l >= least


def _backward(const floating[:, :, :, ::1] grad, const int[:, :, :, ::1] arg_in,
              const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
              Py_ssize_t stride, Py_ssize_t pad, Py_ssize_t oh, Py_ssize_t ow, tuple codes,
              Py_ssize_t size, Py_ssize_t pstride, bint need_dx, dx_out, dw_out, db_out, y_relu=None):
    """The conv's gradients from dy (N, F, OH, OW), or from the pooled gradient and its arg
    (size > 0); with y_relu (N, F, OH, OW), the output of a ReLU after the conv, dy passes
    only where y_relu > 0."""
    cdef bint fused = size != 0
    cdef bint relu = y_relu is not None
    if codes[3] == DW_POOLED_ARGMAX and not _all_finite(x):
        # the dense dW's sum holds 0 * x for every conv output the pool dropped: NaN where x is
        # Inf or NaN, as the reference's; the pooled dW never multiplies those, so it cannot say it
        codes = codes[:3] + (DW_GEMM_IM2ROW,) + codes[4:]
    cdef Geometry g = _geometry(x.shape[0], x.shape[1], x.shape[2], x.shape[3], w.shape[0],
                                w.shape[2], w.shape[3], stride, pad, oh, ow, codes, size, pstride,
                                grad.shape[2] if fused else 0, grad.shape[3] if fused else 0)
    dtype = np.float32 if floating is float else np.float64
    # work items: blocks of SB samples, each split into shares of its filters (dW) and input
    # channels (dx) when the blocks are fewer than the threads
    cdef Py_ssize_t blocks = (g.n + SB - 1) // SB, q, tid, j, f0, c0, nf, nc
    cdef Py_ssize_t fshare, cshare, dw_items
    cdef Py_ssize_t shares = _backward_shares(g, blocks, need_dx, &fshare, &cshare, &dw_items)
    cdef Py_ssize_t chunks = _team_size(blocks * shares)
    key = ("conv backward", dtype, chunks, blocks, need_dx) + _geometry_key(g)
    ws = _workspace.lookup(key)
    if ws is None:
        ws = _workspace.store(key, _backward_workspaces(g, chunks, blocks, need_dx, dtype))
    wpt_arr, rows_ws, dz_ws, dzt_ws, dzr_ws, dcols_ws, xp_ws, dxp_ws, dw_part, db_part, pooled_ws = ws
    if need_dx:
        dx_out = _result(dx_out, (g.n, g.c, g.h, g.w), dtype)
        if g.dx == DX_COL2IM:       # it accumulates; col2im_s1 writes every element (a crop)
            dx_out.fill(0)
    else:
        dx_out = np.empty((1, 1, 1, 1), dtype=dtype)
    dw_out = _result(dw_out, np.asarray(w).shape, dtype)
    db_out = _result(db_out, (g.f,), dtype)
    cdef const floating[:, :, ::1] dy = np.asarray(grad).reshape(grad.shape[0], grad.shape[1], -1)
    cdef const floating[:, :, ::1] yr = (np.asarray(y_relu).reshape(g.n, g.f, g.l) if relu else
                                         np.zeros((1, 1, 1), dtype=dtype))
    cdef floating[:, ::1] wpt = wpt_arr
    cdef floating[:, :, ::1] rows = rows_ws
    cdef floating[:, :, ::1] dz = dz_ws
    cdef floating[:, :, ::1] dzt = dzt_ws
    cdef floating[:, :, :, ::1] dzr = dzr_ws
    cdef floating[:, :, ::1] dcols = dcols_ws
    cdef floating[:, :, :, ::1] xp = xp_ws
    cdef floating[:, :, :, ::1] dxp = dxp_ws
    cdef floating[:, :, ::1] dwp = dw_part
    cdef floating[:, ::1] dbp = db_part
    cdef floating[:, :, :, ::1] dx = dx_out
    cdef floating[:, :, :, ::1] dw = dw_out
    cdef floating[::1] db = db_out
    cdef const int[::1] offsets = pooled_ws[0]
    cdef const int[::1] row_offsets = pooled_ws[1]
    cdef floating[:, ::1] active_g = pooled_ws[2]
    cdef int[:, ::1] active_off = pooled_ws[3]
    if need_dx and _dx_winograd(g):       # the rotated filters, transformed (Q, C, F)
        _winograd_filters(&w[0, 0, 0, 0], g.f, g.c, g.kh, True, &wpt[0, 0])
    else:
        _transpose(&w[0, 0, 0, 0], g.k, g.f, g.k, &wpt[0, 0], g.fp)   # W^T padded (Kp, Fp): dx's A
    if shares > 1:                        # the items of a block share its partials
        dw_part.fill(0)
        db_part.fill(0)
    for q in prange(blocks * shares, nogil=True, schedule="dynamic", num_threads=chunks):
        tid = openmp.omp_get_thread_num()
        # item j of its block: dW of filters f0 .. f0 + nf, dx of channels c0 .. c0 + nc (values
        # assigned here, not through pointers: prange keeps them private to the thread)
        j = q % shares
        f0 = min(j * fshare, g.f)
        nf = min(fshare, g.f - f0) if j < dw_items else 0
        c0 = 0 if shares == 1 else min(max(j - dw_items, 0) * cshare, g.c)
        nc = g.c if shares == 1 else (min(cshare, g.c - c0) if j >= dw_items else 0)
        # each block accumulates into its own dW/db partial, summed in block order below:
        # the result does not depend on which thread ran a block
        if shares == 1:
            memset(&dwp[q, 0, 0], 0, dwp.shape[1] * dwp.shape[2] * sizeof(floating))
            memset(&dbp[q, 0], 0, dbp.shape[1] * sizeof(floating))
        _backward_chunk(dy, grad, arg_in, yr, relu, x, wpt, &w[0, 0, 0, 0], g, (q // shares) * SB,
                        min(g.n, (q // shares + 1) * SB), need_dx, fused, f0, nf, c0, nc, j == 0,
                        rows[tid], dz[tid], dzt[tid], dzr[tid],
                        dcols[tid], xp[tid], dxp[tid], dwp[q // shares], dbp[q // shares], dx,
                        &offsets[0], &row_offsets[0], &active_g[tid, 0], &active_off[tid, 0])
    _sum_blocks(g, dwp, dbp, &dw[0, 0, 0, 0], &db[0])
    if _dw_winograd(g):
        _sum_winograd_dw(g, dwp, &dw[0, 0, 0, 0])
        if not np.isfinite(dw_out).all():   # NaN / Inf where the reference puts them: plain sums
            _backward(grad, arg_in, x, w, stride, pad, oh, ow, codes[:3] + (DW_DIRECT_FILTER_LANES,) + codes[4:],
                      size, pstride, False, None, dw_out, db_out, y_relu)
    return (dx_out if need_dx else None), dw_out, db_out


cdef void _sum_winograd_dw(Geometry g, floating[:, :, ::1] dwp, floating* dw) noexcept nogil:
    """dw (F, C, K, K) from the per-block Winograd partials dwp (blocks, Q Fp, Cq): summed in
    block order into the first, then transformed to the filter domain."""
    cdef Py_ssize_t q, i, j
    for q in range(1, dwp.shape[0]):
        for i in range(dwp.shape[1]):
            for j in range(dwp.shape[2]):
                dwp[0, i, j] += dwp[q, i, j]
    if floating is float:
        fl_winograd_dw_to_filters_f32(&dwp[0, 0, 0], g.f, g.c, g.fp, g.cq, g.kh, dw)
    else:
        fl_winograd_dw_to_filters_f64(&dwp[0, 0, 0], g.f, g.c, g.fp, g.cq, g.kh, dw)


cdef void _sum_blocks(Geometry g, const floating[:, :, ::1] dwp, const floating[:, ::1] dbp,
                      floating* dw, floating* db) noexcept nogil:
    """dw (F, K) and db (F,): the per-block partials summed in block order, from the
    layout of the dW mode: (blocks, F, K*LB) per-lane sums with columns along the lanes,
    (blocks, F, C*KH*LB) per-lane sums with a kernel row's taps along the lanes (pooled),
    (blocks, K, Fq) with filters along the lanes, (blocks, Fp, Kq) for the GEMM."""
    cdef Py_ssize_t q, f, k, lane
    cdef floating acc, lanes
    cdef floating* row
    cdef const floating* part
    for f in range(g.f):
        acc = 0
        for q in range(dbp.shape[0]):
            acc = acc + dbp[q, f]
        db[f] = acc
        if _dw_winograd(g):           # _sum_winograd_dw
            continue
        if g.dw == DW_GEMM_IM2COL or g.dw == DW_GEMM_IM2ROW:
            # rows of K contiguous in every block: added block after block, each element's
            # sum in the same order as below, as whole vectors (one block at batch 1
            # was a scalar loop over F*K elements: 9% of a 1x1 backward)
            row = dw + f * g.k
            for k in range(g.k):
                row[k] = 0
            for q in range(dwp.shape[0]):
                part = &dwp[q, f, 0]
                for k in range(g.k):
                    row[k] = row[k] + part[k]
            continue
        if g.dw == DW_POOLED_ARGMAX:  # lane j of row (c, i): tap (c, i, j)
            for k in range(g.k):
                acc = 0
                for q in range(dwp.shape[0]):
                    acc = acc + dwp[q, f, (k // g.kw) * LB + k % g.kw]
                dw[f * g.k + k] = acc
            continue
        for k in range(g.k):
            acc = 0
            if g.dw == DW_DIRECT_COLUMN_LANES:
                for lane in range(LB):
                    lanes = 0
                    for q in range(dwp.shape[0]):
                        lanes = lanes + dwp[q, f, k * LB + lane]
                    acc = acc + lanes
            else:                         # DW_DIRECT_FILTER_LANES
                for q in range(dwp.shape[0]):
                    acc = acc + dwp[q, k, f]
            dw[f * g.k + k] = acc


_NO_ARG = np.zeros((1, 1, 1, 1), dtype=np.int32)


def conv2d_backward(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] x,
                    const floating[:, :, :, ::1] w, Py_ssize_t stride, Py_ssize_t pad,
                    bint need_dx, tuple codes, out=None, dw_out=None, db_out=None):
    """dy (N, F, OH, OW) -> (dx (N, C, H, W) | None, dW (F, C, KH, KW), db (F,)); each into
    its ``out`` array when given."""
    return _backward(dy, _NO_ARG, x, w, stride, pad, dy.shape[2], dy.shape[3], codes, 0, 1, need_dx,
                     out, dw_out, db_out)


def conv2d_relu_backward(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] y,
                         const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                         Py_ssize_t stride, Py_ssize_t pad, bint need_dx, tuple codes, out=None,
                         dw_out=None, db_out=None):
    """Gradients of conv2d_relu_forward: dy (N, F, OH, OW) passes where its output y > 0 (the
    mask applied as each sample's gradient is laid out, no pass of its own) -> (dx | None,
    dW, db)."""
    if y.shape[0] != dy.shape[0] or y.shape[1] != dy.shape[1] or y.shape[2] != dy.shape[2] \
            or y.shape[3] != dy.shape[3]:
        raise ValueError(f"y has shape {np.asarray(y).shape}, dy {np.asarray(dy).shape}")
    return _backward(dy, _NO_ARG, x, w, stride, pad, dy.shape[2], dy.shape[3], codes, 0, 1, need_dx,
                     out, dw_out, db_out, y)


def conv2d_relu_maxpool_backward(const floating[:, :, :, ::1] dpy, const int[:, :, :, ::1] arg,
                                 const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                                 Py_ssize_t stride, Py_ssize_t pad, Py_ssize_t oh, Py_ssize_t ow,
                                 Py_ssize_t size, Py_ssize_t pstride, bint need_dx, tuple codes,
                                 out=None, dw_out=None, db_out=None):
    """Gradients of conv2d_relu_maxpool_forward: dpy (N, F, PH, PW) and its arg ->
    (dx | None, dW, db)."""
    return _backward(dpy, arg, x, w, stride, pad, oh, ow, codes, size, pstride, need_dx,
                     out, dw_out, db_out)
