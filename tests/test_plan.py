"""Convolution plans: one function picks every path; each path is named by a case here
that asserts the plan and checks both compiled backends against the reference on it."""
import numpy as np
import pytest

from checks import COMPILED, assert_close, backend, reference_conv_and_grads
from fastlenet.kernels import plan
from fastlenet.kernels import reference as ref

# (x shape, w shape, stride, pad, pool) -> the paths the plan must choose
CASES = [
    # LeNet C1 + S2: 28 columns fill two vectors, 6 filters: 6-filter tiles; dW by columns
    (((4, 1, 28, 28), (6, 1, 5, 5), 1, 2, (2, 2)),
     ("direct", "tile_f6", "expand_2x2", "direct_column_lanes", "col2im_s1")),
    # LeNet C3 + S4: 16 filters fill the lanes better than 10 columns
    (((4, 6, 14, 14), (16, 6, 5, 5), 1, 0, (2, 2)),
     ("direct_filter_lanes", "tile_filter_lanes", "expand_2x2", "direct_filter_lanes", "col2im_s1")),
    # one vector per conv row (OW 16): 8-filter tiles
    (((2, 2, 20, 20), (8, 2, 5, 5), 1, 0, (2, 2)),
     ("direct", "tile_f8", "expand_2x2", "direct_column_lanes", "col2im_s1")),
    # OW 40 > 2 vectors: the direct conv, then ReLU + 2x2 pool over its output; a 3x3 dW
    # with 1 channel by columns (4 filters: a partial block of the 6-filter tile)
    (((2, 1, 40, 40), (4, 1, 3, 3), 1, 1, (2, 2)),
     ("direct", "after_conv_2x2", "expand_2x2", "direct_column_lanes", "col2im_s1")),
    # an overlapping 3x3/2 pool after the direct conv: generic pool, routed gradient
    (((2, 2, 12, 12), (4, 2, 3, 3), 1, 1, (3, 2)),
     ("direct", "after_conv", "route", "direct_column_lanes", "col2im_s1")),
    # stride 2: im2col + GEMM, strided dW from the padded input, element-wise col2im
    (((2, 3, 11, 11), (4, 3, 3, 3), 2, 1, (2, 2)),
     ("im2col_gemm", "after_conv_2x2", "expand_2x2", "direct_filter_lanes", "col2im")),
    # narrow rows (OW 6 < 8): im2col + GEMM; KW 2: dW by GEMM over im2row (L 36 < 4 K)
    (((2, 3, 7, 7), (5, 3, 2, 2), 1, 0, None), ("im2col_gemm", "gemm_im2row", "col2im_s1")),
    # a 1x1 conv (16x16): its im2col is its input, so one GEMM straight into y; dW by GEMM
    # over im2row, its input transposed (plan.ONE_BY_ONE_DW); dx straight out of the GEMM
    # (8 channels, 256 outputs: whole tiles)
    (((2, 8, 16, 16), (4, 8, 1, 1), 1, 0, None), ("gemm_1x1", "gemm_im2row", "gemm_1x1")),
    # K = 400 taps (5x5, 16 channels, the shape suite's 16to32_k5p2): still direct
    (((2, 16, 12, 12), (8, 16, 5, 5), 1, 2, None), ("direct", "direct_column_lanes", "col2im_s1")),
    # K = 576 > 512 taps: filters along the lanes (no column tile past MAX_DIRECT_K)
    (((2, 64, 10, 10), (8, 64, 3, 3), 1, 1, None), ("direct_filter_lanes", "direct_filter_lanes", "col2im_s1")),
    # K = 2592 > 2304 taps: im2col + GEMM
    (((1, 288, 8, 8), (8, 288, 3, 3), 1, 1, None), ("im2col_gemm", "direct_filter_lanes", "col2im_s1")),
    # 12 filters fill more lanes than 11 columns: filters along the lanes, a half-empty
    # lane block, a last tile of 3 of 8 columns and, with OH 9, a last single row
    (((3, 5, 9, 11), (12, 5, 3, 3), 1, 1, None),
     ("direct_filter_lanes", "direct_filter_lanes", "col2im_s1")),
    # odd OH (9): the direct conv's two-row tiles leave a last row; the dx GEMM (M = Kp = 28)
    # ends in a 4-row block after three 8-row ones; 3x3 dW by columns, 8 filters = 6 + 2
    (((3, 3, 9, 20), (8, 3, 3, 3), 1, 1, None), ("direct", "direct_column_lanes", "col2im_s1")),
    # im2col + GEMM with 12 filters: one 8-row GEMM tile and one 4-row tile
    (((2, 3, 11, 11), (12, 3, 3, 3), 2, 1, None), ("im2col_gemm", "direct_filter_lanes", "col2im")),
    # a 1x1 conv with 6 channels (not whole GEMM row blocks) on 10x10: dx folded as usual
    (((2, 6, 10, 10), (4, 6, 1, 1), 1, 0, None), ("im2col_gemm", "gemm_im2row", "col2im_s1")),
    # Winograd F(2x2, 3x3), forward and dx: 32 channels on 8x8 (rows of 4 tiles, gathered
    # tile by tile; one pass of 4 tile rows)
    (((2, 32, 8, 8), (32, 32, 3, 3), 1, 1, None),
     ("winograd_f2x2_3x3", "direct_filter_lanes", "winograd_f2x2_3x3")),
    # ... rows of 16 tiles along the lanes, odd output (31 columns: a last half tile), 8
    # channels in; 33 rows: passes of 4 tile rows, the last one short; the dW too (rows of
    # a whole vector of tiles), its GEMMs per pass
    (((2, 8, 33, 31), (16, 8, 3, 3), 1, 1, None),
     ("winograd_f2x2_3x3", "winograd_f2x2_3x3", "winograd_f2x2_3x3")),
    # ... the dW with 9 channels and 10 filters (not multiples of the GEMM's 4: zero rows),
    # 17 samples (a second block of one), pad 0, 2 x 2 pool
    (((17, 9, 34, 34), (10, 9, 3, 3), 1, 0, (2, 2)),
     ("winograd_f2x2_3x3", "after_conv_2x2", "expand_2x2", "winograd_f2x2_3x3", "winograd_f2x2_3x3")),
    # ... before an overlapping 3x3/2 pool, odd 9x9 output (a last half tile row)
    (((2, 32, 9, 9), (32, 32, 3, 3), 1, 1, (3, 2)),
     ("winograd_f2x2_3x3", "after_conv", "route", "direct_filter_lanes", "winograd_f2x2_3x3")),
    # ... unpadded (the dx pads dz by 2), rows of 9 and 10 tiles, 2x2 pool
    (((2, 16, 20, 20), (16, 16, 3, 3), 1, 0, (2, 2)),
     ("winograd_f2x2_3x3", "after_conv_2x2", "expand_2x2", "direct_filter_lanes", "winograd_f2x2_3x3")),
    # ... pad 3: the forward and dW still, the dx not (it would pad dz by -1)
    (((1, 16, 30, 30), (16, 16, 3, 3), 1, 3, None),
     ("winograd_f2x2_3x3", "winograd_f2x2_3x3", "col2im_s1")),
    # 12 channels on rows of 8 tiles (half the lanes): too few for Winograd
    (((2, 12, 16, 16), (16, 12, 3, 3), 1, 1, None), ("direct", "direct_column_lanes", "col2im_s1")),
    # 64 channels on 4x4: too narrow for Winograd (and for the direct conv)
    (((2, 64, 4, 4), (64, 64, 3, 3), 1, 1, None), ("im2col_gemm", "direct_filter_lanes", "col2im_s1")),
    # stride 2 with 144 taps and 16 filters: filters along the lanes read at stride 2 (odd
    # 19 x 21 input: 10 x 11 outputs, a last tile of 3 columns), the pool after the stored conv
    (((3, 16, 19, 21), (16, 16, 3, 3), 2, 1, (2, 2)),
     ("direct_filter_lanes", "after_conv_2x2", "expand_2x2", "direct_filter_lanes", "col2im")),
    # ... a 5x5 kernel, pad 2, 32 filters (two lane blocks), 17 samples
    (((17, 8, 24, 23), (32, 8, 5, 5), 2, 2, None), ("direct_filter_lanes", "direct_filter_lanes", "col2im")),
    # Winograd F(2x2, 5x5), forward and dx: the shape suite's 16 -> 32 on 24x24, pad 2 (rows
    # of 12 tiles along the lanes, passes of 5 tile rows, the last one of 2)
    (((2, 16, 24, 24), (32, 16, 5, 5), 1, 2, None),
     ("winograd_f2x2_5x5", "direct_filter_lanes", "winograd_f2x2_5x5")),
    # ... odd 19 x 23 output (a last half tile row and column), 20 filters (not a multiple of
    # the GEMM's 4), 3 samples, the 2x2 pool over its stored output
    (((3, 16, 19, 23), (20, 16, 5, 5), 1, 2, (2, 2)),
     ("winograd_f2x2_5x5", "after_conv_2x2", "expand_2x2", "direct_column_lanes", "winograd_f2x2_5x5")),
    # ... unpadded (the dx pads dz by 4), 64 channels on 8x8 (rows of 4 tiles, gathered), its
    # dW too (whole samples side by side)
    (((2, 64, 12, 12), (64, 64, 5, 5), 1, 0, None), ("winograd_f2x2_5x5",) * 3),
    # ... pad 5: the forward still, the dx not (it would pad dz by -1)
    (((1, 16, 9, 9), (16, 16, 5, 5), 1, 5, None), ("winograd_f2x2_5x5", "direct_filter_lanes", "col2im_s1")),
    # ... rows of 20 tiles (a whole vector and a spill), passes of 3 tile rows, an
    # overlapping 3x3/2 pool; the dW too, its GEMMs per pass
    (((2, 16, 36, 40), (16, 16, 5, 5), 1, 2, (3, 2)),
     ("winograd_f2x2_5x5", "after_conv", "route", "winograd_f2x2_5x5", "winograd_f2x2_5x5")),
    # a 1x1 GEMM forward into the workspace, 12 filters (an 8-row and a 4-row block), 5
    # channels, before a 2x2 pool
    (((3, 5, 16, 16), (12, 5, 1, 1), 1, 0, (2, 2)),
     ("gemm_1x1", "after_conv_2x2", "expand_2x2", "gemm_im2row", "col2im_s1")),
    # 32 channels on rows of 6 tiles: too few for a gathered 5x5 Winograd (8 lanes: half rows,
    # no Winograd dW there)
    (((2, 32, 12, 12), (32, 32, 5, 5), 1, 2, None), ("direct_filter_lanes", "direct_filter_lanes", "col2im_s1")),
    # a 4x4/4 pool keeps one conv output in 16: dW from the pooled gradient even on 16 lanes
    # (POOLED_DW_MAX_RATIO), 4 filters of 3 channels
    (((2, 3, 20, 20), (4, 3, 5, 5), 1, 0, (4, 4)), ("direct", "after_conv", "route", "pooled_argmax", "col2im_s1")),
]
IDS = [",".join(names) for _, names in CASES]
# the same cases planned for 8-lane rows (an AVX2 build of the Cython backend): where
# the choice changes, and one more case (OW 8, 8 filters: tile_f8 with 16 lanes) that
# takes tile_f6 there too (SMALL_LANES_TILE_F6: any row width, 6 filters per tile)
# Under a max pool with 8 lanes, dW comes from the pooled gradient at the windows' argmaxes
# (POOLED_DW_MAX_RATIO: 8 lanes per kernel row of a pooled output, against 3 or 5 taps of
# four or more conv outputs), whatever the pool, the stride and the forward
LANES8 = {
    0: ("direct", "tile_f6", "expand_2x2", "pooled_argmax", "col2im_s1"),   # blocks of 8 columns
    1: ("direct_filter_lanes", "tile_filter_lanes", "expand_2x2", "pooled_argmax", "col2im_s1"),
    2: ("direct", "tile_f6", "expand_2x2", "pooled_argmax", "col2im_s1"),
    3: ("direct", "tile_f6", "expand_2x2", "pooled_argmax", "col2im_s1"),   # 5 blocks, 4 filters
    4: ("direct", "after_conv", "route", "pooled_argmax", "col2im_s1"),
    5: ("im2col_gemm", "after_conv_2x2", "expand_2x2", "pooled_argmax", "col2im"),
    8: ("direct_filter_lanes", "direct_filter_lanes", "col2im_s1"),   # 8 filters fill 8 lanes
    12: ("direct_filter_lanes", "direct_filter_lanes", "col2im_s1"),  # 8 filters, 20 columns
    # no Winograd dW with 8 lanes (WINOGRAD_DW_MIN_LANES): the direct dW by the lanes rule
    16: ("winograd_f2x2_3x3", "direct_filter_lanes", "winograd_f2x2_3x3"),
    17: ("winograd_f2x2_3x3", "after_conv_2x2", "expand_2x2", "pooled_argmax", "winograd_f2x2_3x3"),
    18: ("winograd_f2x2_3x3", "after_conv", "route", "pooled_argmax", "winograd_f2x2_3x3"),
    19: ("winograd_f2x2_3x3", "after_conv_2x2", "expand_2x2", "pooled_argmax", "winograd_f2x2_3x3"),
    20: ("winograd_f2x2_3x3", "direct_filter_lanes", "col2im_s1"),
    21: ("winograd_f2x2_3x3", "direct_column_lanes", "winograd_f2x2_3x3"),
    25: ("winograd_f2x2_5x5", "direct_filter_lanes", "winograd_f2x2_5x5"),
    23: ("direct_filter_lanes", "after_conv_2x2", "expand_2x2", "pooled_argmax", "col2im"),
    26: ("winograd_f2x2_5x5", "after_conv_2x2", "expand_2x2", "pooled_argmax", "winograd_f2x2_5x5"),
    27: ("winograd_f2x2_5x5", "direct_filter_lanes", "winograd_f2x2_5x5"),
    28: ("winograd_f2x2_5x5", "direct_filter_lanes", "col2im_s1"),
    29: ("winograd_f2x2_5x5", "after_conv", "route", "pooled_argmax", "winograd_f2x2_5x5"),
    31: ("winograd_f2x2_5x5", "direct_filter_lanes", "winograd_f2x2_5x5"),
}
CASES_8 = [(args, LANES8.get(i, names)) for i, (args, names) in enumerate(CASES)] + [
    (((2, 2, 12, 12), (8, 2, 5, 5), 1, 0, (2, 2)),
     ("direct", "tile_f6", "expand_2x2", "pooled_argmax", "col2im_s1")),
]
CASES_BY_LANES = {16: CASES, 8: CASES_8}
# the Numba backend's filter-lanes forward stops at 256 taps (numba_backend.MAX_FLANES_K):
# where its 16-lane plans differ (K 576: im2col + GEMM; K 400 stays direct)
NUMBA_FLANES_K = 256
NUMBA_16 = {9: ("im2col_gemm", "direct_filter_lanes", "col2im_s1")}


