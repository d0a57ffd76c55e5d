"""What the benchmarks time: our ops, and torch's and torchvision's, on one shape's inputs
(``shapes.make_inputs``): 3x3 kernels, padding 1, the shape's stride, float32.

Each function returns ``{(op, pass): call}`` with pass "fwd" (forward) or "f+b" (forward
then backward; torch's through autograd).
"""


def our_calls(shape, a):
    """Our deform_conv2d, conv2d and offset_sample on the CPU."""
    from .. import ops
    p = {"stride": shape.stride, "padding": 1}

    def deform():
        return ops.deform_conv2d(a["input"], a["offset"], a["weight"], None, mask=a["mask"], **p)

    def deform_both():
        deform()
        ops.deform_conv2d_backward(a["grad"], a["input"], a["offset"], a["weight"], None,
                                   mask=a["mask"], **p)

    def conv():
        return ops.conv2d(a["input"], a["weight"], None, **p)

    def conv_both():
        conv()
        ops.conv2d_backward(a["grad"], a["input"], a["weight"], None, **p)

    def sample():
        return ops.offset_sample(a["input"], a["offset_sample"])

    def sample_both():
        sample()
        ops.offset_sample_backward(a["grad_offset_sample"], a["input"], a["offset_sample"])

    return {("deform_conv2d", "fwd"): deform, ("deform_conv2d", "f+b"): deform_both,
            ("conv2d", "fwd"): conv, ("conv2d", "f+b"): conv_both,
            ("offset_sample", "fwd"): sample, ("offset_sample", "f+b"): sample_both}


def their_calls(shape, a):
    """torchvision.ops.deform_conv2d and torch's conv2d, or {} without torch and
    torchvision."""
    try:
        import torch
        import torchvision
    except ImportError:
        return {}
    t = {k: None if v is None else torch.tensor(v, requires_grad=True) for k, v in a.items()}
    p = {"stride": shape.stride, "padding": 1}

    def deform():
        with torch.no_grad():
            return torchvision.ops.deform_conv2d(t["input"], t["offset"], t["weight"], None,
                                                 mask=t["mask"], **p)

    def deform_both():
        torchvision.ops.deform_conv2d(t["input"], t["offset"], t["weight"], None, mask=t["mask"],
                                      **p).backward(t["grad"])

    def conv():
        with torch.no_grad():
            return torch.nn.functional.conv2d(t["input"], t["weight"], None, **p)

    def conv_both():
        torch.nn.functional.conv2d(t["input"], t["weight"], None, **p).backward(t["grad"])

    return {("conv2d", "fwd"): conv, ("conv2d", "f+b"): conv_both,
            ("deform_conv2d", "fwd"): deform, ("deform_conv2d", "f+b"): deform_both}
