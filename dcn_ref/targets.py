"""Which target runs an op: "cpu" (Numba on the host) or "cuda" (Numba CUDA kernels).

``target=None`` means "cuda" when any input is a CUDA device array, else "cpu". With
NumPy inputs and target="cuda" the inputs are copied to the device and the results
copied back, so the caller sees NumPy in and NumPy out.
"""
import importlib

TARGETS = ("cpu", "cuda")


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


def backend(target):
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