def planned(args, lanes, max_flanes_k=plan.MAX_FLANES_K, rules="lanes"):
    return plan.conv2d(*args, lanes=lanes, max_flanes_k=max_flanes_k, rules=rules).names


def test_the_dots_rules_take_gemms_from_dots_min_k_and_planes_dw_at_stride_1():
    for args, _ in CASES_8:
        (_, c, _, _), (_, _, kh, kw), stride = args[0], args[1], args[2]
        dots, lanes = plan.conv2d(*args, rules="dots"), plan.conv2d(*args, rules="lanes")
        assert dots.dw == ("direct_column_lanes" if stride == 1 else "gemm_im2col"), args
        one_by_one = kh == kw == 1 and stride == 1 and args[3] == 0
        gemm = c * kh * kw >= plan.DOTS_MIN_K or lanes.forward == "gemm_1x1"   # the latter Cython's only
        if one_by_one:                                                       # DOTS_1X1_DIRECT
            assert dots.forward == ("direct" if dots.out_hw[0] * dots.out_hw[1] >= c else "im2col_gemm"), args
        elif gemm:
            long_planes = stride == 1 and dots.out_hw[0] * (args[0][3] + 2 * args[3]) >= plan.DOTS_DIRECT_MIN_PLANE
            direct = long_planes and c * kh * kw <= plan.DOTS_DIRECT_MAX_K and lanes.forward != "gemm_1x1"
            assert dots.forward == ("direct" if direct else "im2col_gemm"), args
        elif lanes.forward.startswith("winograd"):                           # Cython's only
            assert dots.forward in ("direct", "direct_filter_lanes"), args
        else:
            assert dots.forward == lanes.forward, args
        if one_by_one and dots.out_hw[0] * dots.out_hw[1] > args[1][0]:       # DOTS_1X1_DX
            assert dots.dx == "gemm_1x1", args
        else:
            assert dots.dx == ("col2im" if stride != 1 else
                               "flipped_conv_s1" if c >= plan.DOTS_MIN_DX_C else "col2im_s1"), args
    with pytest.raises(ValueError, match="rules"):
        plan.conv2d(*CASES[0][0], rules="fastest")
    if "numba" in COMPILED:
        assert backend("numba").rules == "dots"
    if "cython" in COMPILED:
        assert backend("cython").rules == "lanes"


