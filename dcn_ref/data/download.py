"""Fetching the full MNIST (60,000 training digits) where a network exists.

Every file is written to a temporary file in the destination folder, checked against its
published md5, and only then renamed into place (``os.replace``, atomic on one file system), so
the folder never holds a partial or unverified file, also when the transfer fails or is
interrupted with Ctrl-C. Files already present with the right checksum are not fetched again.
"""
import hashlib
import http.client
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .errors import DataError
from ..atomic import atomic_file

#: Where the four files are fetched from: the mirror that torchvision uses
#: (yann.lecun.com, the original home, no longer serves them reliably).
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"

#: The published md5 of each file, as listed by torchvision (``torchvision/datasets/mnist.py``).
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

_CHUNK = 1 << 16
_MD5_HEX = re.compile(r"[0-9a-f]{32}")
_OFFLINE_HINT = "no network? load_mnist() without a folder uses the 5,000 digits shipped with dcn_ref"


class DownloadError(DataError):
    """A file that could not be fetched, or that arrived incomplete or with the wrong checksum."""


def download_mnist(dest_dir, base_url=MNIST_URL, files=MNIST_MD5, timeout=30.0, progress=None):
    """Fetch the MNIST files into ``dest_dir``, each verified against its md5.

    Parameters
    ----------
    dest_dir : str or os.PathLike
        The folder to fill (created if missing). Afterwards it can be passed to ``load_mnist``.
    base_url : str
        The folder URL the files are fetched from; file ``name`` comes from ``base_url/name``.
    files : dict of str to str
        The manifest: file name -> md5 as 32 lowercase hex digits. The default is the four
        official MNIST files.
    timeout : float
        Seconds to wait for the connection and for each read before giving up.
    progress : callable or None
        Called as ``progress(name, bytes_done, bytes_total)`` after each chunk; ``bytes_total``
        is None when the server does not announce a length.

    Returns
    -------
    list of pathlib.Path
        The verified files, in the order of ``files``.

    Raises
    ------
    DownloadError (a DataError)
        On the first file that cannot be fetched (no network, DNS failure, connection refused,
        timeout, HTTP error), arrives truncated, or has the wrong md5; one line naming the URL
        and the reason. Files verified before the failure stay; nothing else is left behind.
    ValueError
        If the manifest holds a name that is not a plain file name or a digest that is not md5,
        ``base_url`` is not an http(s):// or file:// URL, or ``dest_dir`` is a file or cannot
        be created.
    """
    for name, md5 in files.items():
        if not name or name in (".", "..") or Path(name).name != name or "\\" in name:
            raise ValueError(f"files: expected plain file names, got {name!r}")
        if not isinstance(md5, str) or not _MD5_HEX.fullmatch(md5):
            raise ValueError(f"files: expected an md5 of 32 lowercase hex digits for {name}, got {md5!r}")
    problem = url_problem(base_url)
    if problem:
        raise ValueError(f"base_url: {problem}, got {base_url!r}")
    dest_dir = Path(dest_dir)
    if str(dest_dir).strip() == "" or (dest_dir.exists() and not dest_dir.is_dir()):
        raise ValueError(f"dest_dir: expected a folder, got {str(dest_dir)!r}"
                         f"{' (a file)' if dest_dir.is_file() else ''}")
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"dest_dir: cannot create the folder {dest_dir} "
                         f"({exc.strerror or type(exc).__name__})") from None
    paths = []
    for name, md5 in files.items():
        path = dest_dir / name
        if not (path.is_file() and file_md5(path) == md5):
            url = base_url.rstrip("/") + "/" + urllib.parse.quote(name)
            _fetch_verified(url, path, md5, timeout, progress)
        paths.append(path)
    return paths


def url_problem(url):
    """Why ``url`` cannot be the folder URL to download from (a few words), or None."""
    if not isinstance(url, str):
        return "expected a URL string"
    if any(c.isspace() for c in url):
        return "expected a URL without spaces"
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port                                  # raises ValueError for a bad port
    except ValueError as exc:
        return f"expected a well-formed URL ({exc})"
    if parts.scheme not in ("http", "https", "file"):
        return f"expected an http://, https:// or file:// URL, found scheme {parts.scheme!r}"
    if parts.scheme != "file" and not parts.hostname:
        return "expected a host name after the scheme"
    return None


def file_md5(path):
    """The md5 of a file's bytes as 32 lowercase hex digits."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch_verified(url, path, md5, timeout, progress):
    """Download ``url`` to ``path`` through a temporary file, keeping it only if it verifies."""
    with atomic_file(path) as out:                   # not kept if anything below raises
        found, size = _transfer(url, out, timeout, progress, path.name)
        if found != md5:
            raise DownloadError(f"{url}: checksum mismatch: expected md5 {md5}, found {found} "
                                f"({size} bytes); the file was not kept")


def _transfer(url, out, timeout, progress, name):
    """Copy the body of ``url`` into the open file ``out``; return (md5 hex, byte count)."""
    digest = hashlib.md5(usedforsecurity=False)
    done, total = 0, None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None and length.isdigit() else None
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(name, done, total)
    except urllib.error.HTTPError as exc:
        exc.close()  # an HTTPError holds the open response
        raise DownloadError(f"{url}: HTTP error {exc.code} {exc.reason}") from exc
    except http.client.IncompleteRead as exc:  # newer Pythons raise this where 3.11 returns b""
        raise DownloadError(f"{url}: truncated transfer: expected {total} bytes (Content-Length), "
                            f"received {done + len(exc.partial)}; the file was not kept") from exc
    except urllib.error.URLError as exc:  # no connection was made
        raise DownloadError(f"{url}: cannot connect: {_describe(exc.reason, timeout)} "
                            f"({_OFFLINE_HINT})") from exc
    except (OSError, http.client.HTTPException) as exc:  # no answer, or the connection broke
        hint = f" ({_OFFLINE_HINT})" if isinstance(exc, TimeoutError) and done == 0 else ""
        raise DownloadError(f"{url}: transfer failed after {done} bytes: "
                            f"{_describe(exc, timeout)}{hint}") from exc
    # http.client returns end-of-file quietly when a server closes early, so count the bytes
    if total is not None and done != total:
        raise DownloadError(f"{url}: truncated transfer: expected {total} bytes (Content-Length), "
                            f"received {done}; the file was not kept")
    return digest.hexdigest(), done


def _describe(reason, timeout):
    """A few words for why a connection failed."""
    if isinstance(reason, socket.gaierror):
        return f"host name lookup failed ({reason.strerror or reason})"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, TimeoutError):  # socket.timeout is an alias since Python 3.10
        return f"no answer within {timeout:g} s"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__
