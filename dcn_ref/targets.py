"""Which target runs an op, and what a target provides.

A target is a module: ``dcn_ref.cpu`` (Numba on the host) or ``dcn_ref.cuda`` (Numba CUDA
kernels). ``Target`` below lists what each provides to the ops of ``dcn_ref.ops``, which
check their arguments, build the geometry (``dcn_ref/geometry.py``) and call these
functions; nothing else crosses the boundary.

``target=None`` means "cuda" when any input is a CUDA device array, else "cpu". With
NumPy inputs and target="cuda" the inputs are copied to the device and the results
copied back, so the caller sees NumPy in and NumPy out.
"""
import importlib
from typing import Protocol

TARGETS = ("cpu", "cuda")


class Target(Protocol):
    """What a target module provides (``dcn_ref.cpu`` and ``dcn_ref.cuda`` both do, checked
    by the tests).

    Arrays are the target's own (NumPy arrays, or Numba device arrays), C-contiguous.
    Outputs passed in are allocated by the op: ``grad_input`` and ``grad_image`` arguments
    are added into (the op zeroes them), the others are written. ``deterministic`` asks
    for bitwise-reproducible sums: the CPU always is, the CUDA target then gathers instead
    of scattering with atomics. The layouts of the sampling engine (``image``, ``offset``,
    ``mask``, ``columns``) are in ``dcn_ref/sampling.py``; a ``mask`` (and its gradient)
    may be None.
    """

    name: str

    # -- memory
    def to_target(self, x):
        """A C-contiguous array of the target holding ``x`` (``x`` itself if it is one)."""

    def to_host(self, x):
        """A NumPy array holding the target array ``x``."""

    def empty(self, shape, dtype):
        """An uninitialised array of the target."""

    def zeros(self, shape, dtype):
        """An array of the target filled with zeros."""

    # -- the sampling engine (bilinear_sample, offset_sample), a ConvGeometry
    def deform_im2col(self, image, offset, mask, mode, geometry, columns):
        """Write columns (Q, Cq, K, L): the samples of image (Q, Cq, H, W)."""

    def sample_backward(self, grad_columns, image, offset, mask, mode, geometry, grad_image,
                        grad_offset, grad_mask, deterministic=False):
        """grad_image += the image gradient; write grad_offset and grad_mask."""

    # -- convolutions (N, C, H, W), a ConvGeometry
    def im2col(self, x, geometry):
        """columns (N, C, K, L) of the textbook layout."""

    def col2im(self, columns, geometry, input_shape, deterministic=True):
        """(N, C, H, W): columns (N, C, K, L) added back to their pixels."""

    def conv2d(self, x, weight, bias, geometry):
        """out (N, C_out, H_out, W_out); bias may be None."""

    def conv2d_backward(self, grad_out, x, weight, has_bias, geometry, deterministic=False):
        """(grad_input, grad_weight, grad_bias or None)."""

    def deform_conv2d(self, x, offset, mask, weight, bias, geometry):
        """out (N, C_out, H_out, W_out), offset and mask in the op's layouts."""

    def deform_conv2d_backward(self, grad_out, x, offset, mask, weight, has_bias, geometry,
                               deterministic=False):
        """(grad_input, grad_offset, grad_weight, grad_bias or None, grad_mask or None)."""

    # -- RoI pooling, a RoIPoolGeometry or a PSRoIPoolGeometry
    def deform_roi_pool(self, input, rois, offset, mask, geometry, out):
        """Write out (K, C, ph, pw); offset and mask may be None."""

    def deform_roi_pool_backward(self, grad_output, input, rois, offset, mask, geometry,
                                 grad_input, grad_offset, grad_mask, deterministic=False):
        """grad_input += the input gradient; write grad_offset and grad_mask when given."""

    def deform_psroi_pool(self, input, rois, trans, geometry, out):
        """Write out (K, output_dim, pooled_size, pooled_size); trans may be None."""

    def deform_psroi_pool_backward(self, grad_output, input, rois, trans, geometry, grad_input,
                                   grad_trans, deterministic=False):
        """grad_input += the input gradient; write grad_trans when there is a trans."""

    # -- DCNv3 / DCNv4, channels last, a PointGeometry
    def dcnv3(self, input, offset, mask, geometry):
        """out (N, H_out, W_out, C)."""

    def dcnv3_backward(self, grad_out, input, offset, mask, geometry, grad_input, grad_offset,
                       grad_mask, deterministic=False):
        """grad_input += the input gradient; write every point's grad_offset, grad_mask."""

    # -- forward mode and second derivatives (the maths in dcn_ref/sampling.py). A tangent
    # (``*_dot``) has its input's shape; those of the image (x, input), the weight and the
    # bias may be None (zero), those of the offsets, and of the mask when there is one, are
    # arrays (zeros where nothing moves). Gradients passed in are added into.
    def tangent_im2col(self, image, offset, mask, mode, geometry, image_dot, offset_dot,
                       mask_dot, columns_dot):
        """Write columns_dot (Q, Cq, K, L): the change of deform_im2col's columns along the
        tangents."""

    def sample_backward_backward(self, grad_columns, image, offset, mask, mode, geometry,
                                 image_dot, offset_dot, mask_dot, grad_image, grad_offset,
                                 grad_mask, deterministic=False):
        """grad_image, grad_offset, grad_mask += the gradients of <grad_columns, columns_dot>
        with respect to image, offset and mask."""

    def deform_conv2d_jvp(self, x, offset, mask, weight, bias, geometry, x_dot, offset_dot,
                          mask_dot, weight_dot, bias_dot):
        """out_dot (N, C_out, H_out, W_out): the change of deform_conv2d's output."""

    def deform_conv2d_backward_backward(self, grad_out, x, offset, mask, weight, geometry, x_dot,
                                        offset_dot, mask_dot, weight_dot, deterministic=False):
        """(grad_input, grad_offset, grad_weight, grad_mask or None): the gradients of
        deform_conv2d_backward's outputs dotted with their cotangents (the ``*_dot``)."""

    def dcnv3_jvp(self, input, offset, mask, geometry, input_dot, offset_dot, mask_dot):
        """out_dot (N, H_out, W_out, C): the change of dcnv3's output."""

    def dcnv3_backward_backward(self, grad_out, input, offset, mask, geometry, input_dot,
                                offset_dot, mask_dot, grad_input, grad_offset, grad_mask,
                                deterministic=False):
        """grad_input, grad_offset, grad_mask += the gradients of <grad_out, out_dot> with
        respect to input, offset and mask."""