@pytest.mark.parametrize("lanes", sorted(CASES_BY_LANES))
def test_the_plan_names_its_paths(lanes):
    for args, names in CASES_BY_LANES[lanes]:
        assert planned(args, lanes) == names, args


@pytest.mark.parametrize("lanes", sorted(CASES_BY_LANES))
def test_every_path_is_named_by_a_case(lanes):
    seen = {n for _, names in CASES_BY_LANES[lanes] for n in names}
    seen |= {n for args, _ in CASES_BY_LANES[lanes] for n in planned(args, lanes, rules="dots")}
    every = set(plan.FORWARD) | set(plan.POOL) | set(plan.POOL_GRAD) | set(plan.DW) | set(plan.DX)
    unreachable = {"tile_f8"} if lanes < 16 else set()      # SMALL_LANES_TILE_F6
    assert every - {None} - unreachable == seen


def test_plans_default_to_16_lanes_and_record_their_width():
    args = CASES[0][0]
    assert plan.conv2d(*args) is plan.conv2d(*args, lanes=16)
    assert plan.conv2d(*args, lanes=8).lanes == 8 and plan.conv2d(*args).lanes == 16


def test_plans_are_immutable_and_cached():
    p = plan.conv2d((2, 1, 28, 28), (6, 1, 5, 5), 1, 2)
    assert plan.conv2d([2, 1, 28, 28], [6, 1, 5, 5], 1, 2) is p
    with pytest.raises(AttributeError):
        p.forward = "im2col_gemm"


