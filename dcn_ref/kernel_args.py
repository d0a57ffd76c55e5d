"""What the host code of both targets hands to their kernels, built in one place.

    chunks        the batch cut into slices whose scratch buffers fit a budget
    EngineViews   a deformable convolution's arrays, sliced to a batch chunk, in the
                  layouts of the sampling engine (``dcn_ref/sampling.py``); all views
    or_stand_in   an array for an argument the op did not get (Numba kernels need an
                  array in every argument; a flag tells the kernel not to read it)
    real_of       the ``real`` of ``sampling.SamplePoints`` for arithmetic in the data's
                  dtype (the CUDA kernels'; the CPU's is 0.0, float64)

Everything here works on NumPy arrays and on Numba device arrays alike (slices and
reshapes of C-contiguous arrays only); a target passes its own allocator to
``or_stand_in``.
"""


def chunks(n_images, bytes_per_image, budget_bytes):
    """The batch as slices (n0, n1) of at most ``budget_bytes // bytes_per_image`` images
    (at least one image each)."""
    step = max(1, budget_bytes // max(1, bytes_per_image))
    return [(n0, min(n0 + step, n_images)) for n0 in range(0, n_images, step)]


class EngineViews:
    """The batch slice n0:n1 of a deformable convolution as the sampling engine sees it:
    Q = n*G planes (G offset groups), Cq = C/G channels a plane, K taps, L output pixels.

    Parameters
    ----------
    geometry : ConvGeometry
        The convolution's (``offset_groups``, ``taps`` and ``pixels`` are read).
    channels, height, width : int
        C, H, W of the input (N, C, H, W).
    """

    def __init__(self, geometry, channels, height, width):
        self.G, self.K, self.L = geometry.offset_groups, geometry.taps, geometry.pixels
        self.cq, self.H, self.W = channels // self.G, height, width

    def image(self, a, n0, n1):
        """(N, C, H, W) -> the chunk's (n*G, Cq, H, W)."""
        return a[n0:n1].reshape((n1 - n0) * self.G, self.cq, self.H, self.W)

    def offsets(self, a, n0, n1):
        """(N, 2*G*K, H_out, W_out) -> the chunk's (n*G, K, 2, L)."""
        return a[n0:n1].reshape((n1 - n0) * self.G, self.K, 2, self.L)

    def masks(self, a, n0, n1):
        """(N, G*K, H_out, W_out) -> the chunk's (n*G, K, L); None stays None."""
        return None if a is None else a[n0:n1].reshape((n1 - n0) * self.G, self.K, self.L)

    def columns(self, a, n0, n1):
        """A chunk's columns (n, C, K, L) -> (n*G, Cq, K, L) (``a`` holds the chunk only)."""
        return a.reshape((n1 - n0) * self.G, self.cq, self.K, self.L)


def real_of(a):
    """A zero of array ``a``'s dtype: sampling kernels given it compute in that dtype."""
    return a.dtype.type(0)


def or_stand_in(a, shape, like, empty):
    """``(a, True)``, or, when ``a`` is None, ``(stand-in, False)``: an array of ``shape``
    and ``like``'s dtype from the target's allocator ``empty(shape, dtype)``, which the
    kernel never reads (the flag says so)."""
    return (a, True) if a is not None else (empty(shape, like.dtype), False)
