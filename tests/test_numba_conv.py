"""The Numba convolution's pieces: each forward path forced on one geometry (the crossover
benchmarks run them so) against the reference, the block thread pool that runs every
Numba kernel, and each CPU's register tiles and row widths whatever CPU runs the tests."""
import os
import signal
import threading

import numpy as np
import pytest

from checks import assert_close
from fastlenet.kernels import _block_threads, numba_conv, plan
from fastlenet.kernels import reference as ref

# stride 1, OW >= 8, K <= 512: every forward path can run it
GEOMETRY = ((3, 4, 11, 12), (10, 4, 3, 3), 1, 1)


@pytest.mark.parametrize("pool", [None, (2, 2), (3, 2)])
@pytest.mark.parametrize("path", [p for p in plan.FORWARD if p not in numba_conv.CYTHON_ONLY])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_forward_path_forced_matches_the_reference(path, pool, dtype):
    x_shape, w_shape, stride, pad = GEOMETRY
    rng = np.random.default_rng(5)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    oh, ow = x_shape[2] + 2 * pad - 2, x_shape[3] + 2 * pad - 2
    expected = ref._conv2d_forward_impl(x, w, b, stride, pad, oh, ow)
    if pool is None:
        y, _ = numba_conv.conv_forward(x, w, b, stride, pad, oh, ow, path=path)
    else:
        y, arg = numba_conv.conv_forward(x, w, b, stride, pad, oh, ow, *pool, path=path)
        expected, _ = ref._maxpool2d_forward_impl(np.maximum(expected, 0), pool[0], pool[1],
                                                  (oh - pool[0]) // pool[1] + 1, (ow - pool[0]) // pool[1] + 1)
        assert arg.shape == y.shape
    assert_close(f"{path} {pool}", y, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, w_shape, pad", [
    ((2, 33, 7, 9), (5, 33, 3, 2), 0),          # a kernel wider than high, no padding
    ((3, 33, 7, 9), (6, 33, 3, 3), 1),
    ((2, 32, 6, 6), (4, 32, 2, 2), 3),          # padding past KH-1: the window starts outside dz
    ((17, 40, 5, 5), (9, 40, 1, 1), 1),         # 1x1 with padding; more than one block of samples
    ((2, 36, 9, 8), (7, 36, 5, 5), 2),
])
def test_the_flipped_conv_dx_matches_the_reference(x_shape, w_shape, pad, dtype):
    """dx at stride 1 from DOTS_MIN_DX_C channels: dz convolved with the flipped weights."""
    assert numba_conv.conv_plan(x_shape, w_shape, 1, pad).dx == "flipped_conv_s1"
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    oh, ow = x_shape[2] + 2 * pad - w_shape[2] + 1, x_shape[3] + 2 * pad - w_shape[3] + 1
    dy = rng.standard_normal((x_shape[0], w_shape[0], oh, ow)).astype(dtype)
    no_arg = np.zeros((1, 1, 1, 1), np.int32)
    got = numba_conv.conv_backward(dy, no_arg, x, w, 1, pad, oh, ow, True, False)
    for what, g, want in zip(("dx", "dw", "db"), got, ref.conv2d_backward(dy, x, w, 1, pad)):
        assert_close(what, g, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, f", [((3, 5, 4, 5), 7), ((19, 12, 6, 6), 9), ((2, 3, 9, 7), 16)],
                         ids=["odd-planes", "blocks-of-samples", "more-filters-than-channels"])
def test_the_1x1_dx_by_plane_passes_matches_the_reference(x_shape, f, dtype):
    """dx of an unpadded 1x1 conv whose planes hold more than F pixels (DOTS_1X1_DX):
    w^T @ dz by the direct forward's passes over dz's planes, a block of samples at a time."""
    assert numba_conv.conv_plan(x_shape, (f, x_shape[1], 1, 1), 1, 0).dx == "gemm_1x1"
    rng = np.random.default_rng(5)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((f, x_shape[1], 1, 1)).astype(dtype)
    dy = rng.standard_normal((x_shape[0], f) + x_shape[2:]).astype(dtype)
    no_arg = np.zeros((1, 1, 1, 1), np.int32)
    got = numba_conv.conv_backward(dy, no_arg, x, w, 1, 0, x_shape[2], x_shape[3], True, False)
    for what, g, want in zip(("dx", "dw", "db"), got, ref.conv2d_backward(dy, x, w, 1, 0)):
        assert_close(what, g, want)