@pytest.mark.skipif("cython" not in COMPILED, reason="the cython backend is not built")
def test_the_extension_uses_the_plan_vocabulary():
    from fastlenet.kernels import _cy_conv
    assert _cy_conv.PLAN_NAMES == {"forward": plan.FORWARD, "pool": plan.POOL, "pool_grad": plan.POOL_GRAD,
                                   "dw": plan.DW, "dx": plan.DX}
    assert _cy_conv.LANES in (4, 8, 16)              # its build's float vector width
    assert backend("cython").plan_conv2d(*CASES[0][0]).lanes == _cy_conv.LANES


@pytest.mark.skipif("cython" not in COMPILED, reason="the cython backend is not built")
def test_a_plan_that_does_not_fit_its_geometry_is_refused():
    from fastlenet.kernels import _cy_conv
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 11, 11)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    good = plan.conv2d(x.shape, w.shape, 2, 1).codes
    direct = (plan.FORWARD.index("direct"),) + good[1:]
    with pytest.raises(ValueError, match="forward 'direct' needs stride 1"):
        _cy_conv.conv2d_forward(x, w, np.zeros(4, np.float32), 2, 1, 6, 6, direct)
    lanes = good[:3] + (plan.DW.index("direct_column_lanes"),) + good[4:]
    with pytest.raises(ValueError, match="direct_column_lanes"):
        _cy_conv.conv2d_backward(np.ones((2, 4, 6, 6), np.float32), x, w, 2, 1, True, lanes)
    s1 = plan.conv2d(x.shape, w.shape, 1, 1).codes
    flipped = s1[:4] + (plan.DX.index("flipped_conv_s1"),)          # the Numba backend's dx
    with pytest.raises(ValueError, match="flipped_conv_s1"):
        _cy_conv.conv2d_backward(np.ones((2, 4, 11, 11), np.float32), x, w, 1, 1, True, flipped)
    one = plan.conv2d((2, 8, 16, 16), (4, 8, 1, 1), 1, 0).codes
    assert plan.DX[one[4]] == "gemm_1x1"
    with pytest.raises(ValueError, match="dx 'gemm_1x1' needs a 1x1 kernel"):   # a padded 1x1 conv
        _cy_conv.conv2d_backward(np.ones((2, 4, 18, 18), np.float32), np.ones((2, 8, 16, 16), np.float32),
                                 np.ones((4, 8, 1, 1), np.float32), 1, 1, True, one)