def is_device_array(x):
    """True for Numba CUDA device arrays (and the simulator's stand-ins)."""
    return hasattr(x, "copy_to_host") or hasattr(x, "__cuda_array_interface__")


def resolve(target, arrays):
    """The target name for a call whose array arguments are ``arrays``."""
    on_device = any(is_device_array(a) for a in arrays if a is not None)
    if target is None:
        return "cuda" if on_device else "cpu"
    if target not in TARGETS:
        raise ValueError(f"target: expected 'cpu', 'cuda' or None, got {target!r}")
    if target == "cpu" and on_device:
        raise ValueError("target: expected 'cuda' or None for CUDA device arrays, got 'cpu' "
                         "(copy them to the host with .copy_to_host() first)")
    return target


def backend(target) -> Target:
    """The module implementing ``target`` (dcn_ref.cpu or dcn_ref.cuda)."""
    if target == "cuda":
        try:
            return importlib.import_module("dcn_ref.cuda")
        except ImportError as exc:
            raise ValueError(f"target: 'cuda' needs Numba's CUDA support (pip install "
                             f"'dcn-ref[cuda]'), which failed to import: {exc}") from exc
    return importlib.import_module("dcn_ref.cpu")


class Call:
    """The target of one op call, and the trips its arrays make to and from it."""

    def __init__(self, target, arrays):
        self.target = resolve(target, arrays)
        self.backend = backend(self.target)
        self.host_io = not any(is_device_array(a) for a in arrays if a is not None)

    def put(self, x):
        """An input as a C-contiguous array of the target; None stays None."""
        return None if x is None else self.backend.to_target(x)

    def get(self, x):
        """A result as the caller passed its inputs: NumPy for NumPy, device for device."""
        if x is None:
            return None
        return self.backend.to_host(x) if self.host_io else x
