"""Convolution plans: geometry in, one immutable choice of algorithm out.

Dimension legend: N batch, C channels, H/W input height/width, F filters,
KH/KW kernel height/width, OH/OW output height/width, L = OH*OW, K = C*KH*KW,
s stride, p pad, PH/PW pooled height/width.

Like oneDNN's primitive descriptor or XNNPACK's operator setup, :func:`conv2d`
decides *once* how a convolution (optionally followed by ReLU and a max pool)
is computed, and nothing changes that decision afterwards.  Both compiled
backends run the plan they are given (``cython_backend``, ``numba_backend``),
tests ask for it (``backend.plan_conv2d(...)``) and assert which path a case
covers, and a benchmark can print it.  The names:

forward
    ``direct``      -- convolve the zero-padded input with register tiles, output columns
                       along the vector lanes (stride 1, rows of at least MIN_DIRECT_OW
                       outputs, K <= MAX_DIRECT_K = 512)
    ``direct_filter_lanes`` -- the same with the filters along the lanes, where they fill
                       more of them than the columns do (LeNet C3: 16 filters, 10 columns;
                       64 filters on 8x8) or K > MAX_DIRECT_K; stride 1, OW >= 8,
                       K <= MAX_FLANES_K; and at stride 2 from MIN_S2_FLANES_K taps
                       with at least LANES filters (the "lanes" rules)
    ``im2col_gemm`` -- unfold the windows (im2col), then one GEMM per sample (any geometry;
                       chosen for stride > 1, narrow rows, 1x1 kernels and K > MAX_FLANES_K;
                       Numba: im2row from a channels-last copy, from DOTS_MIN_K taps on)
    ``winograd_f2x2_3x3`` -- 4x4 input tiles transformed, 16 GEMMs over the channels, 2x2
                       outputs per tile back (csrc/winograd.h): 2.25x fewer multiplies (3x3,
                       stride 1, channels in and out from WINOGRAD_MIN_C, by how many lanes
                       the output rows fill; "lanes" rules: the Cython build)
    ``winograd_f2x2_5x5`` -- the same with 6x6 input tiles, 36 GEMMs: 2.78x fewer multiplies
                       (5x5, stride 1, channels from WINOGRAD5_MIN_C)
    ``gemm_1x1``    -- W @ x[n] straight from the input into y[n]: a 1x1, stride-1, unpadded
                       conv's im2col is its input, with OH*OW of the lanes (the GEMM's whole
                       tiles; "lanes" rules: the Cython build)
pool (with a fused conv -> ReLU -> max pool only)
    ``tile_filter_lanes`` -- the 2x2/2 pool on the accumulators of the filter-lanes
                             direct kernel (forward ``direct_filter_lanes``)
    ``tile_f8`` / ``tile_f6`` -- the same with 8 (rows of <= LANES outputs) or 6 filters
                             (<= 2 LANES) per tile and output columns along the lanes:
                             8 filters x 2 rows x 1 vector or 6 x 2 x 2 = 16 or 24 of
                             AVX-512's 32 vector registers as accumulators, the rest for
                             inputs.  With fewer than 16 lanes (AVX2: 16 registers, where
                             both spilled) ``tile_f6`` alone, on rows of any width: 6 filters
                             x 2 rows x 1 vector, in blocks of LANES columns along the row
                             (SMALL_LANES_TILE_F6)
    ``after_conv_2x2``    -- ReLU + 2x2/2 pool over the conv output kept in the workspace
    ``after_conv``        -- the same for any other window and stride
pool_grad (its backward)
    ``expand_2x2`` -- the 2x2/2 pooled gradient expanded to conv-output rows with vector selects
    ``route``      -- any other pool: each pooled gradient scattered to its window's max
dw (the weight gradient)
    ``direct_filter_lanes`` -- from the padded input, filters along the lanes (KW 3 or 5)
    ``direct_column_lanes`` -- from the padded input, output columns along the lanes
                               (stride 1; Cython: KW 5 when columns fill more lanes than
                               filters, KW 3 up to COLUMN_DW3_MAX_C channels unless the
                               filters fill more; Numba: any kernel, see RULES)
    ``gemm_im2row``  -- im2row copy + GEMM (long L, short K: a first layer)
    ``gemm_im2col``  -- im2col copy + GEMM reduced over L
    ``winograd_f2x2_3x3`` -- the tile products of the input's and dz's Winograd transforms
                     summed over tiles (16 GEMMs), then taken back to 3x3 (the forward's
                     rule, on output rows of at least LANES tiles: WINOGRAD_DW)
    ``winograd_f2x2_5x5`` -- the same for 5x5 kernels (36 GEMMs; WINOGRAD5_DW)
    ``pooled_argmax`` -- under a fused max pool, from the pooled gradient at each window's
                     argmax only, a vector per kernel row (KW <= LANES; "lanes" rules, float32,
                     when its lane work is below POOLED_DW_MAX_RATIO of the dense dW's)
dx (the input gradient)
    ``col2im_s1`` -- W^T dz, folded into padded planes with whole vectors (stride 1)
    ``col2im``    -- W^T dz, folded element by element (any stride)
    ``flipped_conv_s1`` -- dz padded by KH-1 rows and KW-1 columns, convolved with the
                     flipped weights by the forward's im2row + GEMM, no fold (stride 1,
                     "dots" rules from DOTS_MIN_DX_C channels; not in the Cython build)
    ``gemm_1x1``  -- W^T dz written straight into dx: a 1x1, stride-1, unpadded conv, whose
                     col2im is the identity, with C a multiple of GEMM_ROWS and OH*OW of the
                     lanes (the GEMM's whole tiles; "lanes" rules: the Cython build); with
                     the "dots" rules, by the direct forward's plane passes over dz, when
                     OH*OW > F (DOTS_1X1_DX)
    ``winograd_f2x2_3x3`` -- dx as the forward's Winograd convolution of dz, padded by 2 - p,
                     with the filters rotated and transposed (pad <= 2; the forward's rule
                     with F channels in and C out)
    ``winograd_f2x2_5x5`` -- the same for 5x5 kernels, dz padded by 4 - p (pad <= 4)
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Tuple

#: lanes of one register-tile row when a backend does not say (the Numba backend's
#: layouts); the Cython backend plans for its build's vector width instead (FL_LB in
#: csrc/fl_common.h: 16 with AVX-512, 8 with AVX2, 4 with SSE), as ``lanes=``
LANES = 16
#: the direct forward needs output rows of at least this many columns (narrower rows
#: leave most of a tile's lanes idle, and im2col + GEMM wins)
MIN_DIRECT_OW = 8
#: ... and at most this many taps (C*KH*KW): its filter block's weights (8 x K) must
#: stay in L1 while a row of input streams past (512 taps x 8 x 4 bytes = 16 KiB).
#: Measured crossover (batch 128, 2 threads, AVX-512, interleaved medians): direct wins
#: at K 288 (3x3, 32 ch: 6.6 -> 5.5 ms) and 400 (5x5, 16 ch: 12.8 -> 10.9 ms), loses at
#: 576 (3x3, 64 ch, OW 8: 3.9 -> 5.5 ms)
MAX_DIRECT_K = 512
#: ... and the filter-lanes direct forward up to this many taps (one weight vector of LB
#: filters per tap streams from L1/L2 while the tile's inputs are broadcast).  Measured
#: (batch 128 or 64, 2 threads, AVX-512 on Zen 4, medians, ms, im2col_gemm vs filter lanes):
#: K 576 on 8x8 4.62 vs 3.08 and on 16x16 15.97 vs 12.48; K 1152 on 8x8 14.67 vs 12.11 and
#: on 16x16 26.60 vs 23.49; K 2304 on 8x8 26.50 vs 23.48 (on 4x4, 15.19 vs 23.51: rows
#: narrower than MIN_DIRECT_OW leave most of a tile's 8 columns idle)
MAX_FLANES_K = 2304
#: ... and at stride 2 from this many taps, where the filters fill the lanes (LANES or
#: more): each weight vector feeds a tile of 2 x 8 outputs read at stride 2, no im2col copy.
#: Measured (cython, 2 threads, batch 128, medians, ms, im2col_gemm vs filter lanes, 3x3
#: pad 1 on 32x32 unless said): 32 -> 64 10.01 vs 7.62, 64 -> 128 on 16x16 9.48 vs 7.29,
#: 16 -> 32 3.34 vs 2.66, 32 -> 16 4.85 vs 2.85, 5x5 16 -> 32 9.49 vs 5.13; fewer taps lose:
#: 3 -> 32 (K 27) 0.68 vs 0.76, 5 -> 20 on 19x20 (K 45, batch 17) 0.12 vs 0.19
MIN_S2_FLANES_K = 128
#: dW through im2row (L, K) when L < IM2ROW_RATIO * K: the product is then reduced
#: over the short K, not the long L (a first layer: L = 784, K = 25)
IM2ROW_RATIO = 4
#: ... and always for a 1x1 kernel at stride 1 without padding, whose im2row is its input
#: transposed (16 x 16 tiles in registers, no padded copy): dW reduced over L by the
#: row-blocked GEMM instead of dot products (`python -m benchmarks.conv_paths --dtype float32
#: --shapes 64to128_k1_16px --batch B`, cython, 2 threads, medians, ms, im2col / im2row):
#: batch 1 0.11 / 0.08, 32 1.30 / 0.76, 128 5.62 / 3.69
ONE_BY_ONE_DW = "gemm_im2row"
#: pooled columns per tile of the filter-lanes pool kernel (FL_POOL_FLANES_TILE in
#: csrc/direct_conv.h: 5 pooled x 2 rows x 2 columns = 20 accumulators + 5 loads)
FLANES_TILE = 5
#: dW of a conv fused with ReLU + max pool from the pooled gradient at each window's argmax
#: (csrc/pool_dw.h) when its lane work, LB lanes per kernel row of each pooled output, is
#: below this share of the dense dW's (KW taps per kernel row of every conv output): 0.40
#: for 5x5 and 0.67 for 3x3 under a 2x2/2 pool with 8 lanes (AVX2), 0.8 and 1.33 with 16.
#: Its work also grows with the share of windows the ReLU lets through, the dense dW's not:
#: 12-87% in training (`python -m benchmarks.pooled_dw`, over 40-step rounds of lenet5,
#: cifar-cnn, vgg-small), 94% with the standard-normal data of `python -m
#: benchmarks.conv_paths --pool`.  Measured on AVX2 (Zen 3, float32, 2 threads unless said):
#: training steps, pooled / dense dW (`pooled_dw`, medians of 5 rounds): lenet5 batch 256
#: 0.92, cifar-cnn batch 64 0.78, vgg-small batch 32 0.86 (all 3x3 but LeNet's); one layer's
#: fused backward with dx at 94% (`conv_paths --pool --batch 64`, 3 rounds, ms, pooled vs
#: the dense dW the layer plans without a pool): 5x5 16 -> 32 on 24x24 10.4-11.5 vs
#: 12.6-14.3, LeNet C3 0.89-1.11 vs 1.07-1.30, 3x3 stride 2 about even, 3x3 32 -> 64 on
#: 16x16 slower (8.7-12.9 vs 6.9-7.6; even at 67% passing: 13.4 vs 13.5 ms, 1 thread).
#: 16 lanes (AVX-512) are unmeasured and left dense
POOLED_DW_MAX_RATIO = 0.7
#: ... in float32 only: its float64 tile (LB doubles, two AVX2 registers a vector) ran 4-6x
#: slower than the im2row GEMM float64 plans (`python -m benchmarks.conv_paths --dtype float64
#: --batch 32 --pool`, 1 thread, dW alone, ms: 3x3 32 -> 64 on 16x16 97.3 vs 15.1, LeNet C3
#: 3.11 vs 0.79); it stays a path the tests force in float64 too
POOLED_DW_FLOAT64 = False
#: kernel widths with a direct dW kernel (fl_dw_direct_k3 / _k5 in csrc/dw.h)
DIRECT_DW_WIDTHS = (3, 5)
COLUMN_DW3_MAX_C = 16

FORWARD = ("im2col_gemm", "direct", "direct_filter_lanes", "winograd_f2x2_3x3", "winograd_f2x2_5x5",
           "gemm_1x1")
POOL = (None, "after_conv", "after_conv_2x2", "tile_f8", "tile_f6", "tile_filter_lanes")
POOL_GRAD = (None, "route", "expand_2x2")
DW = ("gemm_im2col", "gemm_im2row", "direct_filter_lanes", "direct_column_lanes", "winograd_f2x2_3x3",
      "winograd_f2x2_5x5", "pooled_argmax")
DX = ("col2im", "col2im_s1", "flipped_conv_s1", "gemm_1x1", "winograd_f2x2_3x3", "winograd_f2x2_5x5")
#: the rule sets a backend plans with: "lanes", the Cython kernels' (register tiles along
#: the vector lanes: the rules below); "dots", the Numba backend's, whose register tiles
#: are blocks of dot products (``_numba_loops.gemm_nt``): its forward is im2col_gemm
#: from DOTS_MIN_K taps on and for 1x1 kernels (the lanes rule's direct paths below that), its dW
#: direct_column_lanes at stride 1 (any kernel) and gemm_im2col otherwise, its dx
#: flipped_conv_s1 at stride 1 from DOTS_MIN_DX_C input channels
RULES = ("lanes", "dots")
#: ... the fewest taps (C*KH*KW) of a "dots" GEMM forward: a dot product over fewer runs
#: mostly outside whole vectors.  Measured (numba_conv.PLAN_RULES): direct wins at K 27
#: (3 -> 32, 3x3), the GEMM at 150 (LeNet C3) and above; re-measured 2026-12-07 after the
#: Numba loops' unsigned indices and 4-filter planes (2 threads, ms, direct / im2col_gemm):
#: K 27 2.94 / 5.70, 72 (8 -> 32, 3x3 on 32x32) 6.54 / 7.34, 75 (3 -> 32, 5x5) 7.21 / 7.96,
#: 144 (16 -> 32, 3x3 on 32x32) 12.45 / 11.20, 150 (C3) 2.35 / 1.48 (the 8-filter passes
#: since then moved the long planes to direct: DOTS_DIRECT_MAX_K below)
DOTS_MIN_K = 128
#: ... yet from DOTS_MIN_K up to DOTS_DIRECT_MAX_K taps a stride-1 forward whose planes
#: (OH*WS outputs, WS the padded width) hold at least DOTS_DIRECT_MIN_PLANE stays "direct":
#: its 8-filter passes (_numba_loops._planes_f8) beat the GEMM's reductions on long planes,
#: not on short ones.  Measured 2026-12-07 after the 8-filter passes (2 threads, ms, median
#: of three interleaved rounds, direct / im2col_gemm): K 144 (16 -> 32 on 16x16, plane 288)
#: 2.14 / 2.61, K 400 (5x5 pad 2 on 24x24, plane 672) 5.54 / 6.05, K 288 (32 -> 64 on
#: 16x16, plane 288) 8.00 / 7.97, K 150 (LeNet C3, plane 140) 1.46 / 1.41, K 576 (64 -> 64
#: on 8x8, plane 80) 6.50 / 3.49; on 32x32 (plane 1088): K 144 8.18 / 12.32, K 288 13.94 /
#: 18.90, and K 400 (5x5 on 28x28, plane 672) 11.63 / 13.05
DOTS_DIRECT_MAX_K = 400
DOTS_DIRECT_MIN_PLANE = 256
#: ... but an unpadded 1x1 stride-1 forward is "direct" (four filters by four channels per
#: pass over whole planes, no channels-last copy) when its planes hold at least C pixels,
#: else im2col_gemm (DOTS_1X1_DIRECT; the dot products' reductions weigh on short K, the
#: planes' loop set-up on short planes).  Measured 2026-12-07 (2 threads, batch 128 unless
#: noted, ms, direct / im2col_gemm): C 8 32x32 1.33 / 4.88, C 16 16x16 0.45 / 1.24, C 64
#: 16x16 4.56 / 6.94, C 64 32x32 (batch 64) 5.39 / 7.85, C 128 16x16 8.08 / 11.24, C 256
#: 16x16 (batch 64) 15.61 / 16.63, C 32 8x8 0.54 / 0.75, C 64 8x8 0.91 / 0.92, C 128 -> 256
#: on 8x8 6.08 / 4.60, C 256 8x8 11.97 / 7.78
#: ... and the fewest input channels of its flipped_conv_s1 dx: its im2row copies F*KH*KW
#: elements per input pixel, each used by C multiply-adds.  Measured (numba_conv.PLAN_RULES):
#: col2im_s1 wins at C 3 and 6, the flipped conv at 32 and 64, a tie at 16; re-measured
#: 2026-12-07 after the unsigned indices made im2row 3-7x faster (1 thread, CPU ms,
#: col2im_s1 / flipped): C 1 (LeNet C1) 1.18 / 5.02, C 3 6.84 / 9.64, C 6 (LeNet C3) 5.04 /
#: 4.54 and 4.90 / 4.67, C 16 (5x5 pad 2) 25.99 / 12.18, C 32 31.24 / 15.27, C 64 17.75 / 6.52;
#: re-measured 2026-12-07 after col2im_s1's GEMM became plane passes (numba_conv.dcols_weights;
#: AMD EPYC Zen 3, AVX2, 1 thread, CPU ms, col2im_s1 / flipped): C 1 (LeNet C1) 2.42 / 9.53,
#: C 3 6.02 / 12.03, C 6 (LeNet C3) 4.83 / 5.36, C 8 (3x3 on 16x16, F 16) 1.95 / 2.00, C 16
#: (F 32, 3x3 on 16x16) 6.49 / 5.90, C 16 (5x5 pad 2) 18.57 / 16.42, C 32 23.51 / 20.44, C 64
#: (8x8) 20.02 / 7.92
DOTS_MIN_DX_C = 8
#: ... but an unpadded 1x1 stride-1 dx whose planes hold more than F pixels is "gemm_1x1":
#: dx = w^T @ dz by the direct forward's passes over whole planes of dz (numba_conv), no
#: channels-last copy of dz (the forward's DOTS_1X1_DIRECT rule, as a conv of F channels to
#: C).  Measured 2026-12-07 (AMD EPYC Zen 3, AVX2, 1 thread, CPU ms, flipped_conv_s1 /
#: planes, batch 128 unless noted; dx of C from F): 64 from 128 on 16x16 19.81 / 11.24 (batch
#: 32: 5.19 / 2.67), 32 from 64 on 32x32 26.87 / 13.67, 16 from 32 on 8x8 0.82 / 0.59; 64 from
#: 64 on 8x8 1.95 / 2.53, 128 from 256 on 8x8 11.61 / 14.25, 256 from 256 on 8x8 19.04 / 27.81
DOTS_1X1_DX = "gemm_1x1 when OH*OW > F"
#: rows per block of the Cython GEMM (csrc FL_MB): the gemm_1x1 dx writes C rows in whole blocks
GEMM_ROWS = 4
#: the fewest channels in and out of a Winograd F(2x2, 3x3) convolution (forward: C in,
#: F out; dx: F in, C out), by how many lanes its output rows fill (csrc/winograd.h takes
#: the tile columns of a row along the lanes, or gathers tiles one by one from rows of
#: fewer than LANES / 2 tiles): its transforms cost per channel what its 16 GEMMs save per
#: channel pair.  Measured (cython, 2 threads, AVX-512 on Zen 4, medians, ms, the path
#: before -> Winograd, forward / backward with dx): rows of >= LANES tiles: 8 -> 16 on
#: 32x32 1.61 -> 1.51 / 4.75 -> 3.87, 16 -> 16 3.04 -> 2.35, 32 -> 32 11.81 -> 8.50 /
#: 29.86 -> 23.15; rows of LANES / 2 tiles (16x16): 12 -> 16 0.61 -> 0.68 (loses),
#: 16 -> 32 1.47 -> 1.37, 32 -> 16 1.48 -> 1.42 / 3.97 -> 3.16, 32 -> 64 5.80 -> 4.84;
#: narrower rows: 16 -> 16 on 8x8 0.26 -> 0.40 and on 12x12 1.03 -> 1.71 (lose), 32 on
#: 6x6 1.29 -> 0.87 / 1.35 -> 1.47 (dx loses), 64 on 8x8 3.22 -> 2.52 / 6.55 -> 5.87,
#: 64 on 4x4 1.57 -> 2.26 (loses)
WINOGRAD_MIN_C = {"full rows": 8, "half rows": 16, "narrow rows": 32}
#: ... and of a Winograd F(2x2, 5x5) convolution (6x6 tiles, 36 GEMMs: 2.78x fewer
#: multiplies than the direct sums, dearer transforms).  Measured (cython, 2 threads, batch
#: 128 unless said, pad 2, medians, ms, the path before -> Winograd, forward / backward with
#: the Winograd dx): rows of LANES / 2 tiles or more: 16 -> 32 on 24x24 11.22 -> 8.88 /
#: 23.14 -> 22.67 (dx alone about 11.3 -> 9.3), 32 -> 64 on 16x16 16.59 -> 10.23 / 37.84 ->
#: 31.23, 16 -> 16 on 32x32 (batch 64) 5.81 -> 3.29 / 12.26 -> 8.98, 16 -> 16 on 16x16 3.39
#: -> 2.59 / 6.33 -> 5.43; fewer channels lose: 8 -> 16 on 24x24 2.88 -> 3.26 / 6.46 ->
#: 6.44, 3 -> 32 on 32x32 4.85 -> 5.53 / 10.91 -> 14.02, LeNet C3 (6 -> 16 on 14x14, batch
#: 256) 0.85 -> 1.22 / 2.14 -> 4.37; narrower rows: 64 -> 64 on 8x8 8.51 -> 6.36 / 22.81 ->
#: 18.94, 32 -> 32 on 8x8 2.35 -> 2.61 / 5.74 -> 5.64, 16 -> 32 on 12x12 2.45 -> 2.98 /
#: 5.63 -> 6.43 (lose)
WINOGRAD5_MIN_C = {"full rows": 16, "half rows": 16, "narrow rows": 64}
#: ... and the narrowest output a narrow-row Winograd conv takes
WINOGRAD_MIN_OW = 8
#: The Winograd dW (tile products summed over the tiles of about 128 tile columns by the
#: dot-product GEMM, csrc/winograd.h) is planned where the forward's rule holds and the
#: output rows fill whole vectors of tiles (LANES tile columns: 32 outputs or more).
#: Measured (cython, 2 threads, batch 128, medians, ms, filter lanes / column lanes /
#: Winograd, rows of 16 tiles): 16 -> 16 on 32x32 4.91 / 5.80 / 4.06, 32 -> 32 15.12 /
#: 21.93 / 12.82, 8 -> 16 3.48 / 3.13 / 3.01 (3 -> 32: 4.55 / 2.92 / 3.30, too few
#: channels); on 16x16 and 8x8 (rows of 8 and 4 tiles) it lost or tied: 32 -> 64 on 16x16
#: 7.27 / - / 7.57, 16 -> 32 1.91 / - / 2.01, 64 -> 64 on 8x8 3.94 / - / 4.44 (3.76-4.53
#: / 3.91-4.88 over four runs), 32 -> 32 on 8x8 0.95 / - / 1.13
WINOGRAD_DW = "rows of whole vectors of tiles"
#: The 5x5 Winograd dW (36 GEMMs) the same way, and also on narrow rows (gathered tiles,
#: whole samples side by side).  Measured (cython, 2 threads, batch 128 unless said, pad 2,
#: two runs, ms, filter lanes / Winograd): rows of 16 tiles: 32 -> 32 on 32x32 (batch 64)
#: 19.75 / 16.88 and 20.20 / 19.83, 64 -> 64 (batch 32) 38.00 / 34.97 and 39.76 / 29.11;
#: narrow rows: 64 -> 64 on 8x8 11.12 / 8.92 and 12.10 / 11.63; half rows lose or tie:
#: 16 -> 32 on 24x24 11.35-18.55 / 15.05-18.02, 16 -> 16 on 16x16 2.39 / 3.39, 32 -> 64
#: on 16x16 18.10 / 17.81.  Float64 wins on every row width (16 -> 32 on 24x24 51.45 /
#: 39.81, 8 -> 16 24.78 / 16.98, 64 -> 64 on 8x8 54.76 / 28.81)
WINOGRAD5_DW = "rows of whole vectors of tiles, or narrow rows"
#: Both Winograd dW rules hold with 16 lanes (AVX-512, where they were measured).  With
#: fewer (AVX2: 8 lanes and 16 vector registers, whose tile transforms spill) the direct dW
#: wins on every measured shape.  Measured (AMD EPYC Zen 3, AVX2, `python -m
#: benchmarks.conv_paths --dtype float32`, medians, ms, filter lanes / column lanes /
#: Winograd): 32 -> 64 on 16x16, batch 128, 1 thread 17.76 / 35.40 / 22.01, 2 threads
#: 13.57 / 23.71 / 17.29, batch 32 4.39 / 6.01 / 4.48; 16 -> 32 5x5 pad 2 on 24x24, batch
#: 128, 1 thread 34.37 / 28.07 / 51.51, 2 threads 19.50 / 17.74 / 34.98, batch 32 5.21 /
#: 5.18 / 9.07; 64 -> 64 on 8x8 (planned by filter lanes already) 10.55 / - / 18.23
WINOGRAD_DW_MIN_LANES = 16
#: With fewer than 16 lanes (AVX2: 16 vector registers) the 16- and 24-accumulator pool tiles
#: tile_f8 and tile_f6 spill, and the pool ran after the stored conv output on rows wider
#: than 2 LANES (LeNet C1: 28); tile_f6 then computes 6 filters x 2 rows x one vector, in
#: blocks along the row, for every direct forward before a 2x2/2 pool.  Measured (AMD EPYC
#: Zen 3, AVX2, LeNet C1 1 -> 6 on 28x28, batch 256, `python -m benchmarks.step_kernels
#: cython`, fastest call, three interleaved rounds, ms, direct + after_conv_2x2 / tile_f6):
#: 1 thread (CPU time) 2.37-2.43 / 1.48-1.53, 2 threads 1.24-1.25 / 0.91-0.93
SMALL_LANES_TILE_F6 = "tile_f6 on rows of any width before a 2x2/2 pool, with fewer than 16 lanes"
#: In float64 (the element size is part of the plan) the direct kernels compute in vectors of
#: LANES doubles, two registers, which GCC keeps in memory: they lose to the GEMM paths, whose
#: GEMM computes in one register of doubles (csrc/gemm.h).  Measured (cython, 2 threads,
#: batch 32, float64, medians, ms; `python -m benchmarks.conv_paths --dtype float64`): forward, direct /
#: im2col + GEMM / Winograd: 3 -> 32 on 32x32 3.29 / 2.09 / -, 32 -> 64 on 16x16 7.60 / 7.15 /
#: 3.62, 64 -> 64 on 8x8 - / 3.95 / 1.18, stride 2 13.03 (filter lanes) / 7.62 / -, 16 -> 32
#: 5x5 on 24x24 14.51 / 11.47 / 4.87, LeNet C3 0.71 / 0.50 / -; dW, direct (the better lanes) /
#: im2row + GEMM / Winograd: 2.53 / 1.38 / -, 13.19 / 4.00 / 5.42, 10.40 / 2.09 / 2.39, 8.81 /
#: 5.04 / -, 12.37 / 7.04 / 10.39, 1.09 / 0.91 / -; backward with dx, the dW by im2row,
#: dx col2im / Winograd: 32 -> 64 7.77 / 8.52, 16 -> 32 5x5 12.67 / 12.42, C3 0.65 / 1.04; on
#: narrow rows the Winograd dW and dx together win (64 -> 64 on 8x8 3.13, against 4.25 with the
#: im2row dW).  So float64 takes the Winograd forward by the channel rule, else im2col + GEMM;
#: the Winograd dW and dx on narrow rows, else the im2row dW and the col2im dx.
WINOGRAD_FLOAT64 = "forward by the channel rule; dW and dx on narrow rows; else the GEMM paths"


def _tile_rows(ow: int, lanes: int) -> str:
    """How much of a vector a Winograd row of (ow + 1) // 2 tile columns fills: "full rows"
    (LANES tiles or more), "half rows" (LANES / 2 or more), else "narrow rows" (its tiles
    are gathered one by one: csrc/winograd.h)."""
    tiles = (ow + 1) // 2
    return "full rows" if tiles >= lanes else "half rows" if 2 * tiles >= lanes else "narrow rows"


def _winograd(c_in: int, c_out: int, kh: int, kw: int, stride: int, ow: int, lanes: int,
              rules: str) -> Optional[str]:
    """The Winograd path a convolution of c_in -> c_out channels with output rows of ``ow``
    runs as, F(2x2, 3x3) or F(2x2, 5x5) (see WINOGRAD_MIN_C, WINOGRAD5_MIN_C), or None."""
    if rules != "lanes" or stride != 1 or (kh, kw) not in ((3, 3), (5, 5)):
        return None
    rows = _tile_rows(ow, lanes)
    min_c = (WINOGRAD_MIN_C if kh == 3 else WINOGRAD5_MIN_C)[rows]
    if (rows == "narrow rows" and ow < WINOGRAD_MIN_OW) or min(c_in, c_out) < min_c:
        return None
    return f"winograd_f2x2_{kh}x{kw}"


def round_up(v: int, m: int) -> int:
    return (v + m - 1) // m * m


@dataclass(frozen=True)
class ConvPlan:
    """How one convolution geometry runs (immutable; see the module docstring for names)."""

    x_shape: Tuple[int, int, int, int]
    w_shape: Tuple[int, int, int, int]
    stride: int
    pad: int
    out_hw: Tuple[int, int]
    pool: Optional[Tuple[int, int]]        # (size, stride) of the fused max pool, or None
    forward: str
    pool_kernel: Optional[str]
    pool_grad: Optional[str]
    dw: str
    dx: str
    lanes: int = LANES                     # the vector width the plan was made for
    itemsize: int = 4                      # bytes per element: 4 float32, 8 float64

    @property
    def codes(self) -> Tuple[int, int, int, int, int]:
        """(forward, pool_kernel, pool_grad, dw, dx) as the small integers the compiled code
        switches on (their positions in FORWARD, POOL, POOL_GRAD, DW, DX)."""
        return (FORWARD.index(self.forward), POOL.index(self.pool_kernel),
                POOL_GRAD.index(self.pool_grad), DW.index(self.dw), DX.index(self.dx))

    @property
    def names(self) -> Tuple[str, ...]:
        """Every path this plan runs, e.g. ('direct', 'tile_f8', 'direct_column_lanes', 'col2im_s1')."""
        return tuple(n for n in (self.forward, self.pool_kernel, self.pool_grad, self.dw, self.dx) if n)


def _fills_more_lanes(along: int, other: int, lanes: int) -> bool:
    """Whether ``along`` items (filters, or output columns) along the vector lanes leave
    fewer of them idle than the ``other`` would."""
    return along * round_up(other, lanes) > other * round_up(along, lanes)


def _forward_path(c: int, f: int, kh: int, kw: int, stride: int, ow: int, lanes: int, max_flanes_k: int) -> str:
    # stride 1 with rows of >= 8 outputs: convolving the padded input directly beats
    # im2col + GEMM, whose copy costs as much as the product (measured: C1 1.2 -> 0.5 ms,
    # C3 1.4 -> 0.8 ms at batch 256), with whichever of filters / output columns fills
    # more of the lanes (5x5 pad 2, 32 filters on 24 columns: 12.74 -> 9.81 ms), and the
    # filters along the lanes past MAX_DIRECT_K (see MAX_FLANES_K).  A 1x1 convolution's
    # im2col is a plain copy and the GEMM wins (64 -> 128 on 16x16: 4.40 -> 3.81 ms)
    # A backend whose filter-lanes kernel wins on fewer taps passes its own max_flanes_k
    # (numba_backend.MAX_FLANES_K); past it, the direct conv up to MAX_DIRECT_K,
    # else im2col + GEMM
    k = c * kh * kw
    widest = max(max_flanes_k, MAX_DIRECT_K)          # the most taps a direct path takes
    if (stride == 2 and kh * kw > 1 and ow >= MIN_DIRECT_OW and f >= lanes
            and MIN_S2_FLANES_K <= k <= max_flanes_k):
        return "direct_filter_lanes"                  # no im2col copy at stride 2 either
    if stride != 1 or ow < MIN_DIRECT_OW or kh * kw == 1 or k > widest:
        return "im2col_gemm"
    if k <= max_flanes_k and (_fills_more_lanes(f, ow, lanes) or k > MAX_DIRECT_K):
        return "direct_filter_lanes"
    return "direct"


def _pool_kernel(forward: str, ow: int, pool, lanes: int, stride: int) -> Optional[str]:
    if pool is None:
        return None
    if tuple(pool) == (2, 2) and stride == 1:
        if forward == "direct_filter_lanes":
            return "tile_filter_lanes"      # filters along the lanes (LeNet C3)
        if forward == "direct" and lanes < 16:
            return "tile_f6"                # SMALL_LANES_TILE_F6: blocks along the row
        if forward == "direct" and ow <= lanes:
            return "tile_f8"                # one vector per conv row: 8 filters per tile
        if forward == "direct" and ow <= 2 * lanes:
            return "tile_f6"                # two vectors per conv row: 6 filters per tile
    return "after_conv_2x2" if tuple(pool) == (2, 2) else "after_conv"


def _dw_path(c: int, f: int, kh: int, kw: int, stride: int, pad: int, oh: int, ow: int, lanes: int,
             rules: str, itemsize: int) -> str:
    if rules == "dots":
        # dot products of dz with shifted windows of the padded planes, 4 filters x 4 (2 on
        # 16 vector registers) taps per register tile, at stride 1 (any kernel); measured
        # in numba_conv.PLAN_RULES
        return "direct_column_lanes" if stride == 1 else "gemm_im2col"
    # KW 3 or 5 (every preset): dW from the padded input, no im2row/im2col copy (which
    # cost more than the product), with the filters or the output columns along the
    # lanes: KW 5 by whichever fills more of them (LeNet C3: 16 filters; C1: 28 columns
    # but 6 filters); KW 3 by the columns up to COLUMN_DW3_MAX_C channels unless the
    # filters fill more, as there transposing dz for the filter lanes weighs, and past it
    # by the filters (cython, 2 threads, batch 128, ms filter / column lanes: 3 -> 32 on
    # 32x32 6.64 / 4.92, 1 -> 32 4.75 / 2.35, 8 -> 32 10.67 / 9.51, 16 -> 32 16.17 /
    # 16.10; 64 -> 8 on 10x10 3.12 / 4.78, 32 -> 8 on 16x16 3.69 / 4.01; batch 256,
    # 1 -> 6 on 28x28 1.82 / 1.12)
    winograd, rows = _winograd(c, f, kh, kw, stride, ow, lanes, rules), _tile_rows(ow, lanes)
    if itemsize == 8:                  # WINOGRAD_FLOAT64
        return winograd if winograd and rows == "narrow rows" else "gemm_im2row"
    if winograd and lanes >= WINOGRAD_DW_MIN_LANES and (rows == "full rows" or (kh == 5 and rows == "narrow rows")):
        return winograd                # WINOGRAD_DW, WINOGRAD5_DW, WINOGRAD_DW_MIN_LANES
    if kw in DIRECT_DW_WIDTHS:
        columns = _fills_more_lanes(ow, f, lanes) if kw == 5 else \
            c <= COLUMN_DW3_MAX_C and not _fills_more_lanes(f, ow, lanes)
        return "direct_column_lanes" if stride == 1 and columns else "direct_filter_lanes"
    if kh == kw == 1 and stride == 1 and pad == 0:
        return "gemm_im2row"           # ONE_BY_ONE_DW
    return "gemm_im2row" if oh * ow < IM2ROW_RATIO * c * kh * kw else "gemm_im2col"


def _pooled_dw(pool, kw: int, oh: int, ow: int, lanes: int, rules: str, itemsize: int) -> Optional[str]:
    # under a max pool only each window's argmax has a gradient: dW from those alone, one
    # vector of LB lanes per kernel row (KW of them used), against the dense paths' KW taps
    # of every conv output (POOLED_DW_MAX_RATIO); float32 only (POOLED_DW_FLOAT64)
    if pool is None or rules != "lanes" or kw > lanes or (itemsize == 8 and not POOLED_DW_FLOAT64):
        return None
    size, ps = pool
    ph, pw = (oh - size) // ps + 1, (ow - size) // ps + 1
    return "pooled_argmax" if lanes * ph * pw < POOLED_DW_MAX_RATIO * kw * oh * ow else None


def _dx_path(c: int, f: int, kh: int, kw: int, stride: int, pad: int, w: int, l: int, lanes: int,
             rules: str, itemsize: int) -> str:
    if stride != 1:
        return "col2im"
    winograd = _winograd(f, c, kh, kw, stride, w, lanes, rules)   # a conv with W columns out
    if itemsize == 8 and _tile_rows(w, lanes) != "narrow rows":
        winograd = None                # WINOGRAD_FLOAT64
    if winograd and pad <= kh - 1:
        return winograd
    if rules == "dots" and kh == kw == 1 and pad == 0 and l > f:
        return "gemm_1x1"              # DOTS_1X1_DX
    if rules == "dots":
        return "flipped_conv_s1" if c >= DOTS_MIN_DX_C else "col2im_s1"
    # a 1x1 conv's dx is the GEMM's output itself (64 -> 128 on 16x16, batch 128, 2 threads,
    # cython: backward 9.4 -> 8.4 ms, no fold or crop)
    if kh == kw == 1 and pad == 0 and c % GEMM_ROWS == 0 and l % lanes == 0:
        return "gemm_1x1"
    return "col2im_s1"


@lru_cache(maxsize=256)
def _plan(x_shape, w_shape, stride, pad, pool, lanes, max_flanes_k, rules, itemsize) -> ConvPlan:
    n, c, h, w = x_shape
    f, _, kh, kw = w_shape
    oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    if rules == "dots" and kh == kw == 1 and stride == 1 and pad == 0:
        forward = "direct" if oh * ow >= c else "im2col_gemm"      # DOTS_1X1_DIRECT
    elif rules == "dots" and c * kh * kw >= DOTS_MIN_K:
        long_planes = stride == 1 and oh * (w + 2 * pad) >= DOTS_DIRECT_MIN_PLANE
        forward = "direct" if long_planes and c * kh * kw <= DOTS_DIRECT_MAX_K else "im2col_gemm"
    elif rules == "lanes" and kh == kw == 1 and stride == 1 and pad == 0 and (oh * ow) % lanes == 0:
        forward = "gemm_1x1"           # no im2col, no copy out (conv.pyx _gemm_1x1: measured)
    else:
        forward = (_winograd(c, f, kh, kw, stride, ow, lanes, rules)
                   or ("im2col_gemm" if rules == "lanes" and itemsize == 8      # WINOGRAD_FLOAT64
                       else _forward_path(c, f, kh, kw, stride, ow, lanes, max_flanes_k)))
    pool_grad = None if pool is None else ("expand_2x2" if pool == (2, 2) else "route")
    return ConvPlan(x_shape, w_shape, stride, pad, (oh, ow), pool, forward,
                    _pool_kernel(forward, ow, pool, lanes, stride), pool_grad,
                    _pooled_dw(pool, kw, oh, ow, lanes, rules, itemsize)
                    or _dw_path(c, f, kh, kw, stride, pad, oh, ow, lanes, rules, itemsize),
                    _dx_path(c, f, kh, kw, stride, pad, w, oh * ow, lanes, rules, itemsize), lanes, itemsize)


def conv2d(x_shape, w_shape, stride: int = 1, pad: int = 0, pool=None, lanes: int = LANES,
           max_flanes_k: int = MAX_FLANES_K, rules: str = "lanes", itemsize: int = 4) -> ConvPlan:
    """The plan of a convolution x (N, C, H, W) * w (F, C, KH, KW), optionally fused with
    ReLU and a max pool ``pool = (size, stride)``, for register rows of ``lanes`` floats,
    a filter-lanes forward used up to ``max_flanes_k`` taps (the backend's crossover), the
    backend's ``rules`` (RULES) and elements of ``itemsize`` bytes (4 float32, 8 float64).
    Geometry is assumed valid (the public wrappers check it); the same arguments always
    give the same (cached) plan."""
    pool = None if pool is None else (int(pool[0]), int(pool[1]))
    if rules not in RULES:
        raise ValueError(f"rules must be one of {RULES}, not {rules!r}")
    if itemsize not in (4, 8):
        raise ValueError(f"itemsize must be 4 (float32) or 8 (float64), not {itemsize!r}")
    return _plan(tuple(map(int, x_shape)), tuple(map(int, w_shape)), int(stride), int(pad), pool,
                 int(lanes), int(max_flanes_k), rules, int(itemsize))