def test_float64_plans_take_the_gemm_paths_and_winograd_by_row_width():
    """The element size is part of the plan (plan.WINOGRAD_FLOAT64): in float64 the direct
    kernels lose to the GEMM paths; the Winograd forward by the channel rule, its dW and dx
    on narrow rows only."""
    narrow, wide = ((2, 32, 8, 8), (32, 32, 3, 3), 1, 1), ((2, 32, 16, 16), (32, 32, 3, 3), 1, 1)
    assert plan.conv2d(*narrow, itemsize=8).names == ("winograd_f2x2_3x3",) * 3
    assert plan.conv2d(*wide, itemsize=8).names == ("winograd_f2x2_3x3", "gemm_im2row", "col2im_s1")
    assert plan.conv2d(*wide).names == ("winograd_f2x2_3x3", "direct_filter_lanes", "winograd_f2x2_3x3")
    few = ((2, 3, 32, 32), (32, 3, 3, 3), 1, 1)             # too few channels for Winograd
    assert plan.conv2d(*few, itemsize=8).names == ("im2col_gemm", "gemm_im2row", "col2im_s1")
    assert plan.conv2d(*few).names[0] == "direct"
    assert plan.conv2d(*wide, itemsize=8).itemsize == 8 and plan.conv2d(*wide).itemsize == 4
    with pytest.raises(ValueError, match="itemsize"):
        plan.conv2d(*wide, itemsize=2)
    if "cython" in COMPILED:
        k = backend("cython")
        assert k.plan_conv2d(*wide, dtype=np.float64) is plan.conv2d(*wide, lanes=k.lanes, itemsize=8)
        with pytest.raises(TypeError, match="dtype must be float32 or float64"):
            k.plan_conv2d(*wide, dtype=np.int32)


@pytest.mark.skipif("cython" not in COMPILED, reason="the cython backend is not built")
def test_a_winograd_plan_off_its_geometry_is_refused():
    from fastlenet.kernels import _cy_conv
    x = np.ones((2, 32, 8, 8), np.float32)
    wino = plan.conv2d(x.shape, (32, 32, 3, 3), 1, 1).codes
    assert plan.FORWARD[wino[0]] == plan.DX[wino[4]] == "winograd_f2x2_3x3"
    w5 = np.ones((32, 32, 5, 5), np.float32)
    with pytest.raises(ValueError, match="forward 'winograd_f2x2_3x3' needs a 3x3 kernel"):
        _cy_conv.conv2d_forward(x, w5, np.zeros(32, np.float32), 1, 2, 8, 8, wino)
    w3 = np.ones((32, 32, 3, 3), np.float32)
    with pytest.raises(ValueError, match="dx 'winograd_f2x2_3x3' needs a 3x3 kernel, stride 1 and pad <= 2"):
        _cy_conv.conv2d_backward(np.ones((2, 32, 12, 12), np.float32), x, w3, 1, 3, True, wino)
    x16 = np.ones((2, 32, 16, 16), np.float32)
    wino5 = plan.conv2d(x16.shape, w5.shape, 1, 2).codes
    assert plan.FORWARD[wino5[0]] == plan.DX[wino5[4]] == "winograd_f2x2_5x5"
    with pytest.raises(ValueError, match="forward 'winograd_f2x2_5x5' needs a 5x5 kernel"):
        _cy_conv.conv2d_forward(x16, w3, np.zeros(32, np.float32), 1, 1, 16, 16, wino5)
    with pytest.raises(ValueError, match="dx 'winograd_f2x2_5x5' needs a 5x5 kernel, stride 1 and pad <= 4"):
        _cy_conv.conv2d_backward(np.ones((2, 32, 22, 22), np.float32), x16, w5, 1, 5, True, wino5)


