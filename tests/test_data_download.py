"""The downloader against a local HTTP server on 127.0.0.1 (no test touches the internet): good,
corrupt, truncated, missing and slow files, an unreachable port, a failed DNS lookup, Ctrl-C.
After every failure the folder must hold exactly the verified files and no temporary file."""
import collections
import gzip
import hashlib
import http.server
import os
import re
import socket
import threading

import numpy as np
import pytest

from dcn_ref.data import DataError, DownloadError, download_mnist, load_mnist

from idx_writer import idx_of

GOOD = bytes(range(256)) * 1000  # 256,000 bytes: several chunks
GOOD_MD5 = hashlib.md5(GOOD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    files = {}                          # name -> bytes served with status 200
    hits = collections.Counter()        # name -> number of requests
    release = threading.Event()         # set when the test is over

    def do_GET(self):
        name = self.path.lstrip("/")
        self.hits[name] += 1
        if name == "truncated.bin":     # announces all of GOOD, sends half, hangs up
            self._headers(len(GOOD))
            self.wfile.write(GOOD[:len(GOOD) // 2])
            self.close_connection = True
        elif name == "slow.bin":        # never answers; let go when the test ends
            self.release.wait(10)
        elif name in self.files:
            self._headers(len(self.files[name]))
            self.wfile.write(self.files[name])
        else:
            self.send_error(404)

    def _headers(self, length):
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    """A server on a free port of 127.0.0.1; yields its base URL. Proxies are bypassed."""
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    _Handler.files = {"good.bin": GOOD, "corrupt.bin": GOOD[:-1] + b"X"}
    _Handler.hits = collections.Counter()
    _Handler.release = threading.Event()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    _Handler.release.set()
    httpd.shutdown()
    httpd.server_close()


def _listing(folder):
    return sorted(os.listdir(folder))


def test_a_good_file_is_downloaded_verified_and_reported(server, tmp_path):
    calls = []
    paths = download_mnist(tmp_path, base_url=server, files={"good.bin": GOOD_MD5},
                           progress=lambda *args: calls.append(args))
    assert paths == [tmp_path / "good.bin"]
    assert (tmp_path / "good.bin").read_bytes() == GOOD
    assert _listing(tmp_path) == ["good.bin"]
    assert calls[-1] == ("good.bin", len(GOOD), len(GOOD)) and len(calls) > 1


@pytest.mark.parametrize("bad, fragments", [
    ("corrupt.bin", ["checksum mismatch", f"expected md5 {GOOD_MD5}", "not kept"]),
    ("truncated.bin", ["truncated transfer", f"expected {len(GOOD)} bytes", f"received {len(GOOD) // 2}"]),
    ("missing.bin", ["HTTP error 404"]),
])
def test_a_bad_file_fails_in_one_line_and_leaves_only_the_good_files(server, tmp_path, bad, fragments):
    with pytest.raises(DownloadError) as info:
        download_mnist(tmp_path, base_url=server, files={"good.bin": GOOD_MD5, bad: GOOD_MD5})
    message = str(info.value)
    assert message.startswith(f"{server}{bad}: ") and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert _listing(tmp_path) == ["good.bin"]


def test_no_answer_within_the_timeout_fails_with_the_offline_hint(server, tmp_path):
    with pytest.raises(DownloadError, match=r"no answer within 0\.2 s \(no network\?"):
        download_mnist(tmp_path, base_url=server, files={"slow.bin": GOOD_MD5}, timeout=0.2)
    assert _listing(tmp_path) == []


def test_an_unreachable_address_fails_with_connection_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("no_proxy", "*")
    with socket.socket() as s:  # a port that was free a moment ago and now has no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match=r"cannot connect: connection refused \(no network\?"):
        download_mnist(tmp_path / "d", base_url=f"http://127.0.0.1:{port}/", files={"good.bin": GOOD_MD5})
    assert _listing(tmp_path / "d") == []


def test_a_failed_name_lookup_fails_with_a_dns_message(monkeypatch, tmp_path):
    monkeypatch.setenv("no_proxy", "*")

    def no_dns(*args, **kwargs):  # what getaddrinfo raises offline; no packet is sent
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(DownloadError, match=r"cannot connect: host name lookup failed"):
        download_mnist(tmp_path, base_url="http://mnist.invalid/", files={"good.bin": GOOD_MD5})
    assert _listing(tmp_path) == []


def test_ctrl_c_during_a_transfer_leaves_no_partial_file(server, tmp_path):
    seen = []

    def interrupt(name, done, total):
        seen.append(_listing(tmp_path))  # the temporary file exists now
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        download_mnist(tmp_path, base_url=server, files={"good.bin": GOOD_MD5}, progress=interrupt)
    assert len(seen[0]) == 1 and seen[0][0].endswith(".part"), seen
    assert _listing(tmp_path) == []


def test_a_present_good_file_is_not_fetched_again_and_a_bad_one_is_replaced(server, tmp_path):
    (tmp_path / "good.bin").write_bytes(GOOD)
    download_mnist(tmp_path, base_url=server, files={"good.bin": GOOD_MD5})
    assert _Handler.hits["good.bin"] == 0
    (tmp_path / "good.bin").write_bytes(b"stale")
    download_mnist(tmp_path, base_url=server, files={"good.bin": GOOD_MD5})
    assert _Handler.hits["good.bin"] == 1
    assert (tmp_path / "good.bin").read_bytes() == GOOD and _listing(tmp_path) == ["good.bin"]


def test_downloaded_standard_files_load_with_load_mnist(server, tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), np.array([0, 9, 4], np.uint8),
              rng.integers(0, 256, (2, 28, 28), dtype=np.uint8), np.array([7, 2], np.uint8)]
    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    blobs = {name: gzip.compress(idx_of(a)) for name, a in zip(names, arrays)}
    _Handler.files.update(blobs)
    download_mnist(tmp_path, base_url=server,
                   files={name: hashlib.md5(blob).hexdigest() for name, blob in blobs.items()})
    for got, expected in zip(load_mnist(tmp_path), arrays):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("files, fragment", [
    ({"../escape.bin": GOOD_MD5}, "expected plain file names, got '../escape.bin'"),
    ({"sub/x.bin": GOOD_MD5}, "expected plain file names"),
    ({"good.bin": hashlib.sha256(GOOD).hexdigest()}, "expected an md5 of 32 lowercase hex digits for good.bin"),
])
def test_a_bad_manifest_is_refused_before_anything_is_written(tmp_path, files, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        download_mnist(tmp_path / "d", base_url="http://127.0.0.1:9/", files=files)
    assert not (tmp_path / "d").exists()


def test_download_error_is_a_data_error():
    assert issubclass(DownloadError, DataError)


def test_the_command_line_downloads_the_manifest_and_says_how_to_use_it(server, tmp_path, monkeypatch,
                                                                         capsys):
    from dcn_ref import cli
    from dcn_ref.data import download
    monkeypatch.setattr(download, "MNIST_MD5", {"good.bin": GOOD_MD5})
    status = cli.main(["download-mnist", str(tmp_path / "mnist"), "--url", server])
    out = capsys.readouterr().out
    assert status == 0
    assert (tmp_path / "mnist" / "good.bin").read_bytes() == GOOD
    assert f"--data {tmp_path / 'mnist'}" in out


def test_the_command_line_fails_with_status_1_and_one_line_when_offline(server, tmp_path, monkeypatch,
                                                                       capsys):
    from dcn_ref import cli
    from dcn_ref.data import download
    monkeypatch.setattr(download, "MNIST_MD5", {"good.bin": GOOD_MD5, "missing.bin": GOOD_MD5})
    status = cli.main(["download-mnist", str(tmp_path), "--url", server])
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith(f"dcn-ref download-mnist: {server}missing.bin: HTTP error 404")
    assert err.count("\n") == 1
    assert _listing(tmp_path) == ["good.bin"]
    assert cli.main(["download-mnist", str(tmp_path), "--timeout", "0"]) == 2
