"""The bridge checks what the NumPy ops check, before anything is dispatched: one device for
all tensors (a meta tensor among CPU tensors is an error, not uninitialised memory), the
shapes in the fake implementations too (meta tensors), and the scalar arguments as they
were given (never converted by the schemas first). Every refusal is an ArgumentError, a
ValueError and a RuntimeError whose message starts with the argument's name."""
import inspect

import numpy as np
import pytest
import torch

import dcn_ref.torch as dt
from dcn_ref import ops
from torch_cases import cases

CASES = {case_id: (fn, args) for case_id, _, fn, args in cases()}


def tensor_args(args):
    return [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]


def names_of(fn):
    return list(inspect.signature(fn).parameters)


def test_the_error_is_both_a_value_error_and_a_runtime_error():
    assert issubclass(dt.ArgumentError, ValueError) and issubclass(dt.ArgumentError, RuntimeError)
    x, w = torch.zeros(1, 2, 5, 5), torch.zeros(3, 2, 3, 3)
    for kind in (ValueError, RuntimeError, dt.ArgumentError):
        with pytest.raises(kind, match=r"^offset: "):
            dt.deform_conv2d(x, torch.zeros(1, 17, 5, 5), w, padding=1)


@pytest.mark.parametrize("case_id", CASES)
def test_a_meta_tensor_among_cpu_tensors_is_an_error_naming_it_and_both_devices(case_id):
    fn, args = CASES[case_id]
    names = names_of(fn)
    first = tensor_args(args)[0]
    for i in tensor_args(args)[1:]:
        moved = list(args)
        moved[i] = args[i].detach().to("meta")
        with pytest.raises(dt.ArgumentError,
                           match=rf"^{names[i]}: expected a tensor on cpu \(the device of "
                                 rf"{names[first]}\), got one on meta$"):
            fn(*moved)
    # the first one on meta: the next tensor is the one on the other device
    moved = list(args)
    moved[first] = args[first].detach().to("meta")
    second = tensor_args(args)[1]
    with pytest.raises(dt.ArgumentError,
                       match=rf"^{names[second]}: expected a tensor on meta .* got one on cpu$"):
        fn(*moved)


def test_the_registered_op_refuses_mixed_devices_too():
    x, offset, w = torch.zeros(1, 2, 5, 5), torch.zeros(1, 18, 5, 5), torch.zeros(3, 2, 3, 3)
    with pytest.raises(dt.ArgumentError, match=r"^weight: expected a tensor on cpu"):
        torch.ops.dcn_ref.deform_conv2d(x, offset, w.to("meta"), None, [1, 1], [1, 1], [1, 1],
                                        None)


@pytest.mark.parametrize("case_id", CASES)
def test_all_meta_tensors_give_a_meta_result_of_the_ops_shape(case_id):
    fn, args = CASES[case_id]
    expected = fn(*args)
    meta = [a.detach().to("meta") if isinstance(a, torch.Tensor) else a for a in args]
    out = fn(*meta)
    assert out.device.type == "meta" and out.shape == expected.shape
    assert out.dtype == expected.dtype