@pytest.mark.skipif("cython" not in COMPILED, reason="the cython backend is not built")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, w_shape, pad", [
    ((17, 32, 8, 8), (33, 32, 3, 3), 1),      # rows of 4 tiles, gathered; 8 samples per GEMM
    ((19, 9, 16, 15), (12, 9, 3, 3), 0),      # rows of 7 tiles; 14 rows; 2 samples per GEMM
    ((17, 16, 12, 12), (12, 16, 5, 5), 2),    # 5x5: rows of 6 tiles, gathered; 5 samples per GEMM
    ((5, 8, 21, 20), (9, 8, 5, 5), 1),        # 5x5: rows of 9 tiles, passes of 5 tile rows (not grouped)
])
def test_the_winograd_dw_of_whole_samples_summed_together_matches_the_reference(x_shape, w_shape, pad, dtype):
    """Forced (an 8-lane build plans it on rows of 8 tiles; a 16-lane one on none): samples
    whose tiles fit one pass are transformed side by side and summed by one set of GEMMs."""
    from fastlenet.kernels import _cy_conv
    codes = plan.conv2d(x_shape, w_shape, 1, pad, lanes=_cy_conv.LANES).codes
    codes = codes[:3] + (plan.DW.index(f"winograd_f2x2_{w_shape[2]}x{w_shape[3]}"),) + codes[4:]
    rng = np.random.default_rng(3)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    dz = rng.standard_normal(ref.conv2d_forward(x, w, np.zeros(w_shape[0], dtype), 1, pad).shape).astype(dtype)
    got = _cy_conv.conv2d_backward(dz, x, w, 1, pad, False, codes)
    want = ref.conv2d_backward(dz, x, w, 1, pad)
    assert got[0] is None
    assert_close("dw", got[1], want[1])
    assert_close("db", got[2], want[2])


@pytest.mark.skipif("numba" not in COMPILED, reason="numba is not installed")
@pytest.mark.parametrize("path", ["gemm_1x1", "winograd_f2x2_3x3", "winograd_f2x2_5x5"])
def test_the_numba_backend_refuses_the_cython_only_paths_by_name(path):
    """Its forward has no gemm_1x1 (its dx has: DOTS_1X1_DX) and no Winograd path."""
    from fastlenet.kernels import numba_conv
    w = np.ones((4, 8, 1, 1), np.float32)
    if path.startswith("winograd"):
        with pytest.raises(ValueError, match=path):
            numba_conv._dx_block(path, None, w, 1, 0, 16, 16, None)
    x = np.ones((2, 8, 8, 8), np.float32)
    with pytest.raises(ValueError, match=path):
        numba_conv.conv_forward(x, w, np.zeros(4, np.float32), 1, 0, 8, 8, path=path)
    if path.startswith("winograd"):
        x, k = np.ones((2, 32, 8, 8), np.float32), int(path[-1])
        with pytest.raises(ValueError, match=path):
            numba_conv.conv_forward(x, np.ones((32, 32, k, k), np.float32), np.zeros(32, np.float32),
                                    1, k // 2, 8, 8, path=path)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("args", [args for args, _ in CASES_8], ids=[",".join(map(str, a[0])) for a, _ in CASES_8])
@pytest.mark.parametrize("name", COMPILED)
def test_each_planned_path_matches_the_reference(name, args, dtype):
    x_shape, w_shape, s, p, pool = args
    k = backend(name)
    lanes = k.plan_conv2d(x_shape, w_shape, s, p, pool).lanes      # the backend's own width
    if lanes in CASES_BY_LANES and dtype == np.float32:
        assert k.plan_conv2d(x_shape, w_shape, s, p, pool).names == planned(args, lanes, k.max_flanes_k, k.rules)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype) * 0.1
    grad, want = reference_conv_and_grads(x, w, b, s, p, pool, rng)
    y, grads = _conv_and_grads(k, x, w, b, s, p, pool, grad)
    for got, wanted, what in zip((y,) + tuple(grads), want, ("y", "dx", "dw", "db")):
        assert_close(what if pool is None else f"fused {what}", got, wanted)