@pytest.mark.parametrize("n,threads,samples", [(128, 2, 16), (32, 2, 16), (16, 2, 8), (3, 2, 2), (1, 2, 1),
                                               (40, 4, 10), (16, 1, 16)])
def test_the_forward_cuts_a_small_batch_by_the_thread_count(n, threads, samples):
    """Blocks of SB samples unless that leaves threads idle (16 on 2 threads: one block)."""
    assert numba_conv.forward_samples(n, threads) == samples


@pytest.mark.parametrize("n,samples", [(256, 16), (128, 16), (64, 8), (16, 2), (9, 2), (8, 1), (1, 1)])
def test_the_backward_cuts_a_small_batch_by_its_size_alone(n, samples):
    """At least MIN_BLOCKS blocks while they keep a sample each, from N only (the dW partials
    are summed per block: the same bits on any thread count)."""
    assert numba_conv.backward_samples(n) == samples


@pytest.mark.parametrize("n", [1, 5, 16])
def test_a_small_batch_forward_matches_the_reference_on_two_threads(n):
    import numba
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 8, 12, 12)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    y, _ = numba_conv.conv_forward(x, w, b, 1, 1, 12, 12)
    assert_close("y", y, ref.conv2d_forward(x, w, b, 1, 1))


@pytest.mark.parametrize("blocks", [1, 2, 7, 40])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_run_blocks_runs_every_block_once_with_a_thread_id_in_range(blocks, threads):
    seen, ids, lock = [], set(), threading.Lock()

    def run_block(q, t):
        with lock:
            seen.append(q)
            ids.add(t)

    _block_threads.run_blocks(run_block, blocks, threads)
    assert sorted(seen) == list(range(blocks))
    assert ids <= set(range(min(threads, blocks)))


def test_run_blocks_re_raises_a_blocks_error_once_every_block_ran():
    ran = []

    def run_block(q, t):
        ran.append(q)
        if q == 3:
            raise ValueError("block 3 failed")

    with pytest.raises(ValueError, match="block 3 failed"):
        _block_threads.run_blocks(run_block, 8, 2)
    assert sorted(ran) == list(range(8))
    done = []
    _block_threads.run_blocks(lambda q, t: done.append(q), 4, 2)      # the pool still works
    assert sorted(done) == [0, 1, 2, 3]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")   # Python >= 3.12
