"""SoftmaxCrossEntropy: the softmax output layer and the cross-entropy loss, in one step."""
import numpy as np

from ._args import FLOAT_DTYPES


class SoftmaxCrossEntropy:
    """Mean cross-entropy of softmax(logits) against integer labels.

    Notes
    -----
    For logits z (N, K) and labels y (N,)::

        log p[n, k] = z[n, k] - logsumexp(z[n]),  logsumexp(z) = max(z) + log(sum exp(z - max(z)))
        loss = -mean over n of log p[n, y[n]]
        dloss/dz[n, k] = (p[n, k] - [k == y[n]]) / N

    Subtracting the row maximum keeps every exp() in (0, 1], so no logit overflows.
    """

    def __init__(self):
        self._cache = None

    def forward(self, logits, labels):
        """The mean loss (a Python float) of logits (N, K) for labels (N,) in [0, K)."""
        if not isinstance(logits, np.ndarray) or logits.ndim != 2 or logits.dtype not in FLOAT_DTYPES:
            got = (f"shape {logits.shape} dtype {logits.dtype}" if isinstance(logits, np.ndarray)
                   else type(logits).__name__)
            raise ValueError(f"logits: expected a float32 or float64 ndarray of shape (N, K), got {got}")
        N, K = logits.shape
        labels = np.asarray(labels)
        if labels.shape != (N,) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels: expected integers of shape ({N},), got {labels.dtype} "
                             f"of shape {labels.shape}")
        if N and (labels.min() < 0 or labels.max() >= K):
            raise ValueError(f"labels: expected values in [0, {K}), got values in "
                             f"[{labels.min()}, {labels.max()}]")
        shifted = logits - logits.max(axis=1, keepdims=True)               # (N, K), <= 0
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        self._cache = (np.exp(log_probs), labels)
        return float(-log_probs[np.arange(N), labels].mean())

    def backward(self, grad=1.0):
        """dL/dlogits (N, K) of the last forward, times ``grad`` (dL/dloss)."""
        if self._cache is None:
            raise RuntimeError("SoftmaxCrossEntropy: backward called before forward")
        probs, labels = self._cache
        N = probs.shape[0]
        dlogits = probs.copy()
        dlogits[np.arange(N), labels] -= 1
        dlogits *= grad / N
        return dlogits

    __call__ = forward

    @property
    def probabilities(self):
        """softmax(logits) (N, K) of the last forward."""
        return self._cache[0]

    @property
    def predictions(self):
        """The most probable class (N,) of the last forward."""
        return self._cache[0].argmax(axis=1)

    @property
    def accuracy(self):
        """The share of the last forward's labels that are the most probable class."""
        probs, labels = self._cache
        return float(np.mean(probs.argmax(axis=1) == labels))