#: the plain cases whose 16-lane plan takes a Winograd dW (WINOGRAD_DW, WINOGRAD5_DW): an
#: 8-lane build plans the direct dW there (WINOGRAD_DW_MIN_LANES), so they are forced
WINOGRAD_DW_CASES = [args for args, names in CASES if args[4] is None and names[1].startswith("winograd")]


@pytest.mark.skipif("cython" not in COMPILED, reason="the cython backend is not built")
@pytest.mark.parametrize("args", WINOGRAD_DW_CASES, ids=[",".join(map(str, a[0])) for a in WINOGRAD_DW_CASES])
def test_the_winograd_dw_forced_on_any_build_matches_the_reference(args):
    import dataclasses

    from fastlenet.kernels import _cy_conv
    x_shape, w_shape, s, p, _ = args
    k = backend("cython")
    planned = k.plan_conv2d(x_shape, w_shape, s, p, None)
    assert planned.forward.startswith("winograd"), planned.names
    codes = dataclasses.replace(planned, dw=planned.forward).codes      # the forward's Winograd
    rng = np.random.default_rng(3)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    dy = rng.standard_normal((x_shape[0], w_shape[0]) + planned.out_hw).astype(np.float32)
    _, dw, db = _cy_conv.conv2d_backward(dy, x, w, s, p, False, codes)
    _, want_dw, want_db = ref.conv2d_backward(dy, x, w, s, p, False)
    assert_close("dw", dw, want_dw)
    assert_close("db", db, want_db)


PLAIN_8 = [args for args, _ in CASES_8 if args[4] is None]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("args", PLAIN_8, ids=[",".join(map(str, a[0])) for a in PLAIN_8])
@pytest.mark.parametrize("name", COMPILED)
def test_each_planned_path_with_a_relu_after_it_matches_the_reference(name, args, dtype):
    """The fused conv + ReLU (a conv with no pool after its ReLU) on every plain plan: the
    ReLU of the conv's output, and gradients that pass dy only where that output is > 0."""
    x_shape, w_shape, s, p, _ = args
    rng = np.random.default_rng(2)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype) * 0.1
    grad, want = reference_conv_and_grads(x, w, b, s, p, "relu", rng)
    y, grads = _conv_and_grads(backend(name), x, w, b, s, p, "relu", grad)
    assert (want[0] == 0).mean() > 0.2                           # the mask matters
    for got, wanted, what in zip((y,) + tuple(grads), want, ("y", "dx", "dw", "db")):
        assert_close(f"conv+relu {what}", got, wanted)


@pytest.mark.parametrize("args,names", CASES, ids=IDS)
@pytest.mark.parametrize("name", COMPILED)
def test_gradients_do_not_depend_on_the_thread_count(name, args, names):
    """dW and db are summed per block of samples, then over blocks in order: the same
    bits on 1 thread as on 2."""
    import numba

    from fastlenet import kernels
    x_shape, w_shape, s, p, _ = args
    k = backend(name)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((40,) + x_shape[1:]).astype(np.float32)      # three blocks of samples
    w = rng.standard_normal(w_shape).astype(np.float32)
    dy = rng.standard_normal(ref.conv2d_forward(x, w, np.zeros(w_shape[0], np.float32), s, p).shape)
    dy = dy.astype(np.float32)
    results = []
    for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
        kernels.set_num_threads(threads)
        results.append(k.conv2d_backward(dy, x, w, s, p))
    kernels.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


#: geometries large enough that one sample's work is shared among threads (the Cython
#: kernels' _filter_share and _backward_shares: at least 2^19 multiply-adds forward, 6M
#: for the Winograd forward, 2^22 backward), one per path that shares it, with the float32
#: plan at 16 lanes
SHARED = [
    (((1, 3, 64, 96), (32, 3, 3, 3), 1, 1, None), ("direct", "direct_column_lanes", "col2im_s1")),
    (((1, 32, 32, 32), (64, 32, 3, 3), 2, 1, None), ("direct_filter_lanes", "direct_filter_lanes", "col2im")),
    (((1, 64, 28, 28), (128, 64, 1, 1), 1, 0, None), ("gemm_1x1", "gemm_im2row", "gemm_1x1")),
    (((1, 64, 28, 28), (128, 64, 1, 1), 1, 1, None), ("im2col_gemm", "gemm_im2col", "col2im_s1")),
    (((1, 32, 32, 32), (32, 32, 3, 3), 1, 1, None), ("winograd_f2x2_3x3",) * 3),
    (((1, 16, 24, 24), (32, 16, 5, 5), 1, 2, None),
     ("winograd_f2x2_5x5", "direct_filter_lanes", "winograd_f2x2_5x5")),
    (((1, 16, 16, 16), (128, 16, 3, 3), 1, 1, None),
     ("winograd_f2x2_3x3", "direct_column_lanes", "winograd_f2x2_3x3")),
    (((1, 3, 28, 28), (64, 3, 7, 7), 1, 0, None), ("direct_filter_lanes", "gemm_im2row", "col2im_s1")),
    (((1, 1, 28, 28), (64, 1, 7, 7), 2, 2, (2, 2)),
     ("im2col_gemm", "after_conv_2x2", "expand_2x2", "gemm_im2row", "col2im")),
    (((1, 3, 28, 28), (8, 3, 7, 7), 1, 0, (2, 2)), ("direct", "tile_f6", "expand_2x2", "gemm_im2row", "col2im_s1")),
    (((1, 1, 16, 16), (128, 1, 5, 5), 1, 2, (2, 2)),
     ("direct", "tile_f8", "expand_2x2", "direct_filter_lanes", "col2im_s1")),
    (((1, 1, 12, 12), (128, 1, 7, 7), 1, 2, (2, 2)),
     ("direct_filter_lanes", "tile_filter_lanes", "expand_2x2", "gemm_im2row", "col2im_s1")),
]