def test_a_forked_child_gets_a_pool_of_its_own():
    _block_threads.run_blocks(lambda q, t: None, 4, 2)                 # the parent's pool exists
    pid = os.fork()
    if pid == 0:                                                       # child: must not wait on dead threads
        signal.alarm(30)                                               # (a hang would end the child, not the suite)
        done = []
        _block_threads.run_blocks(lambda q, t: done.append(q), 6, 2)
        os._exit(0 if sorted(done) == list(range(6)) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("tile", ["_gemm_nt_4x4", "_gemm_nt_4x2"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_nt_tiles_match_numpy_for_every_row_and_column_remainder(tile, dtype):
    """Both of gemm_nt's tiles, whichever this CPU's registers select (4 x 4 with a 2 x 8
    remainder for AVX-512, 4 x 2 with a 2 x 4 remainder for 16 registers; a last block of 1
    or 3 rows repeats its last one), over b's rows given as offsets into one flat array
    (shifted windows, as dW uses them)."""
    from fastlenet.kernels import _numba_loops
    gemm_nt = getattr(_numba_loops, tile)
    rng = np.random.default_rng(11)
    flat = rng.standard_normal(400).astype(dtype)
    for m in range(1, 11):
        for n in (1, 2, 3, 4, 5, 8, 9, 13, 16, 17):
            k = int(rng.integers(1, 40))
            a = rng.standard_normal((m, k)).astype(dtype)
            offs = rng.integers(0, flat.size - k, n).astype(np.int64)
            out = rng.standard_normal((m, n)).astype(dtype)
            want = out + a @ np.stack([flat[o:o + k] for o in offs]).T
            gemm_nt(a, flat, offs, out)
            assert_close(f"{tile} m {m} n {n} k {k}", out, want)


def test_gemm_nt_is_the_tile_of_this_cpus_vector_registers():
    from fastlenet.kernels import _numba_loops
    want = _numba_loops._gemm_nt_4x4 if _numba_loops.VREGS >= 32 else _numba_loops._gemm_nt_4x2
    assert _numba_loops.gemm_nt is want
    assert _numba_loops.VREGS in (16, 32)


@pytest.mark.parametrize("tile", ["_planes_f8", "_planes_f4_twice"])
@pytest.mark.parametrize("taps", [1, 3, 4, 7, 9])
def test_both_eight_filter_plane_passes_match_numpy(tile, taps):
    """The direct forward's pass over eight filters (8 x 4 taps for AVX-512, two 4 x 4 for 16
    registers; a last 1-3 taps one at a time): z = b + sum over taps of w * shifted plane."""
    from fastlenet.kernels import _numba_loops
    run = getattr(_numba_loops, tile)
    rng = np.random.default_rng(taps)
    m, f0 = 48, 8
    flat = rng.standard_normal(200).astype(np.float32)
    offs = rng.integers(0, flat.size - m, taps).astype(np.int64)
    wm = rng.standard_normal((16, taps)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    z = np.full((16, m), 7.0, dtype=np.float32)
    run(flat, wm, b, offs, f0, z)
    windows = np.stack([flat[o:o + m] for o in offs])                 # (taps, M)
    assert_close(f"{tile} taps {taps}", z[f0:], b[f0:, None] + wm[f0:] @ windows)
    assert np.all(z[:f0] == 7.0)                                       # other filters untouched


@pytest.mark.parametrize("multiple", [8, 16, 32])
@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_max_pool_rows_match_the_reference_at_every_row_multiple(multiple, size, dtype):
    """The max pool's rows computed in multiples of 8, 16 or 32 columns (numba_pool
    max_row_multiple: by the item size with AVX-512, 16 elements with 16 registers), junk
    columns written into the next pooled rows and overwritten; ties and NaN."""
    from fastlenet.kernels import numba_pool
    rng = np.random.default_rng(multiple + size)
    for width in (size, 7, 16, 17, 33, 40):
        x = rng.integers(0, 4, (2, 3, size + 4, width)).astype(dtype)
        x[0, 1, 1, width // 2] = np.nan
        oh, ow = (x.shape[2] - size) // 2 + 1, (width - size) // 2 + 1
        y, arg = numba_pool._maxpool2d_forward_kernel(x, size, 2, oh, ow, numba_pool.tap_codes(dtype), multiple)
        ry, rarg = ref.maxpool2d_forward(x, size, 2)
        np.testing.assert_array_equal(y, ry, err_msg=f"y, width {width}")
        np.testing.assert_array_equal(arg, rarg, err_msg=f"arg, width {width}")


@pytest.mark.parametrize("slack", [False, True], ids=["row-by-row", "wide-rows"])
@pytest.mark.parametrize("ow", [2, 10, 24, 33, 40])
def test_both_fused_relu_pool_paths_match_the_reference(slack, ow):
    """relu_maxpool_2x2 on a unit-stride conv output: its rows computed whole vectors wide
    when z has room for their reads (pool_slack_rows), else pooled column by column; the
    first max of each window (ties, NaN), -1 where it is <= 0."""
    from fastlenet.kernels import _numba_loops
    rng = np.random.default_rng(ow)
    f_, oh = 3, 6
    z = rng.integers(-2, 3, (f_, oh, ow)).astype(np.float32)
    z[1, 2, ow - 1] = np.nan
    extra = _numba_loops.pool_slack_rows(oh * ow, ow, 2, 2) if slack else 0
    flat = np.concatenate([z.ravel(), np.full(extra * oh * ow, np.nan, dtype=np.float32)])
    y = np.empty((f_, oh // 2, ow // 2), dtype=np.float32)
    arg = np.empty(y.shape, dtype=np.int32)
    _numba_loops.relu_maxpool_2x2(flat, oh * ow, ow, 1, ow, y, arg)
    want, want_arg = ref.maxpool2d_forward(z[None], 2, 2)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(y, np.where(want[0] <= 0, 0, want[0]))
        np.testing.assert_array_equal(arg, np.where(want[0] > 0, want_arg[0], -1))