def test_meta_tensors_get_the_shape_checks_of_the_op():
    meta = {"device": "meta"}
    x, w = torch.zeros(1, 2, 5, 5, **meta), torch.zeros(3, 2, 3, 3, **meta)
    with pytest.raises(dt.ArgumentError, match=r"^offset: expected a positive multiple of "
                                               r"2\*kh\*kw = 18 channels .* got 17"):
        dt.deform_conv2d(x, torch.zeros(1, 17, 5, 5, **meta), w, padding=1)
    with pytest.raises(dt.ArgumentError, match=r"^offset: .*the shape of the offset"):
        torch.ops.dcn_ref.deform_conv2d(x, torch.zeros(1, 17, 5, 5, **meta), w, None, [1, 1],
                                        [1, 1], [1, 1], None)
    with pytest.raises(dt.ArgumentError, match=r"^offset: expected dtype float16 \(the dtype "
                                               r"of input\), got float32$"):
        dt.deform_conv2d(x.half(), torch.zeros(1, 18, 5, 5, **meta), w.half(), padding=1)
    with pytest.raises(dt.ArgumentError, match=r"^mask: expected shape \(1, 9, 5, 5\)"):
        dt.deform_conv2d(x, torch.zeros(1, 18, 5, 5, **meta), w, padding=1,
                         mask=torch.zeros(1, 9, 4, 5, **meta))
    with pytest.raises(dt.ArgumentError, match=r"^offset: expected shape \(1, 4, 4, 36\)"):
        dt.dcnv3(torch.zeros(1, 4, 4, 4, **meta), torch.zeros(1, 4, 4, 18, **meta),
                 torch.zeros(1, 4, 4, 18, **meta), 3, padding=1, group=2)


def test_the_fake_implementation_of_the_backward_op_checks_grad_output():
    x, offset, w = (torch.zeros(1, 2, 5, 5, device="meta"), torch.zeros(1, 18, 5, 5, device="meta"),
                    torch.zeros(3, 2, 3, 3, device="meta"))
    with pytest.raises(dt.ArgumentError, match=r"^grad_output: expected shape \(1, 3, 5, 5\)"):
        torch.ops.dcn_ref.deform_conv2d_backward(torch.zeros(1, 3, 4, 5, device="meta"), x,
                                                 offset, w, None, [1, 1], [1, 1], [1, 1], None)


def test_tensors_of_two_dtypes_or_of_a_dtype_the_ops_lack_are_refused_by_name():
    x, offset, w = torch.zeros(1, 2, 5, 5), torch.zeros(1, 18, 5, 5), torch.zeros(3, 2, 3, 3)
    with pytest.raises(dt.ArgumentError, match=r"^weight: expected dtype float32 \(the dtype of "
                                               r"input\), got bfloat16$"):
        dt.deform_conv2d(x, offset, w.bfloat16(), padding=1)
    with pytest.raises(dt.ArgumentError, match=r"^offset: expected dtype bfloat16 \(the dtype of "
                                               r"input\), got float16$"):
        dt.deform_conv2d(x.bfloat16(), offset.half(), w.bfloat16(), padding=1)
    for dtype in (torch.int64, torch.complex64, torch.float8_e4m3fn):
        with pytest.raises(dt.ArgumentError, match=r"^input: expected dtype float16, bfloat16, "
                                                   rf"float32 or float64, got {str(dtype)[6:]}$"):
            dt.deform_conv2d(x.to(dtype), offset.to(dtype), w.to(dtype), padding=1)
    with pytest.raises(dt.ArgumentError, match=r"^bias: expected dtype float16 \(the dtype of "
                                               r"input\), got float32$"):
        # the registered op itself (a scripted caller's path) checks the dtypes too
        torch.ops.dcn_ref.deform_conv2d(x.half(), offset.half(), w.half(), torch.zeros(3),
                                        [1, 1], [1, 1], [1, 1], None)


def dcnv3_call(**kwargs):
    args = dict(kernel_size=3, padding=1, group=2)
    args.update(kwargs)
    return dt.dcnv3(torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 4, 36), torch.zeros(1, 4, 4, 18),
                    **args)


def roi_call(**kwargs):
    return dt.deform_roi_pool(torch.zeros(1, 2, 5, 5), torch.tensor([[0, 0, 0, 3, 3.0]]),
                              **kwargs)


def psroi_call(**kwargs):
    return dt.deform_psroi_pool(torch.zeros(1, 8, 5, 5), torch.tensor([[0, 0, 0, 3, 3.0]]),
                                **kwargs)