def _conv_and_grads(k, x, w, b, s, p, pool, dz_or_dy):
    """y and (dx, dw, db) on backend k: plain, fused with a ReLU (pool "relu"), or fused with
    ReLU and the max pool."""
    if pool is None:
        return k.conv2d_forward(x, w, b, s, p), k.conv2d_backward(dz_or_dy, x, w, s, p)
    oh, ow = (x.shape[2] + 2 * p - w.shape[2]) // s + 1, (x.shape[3] + 2 * p - w.shape[3]) // s + 1
    if pool == "relu":
        y = k.fast.conv2d_relu_forward(x, w, b, s, p, oh, ow)
        return y, k.fast.conv2d_relu_backward(dz_or_dy, y, x, w, s, p, True)
    y, arg = k.fast.conv2d_relu_maxpool_forward(x, w, b, s, p, oh, ow, *pool)
    return y, k.fast.conv2d_relu_maxpool_backward(dz_or_dy, arg, x, w, s, p, oh, ow, *pool, True)


#: each SHARED case as planned, and each plain one also with a ReLU after it (fused conv + ReLU)
SHARED_AFTER = [(a, n, "as planned") for a, n in SHARED] + [(a, n, "relu") for a, n in SHARED if a[4] is None]


@pytest.mark.skipif("cython" not in COMPILED, reason="the cython backend is not built")
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("args,names,after", SHARED_AFTER, ids=[",".join(n) + "+" + f for _, n, f in SHARED_AFTER])
@pytest.mark.parametrize("name", ["cython"])           # the kernels that share (and tests/asan.sh's -k)
def test_a_small_batch_shares_each_sample_among_threads_with_the_same_results(name, args, names, after, dtype,
                                                                                n):
    """Batches with fewer blocks of samples than threads split each block's filters (forward,
    dW) and input channels (dx) among the threads: the results match the reference and are
    the same bits on 1 thread as on 2."""
    import numba

    from fastlenet import kernels
    x_shape, w_shape, s, p, pool = args
    k = backend(name)
    if k.plan_conv2d(x_shape, w_shape, s, p, pool).lanes == 16 and dtype == np.float32:
        assert k.plan_conv2d(x_shape, w_shape, s, p, pool).names == names
    if after == "relu":
        pool = "relu"
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n,) + x_shape[1:]).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype) * 0.1
    grad, want = reference_conv_and_grads(x, w, b, s, p, pool, rng)
    results = []
    for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
        kernels.set_num_threads(threads)
        y, grads = _conv_and_grads(k, x, w, b, s, p, pool, grad)
        results.append((y,) + tuple(grads))
    kernels.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    for got, wanted, what in zip(results[-1], want, ("y", "dx", "dw", "db")):
        assert_close(what, got, wanted)
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


@pytest.mark.skipif("cython" not in COMPILED, reason="the cython backend is not built")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, w_shape", [
    ((2, 3, 32, 32), (16, 3, 3, 3)),       # 16 filters, rows of 32: written straight into y
    ((17, 4, 16, 16), (8, 4, 3, 3)),       # ... over more than one block of samples
    ((2, 3, 32, 32), (12, 3, 3, 3)),       # 12 filters: the kernel computes 16, stores 12
    ((2, 3, 24, 24), (8, 3, 3, 3)),        # rows of 24: a partial vector stored per row
    ((19, 1, 28, 28), (6, 1, 3, 3)),       # lenet5-bn's C1: both, samples back to back
])
def test_the_plain_direct_forward_writes_only_its_own_output(x_shape, w_shape, dtype):
    k = backend("cython")
    assert k.plan_conv2d(x_shape, w_shape, 1, 1).forward == "direct"
    rng = np.random.default_rng(3)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    want = ref.conv2d_forward(x, w, b, 1, 1)
    assert_close("y", k.conv2d_forward(x, w, b, 1, 1), want)
    out = np.full(want.shape, np.nan, dtype=dtype)          # a stale buffer: every element rewritten
    assert k.conv2d_forward(x, w, b, 1, 1, out=out) is out
    assert_close("y into out=", out, want)
