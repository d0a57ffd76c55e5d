"""The CPU convolutions work block by block (dcn_ref/cpu/blocking.py, conv.py): whatever the
block size and the thread count, they equal the loop references, and a call repeated gives
the same bits."""
import numba
import numpy as np
import pytest

from dcn_ref import ops, reference
from dcn_ref.cpu import blocking

from helpers import compare, deform_case

ENV = blocking.ENV_VAR


def with_threads(threads, fn):
    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        return fn()
    finally:
        numba.set_num_threads(before)


# block bytes: 1 = one output pixel a block; 2000 = six pixels (a row of columns here is
# 9 taps x 4 channels x 8 bytes); None = the default (one block a thread at these sizes).
# Blocks span images, and with 2 threads the second one's run begins inside an image.
@pytest.mark.parametrize("block", ["1", "2000", None])
@pytest.mark.parametrize("threads", [1, 2])
def test_every_block_size_and_thread_count_gives_the_loop_reference(block, threads, monkeypatch):
    if block is None:
        monkeypatch.delenv(ENV, raising=False)
    else:
        monkeypatch.setenv(ENV, block)
    rng = np.random.default_rng(7)
    inputs, params = deform_case(rng, N=3, C_in=4, C_out=4, H=5, W=6, kernel=(3, 3), G=2,
                                 groups=2, offset_scale=3.0)
    out = with_threads(threads, lambda: ops.deform_conv2d(**inputs, **params))
    compare(out, reference.deform_conv2d(**inputs, **params), 1e-10, "deform_conv2d")
    g = rng.standard_normal(out.shape)
    compare(with_threads(threads, lambda: ops.deform_conv2d_backward(g, **inputs, **params)),
            reference.deform_conv2d_backward(g, **inputs, **params), 1e-10,
            "deform_conv2d_backward")
    plain = dict(input=inputs["input"], weight=inputs["weight"], bias=inputs["bias"], groups=2,
                 **params)
    compare(with_threads(threads, lambda: ops.conv2d(**plain)), reference.conv2d(**plain),
            1e-10, "conv2d")
    compare(with_threads(threads, lambda: ops.conv2d_backward(g, **plain)),
            reference.conv2d_backward(g, **plain), 1e-10, "conv2d_backward")


def test_more_threads_than_output_pixels(monkeypatch):
    # one image with a 1x2 output: the second thread's run of blocks is empty or one pixel
    monkeypatch.delenv(ENV, raising=False)
    rng = np.random.default_rng(3)
    inputs, params = deform_case(rng, N=1, C_in=2, C_out=3, H=1, W=2, kernel=(3, 3), G=1)
    g = rng.standard_normal((1, 3, 1, 2))
    compare(with_threads(2, lambda: ops.deform_conv2d_backward(g, **inputs, **params)),
            reference.deform_conv2d_backward(g, **inputs, **params), 1e-10, "backward")


def test_a_repeated_call_gives_the_same_bits(monkeypatch):
    monkeypatch.setenv(ENV, "3000")          # many blocks, runs that begin inside images
    rng = np.random.default_rng(11)
    inputs, params = deform_case(rng, N=3, C_in=8, C_out=8, H=7, W=7, kernel=(3, 3), G=2,
                                 dtype=np.float32)
    g = rng.standard_normal((3, 8, 7, 7)).astype(np.float32)
    runs = [with_threads(2, lambda: ops.deform_conv2d_backward(g, **inputs, **params))
            for _ in range(3)]
    for later in runs[1:]:
        for name in runs[0]._fields:
            if getattr(runs[0], name) is not None:
                assert np.array_equal(getattr(runs[0], name), getattr(later, name)), name


@pytest.mark.parametrize("value", ["lots", "0", "-4096", "1.5"])
def test_a_bad_block_size_is_a_value_error_naming_the_variable(value, monkeypatch):
    monkeypatch.setenv(ENV, value)
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 2, 4, 4)), rng.standard_normal((2, 2, 3, 3))
    with pytest.raises(ValueError, match=f"{ENV}: expected a positive whole number of bytes, "
                                         f"got '{value}'"):
        ops.conv2d(x, w, None, padding=1)


def test_the_block_size_is_half_the_l2_cache_or_one_group_weight(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert blocking._parse_size("2048K\n") == 2048 * 1024
    assert blocking._parse_size("1M") == 2**20
    assert blocking._parse_size("512") == 512
    l2 = blocking.l2_cache_bytes()
    assert l2 >= 4096
    assert blocking.block_bytes() == l2 // 2
    assert blocking.block_bytes(weight_bytes=3 * l2) == 3 * l2
    assert blocking.block_bytes(weight_bytes=10 * l2) == 4 * l2
    # a block never holds more rows than the budget, every worker gets as many, no block is
    # empty
    fewest = -(-8 * 3136 // (l2 // 2 // 2304))
    count = blocking.block_count(8 * 3136, 2304, 0, 2)
    assert count % 2 == 0 and fewest <= count <= fewest + 1
    assert blocking.block_count(4, 10**9, 0, 16) == 4
    assert blocking.block_count(100, 1, 0, 3) == 3
    monkeypatch.setenv(ENV, "100")            # 10 pixels a block: 10 blocks, 12 for 3 workers
    assert blocking.block_count(100, 10, 0, 3) == 12