# (call, argument, value): each given as is would be converted by a schema (2.5 to 2, "no"
# to True, True to 1.0) or fail there without naming the argument
SCALARS = [
    (dcnv3_call, "group", 2.5), (dcnv3_call, "group", True), (dcnv3_call, "group", 2 ** 63),
    (dcnv3_call, "group", "2"), (dcnv3_call, "remove_center", "no"),
    (dcnv3_call, "remove_center", 1), (dcnv3_call, "offset_scale", True),
    (dcnv3_call, "offset_scale", "1.0"), (dcnv3_call, "offset_scale", "a"),
    (dcnv3_call, "offset_scale", 10 ** 400), (dcnv3_call, "offset_scale", None),
    (dcnv3_call, "kernel_size", 3.0), (dcnv3_call, "stride", (1, True)),
    (roi_call, "sampling_ratio", 1.7), (roi_call, "gamma", None), (roi_call, "gamma", 10 ** 400),
    (roi_call, "spatial_scale", "1"), (roi_call, "output_size", 2 ** 63),
    (psroi_call, "output_dim", 2.9), (psroi_call, "group_size", 2 ** 63),
    (psroi_call, "no_trans", 1), (psroi_call, "trans_std", 10 ** 400),
    (lambda **k: dt.bilinear_sample(torch.zeros(1, 3, 3), torch.zeros(1, 2, 2), **k),
     "padding_mode", 1),
    (lambda **k: dt.offset_sample(torch.zeros(1, 1, 3, 3), torch.zeros(1, 2, 3, 3), **k),
     "padding_mode", None),
]


@pytest.mark.parametrize("call, name, value", SCALARS,
                         ids=[f"{name}={value!r:.12}" for _, name, value in SCALARS])
def test_a_scalar_of_the_wrong_type_or_range_is_an_error_naming_it(call, name, value):
    with pytest.raises(dt.ArgumentError, match=rf"^{name}: expected "):
        call(**{name: value})


def test_a_scalar_error_is_the_ops_own_message():
    # the NumPy op's message, word for word: the bridge hands the value on unconverted
    with pytest.raises(ValueError) as numpy_error:
        ops.dcnv3(np.zeros((1, 4, 4, 4)), np.zeros((1, 4, 4, 36)), np.zeros((1, 4, 4, 18)), 3,
                  padding=1, group=2.5)
    with pytest.raises(dt.ArgumentError) as torch_error:
        dcnv3_call(group=2.5)
    assert str(torch_error.value) == str(numpy_error.value)


def test_numpy_scalars_and_lists_are_taken_as_the_op_takes_them():
    x = torch.randn(1, 4, 4, 4, dtype=torch.float64)
    offset = torch.randn(1, 4, 4, 36, dtype=torch.float64)
    mask = torch.rand(1, 4, 4, 18, dtype=torch.float64)
    plain = dt.dcnv3(x, offset, mask, 3, 1, 1, 1, 2, 0.5, False)
    numpy = dt.dcnv3(x, offset, mask, np.int64(3), [1, 1], (np.int32(1), 1), 1, np.int64(2),
                     np.float64(0.5), np.bool_(False))
    assert torch.equal(plain, numpy)
    expected = ops.dcnv3(x.numpy(), offset.numpy(), mask.numpy(), 3, padding=1, group=2,
                         offset_scale=0.5)
    assert np.array_equal(plain.numpy(), expected)


def test_a_tensor_argument_that_is_not_a_tensor_is_named():
    x, offset = torch.zeros(1, 2, 5, 5), torch.zeros(1, 18, 5, 5)
    with pytest.raises(dt.ArgumentError, match=r"^weight: expected a torch.Tensor, got ndarray$"):
        dt.deform_conv2d(x, offset, np.ones((3, 2, 3, 3)))
    with pytest.raises(dt.ArgumentError, match=r"^mask: expected a torch.Tensor or None, got list"):
        dt.deform_conv2d(x, offset, torch.ones(3, 2, 3, 3), mask=[1.0])
