"""The kernel benchmarks' tools. benchmarks/step_kernels.py: the per-kernel breakdown of a
training step times the kernels the layers really call, passes their results through
unchanged, and puts them back; benchmarks/shape_table.py: the shape suite's table;
benchmarks/conv_paths.py: every Cython path forced; benchmarks/pooled_dw.py: the pooled dW
in training."""
import time

import numpy as np
import pytest

from benchmarks import networks, step_kernels
from checks import COMPILED
from fastlenet import kernels

BACKEND = "cython" if "cython" in COMPILED else "numpy"


def _loss_and_grads(backend):
    model = networks.build("lenet5", backend)
    rng = np.random.default_rng(0)
    x = rng.random((8,) + model.input_shape, dtype=np.float32)
    loss, grads = model.loss_and_grads(x, rng.integers(0, 10, 8))
    return loss, {name: g.copy() for name, g in grads.items()}


def test_the_wrapped_kernels_record_each_call_and_change_no_result():
    k = kernels.backend(BACKEND)
    plain_loss, plain_grads = _loss_and_grads(BACKEND)
    with step_kernels.instrumented(k, time.perf_counter) as times:
        loss, grads = _loss_and_grads(BACKEND)
    assert loss == plain_loss
    for name in plain_grads:
        np.testing.assert_array_equal(grads[name], plain_grads[name])
    names = {name for name, _ in times}
    conv = {"conv2d_relu_maxpool_forward", "conv2d_relu_maxpool_backward"} if k.fast is not None \
        else {"conv2d_forward", "conv2d_backward", "maxpool2d_forward", "maxpool2d_backward"}
    assert conv <= names, names
    assert all(len(v) >= 1 and min(v) >= 0 for v in times.values())
    assert ("conv2d_forward" in names) == (k.fast is None)      # the fused path replaces it


def test_the_originals_are_back_after_the_block():
    k = kernels.backend(BACKEND)
    before = [getattr(k, name) for name in step_kernels.PUBLIC]
    with step_kernels.instrumented(k, time.perf_counter):
        assert [getattr(k, name) for name in step_kernels.PUBLIC] != before
    assert [getattr(k, name) for name in step_kernels.PUBLIC] == before


def test_the_report_sums_the_kernels_of_a_few_steps(capsys):
    step_kernels.main([BACKEND, "--batch", "4", "--steps", "2", "--threads", "1"])
    out = capsys.readouterr().out
    assert "| ms / step | fastest ms | kernel | shapes |" in out
    assert "kernels " in out and "ms of a step of" in out


def test_the_shape_table_reads_a_benchmark_file_and_refuses_others_in_one_line(tmp_path, capsys):
    """benchmarks/shape_table.py: each case's time and its ratio to PyTorch's; a file that is
    not the suite's JSON is refused with one line (exit 2), not a traceback."""
    import json

    from benchmarks import shape_table
    doc = {"benchmarks": [
        {"name": "test_shape[torch-x]", "group": "shape conv fwd x", "stats": {"median": 0.002, "min": 0.001}},
        {"name": "test_shape[cython-x]", "group": "shape conv fwd x", "stats": {"median": 0.001, "min": 0.001}},
    ]}
    good = tmp_path / "shapes.json"
    good.write_text(json.dumps(doc))
    assert shape_table.main([str(good)]) == 0
    out = capsys.readouterr().out
    assert "| conv fwd x | 2.00 | 1.00 (0.50x) |" in out and "cython: geometric mean 0.50x" in out
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(SystemExit) as exit_:
        shape_table.main([str(bad)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a pytest-benchmark JSON file" in err


@pytest.mark.skipif("cython" not in COMPILED, reason="the cython backend is not built")
@pytest.mark.parametrize("pool", [False, True])
def test_conv_paths_forces_every_path_and_none_is_wrong(pool):
    """benchmarks/conv_paths.py: every Cython path forced on a layer (with --pool, every dW
    path of its fused conv + ReLU + pool backward), each checked against the reference."""
    from benchmarks import conv_paths
    line = (conv_paths.pooled_layer_paths("lenetC3_6to16_k5_14px", 2, np.float32) if pool else
            conv_paths.layer_paths("lenetC3_6to16_k5_14px", 2, np.float32))
    assert "WRONG" not in line
    assert ("dw pooled_argmax" in line) == pool and "dw direct_filter_lanes" in line


@pytest.mark.skipif("cython" not in COMPILED, reason="the cython backend is not built")
def test_pooled_dw_times_both_rules_and_puts_the_shipped_one_back(capsys):
    """benchmarks/pooled_dw.py: training steps with the pooled dW off and on, then the rule
    as shipped again (the plans re-made from it)."""
    from benchmarks import pooled_dw
    from fastlenet.kernels import plan
    shipped = plan.POOLED_DW_MAX_RATIO
    assert pooled_dw.main(["--model", "cifar-cnn", "--batch", "4", "--steps", "2", "--rounds", "1",
                           "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "pooled / dense (medians)" in out and "windows passing the ReLU" in out
    assert plan.POOLED_DW_MAX_RATIO == shipped
    assert plan.conv2d((4, 3, 32, 32), (32, 3, 3, 3), 1, 1, (2, 2), lanes=8).dw == "pooled_argmax"
