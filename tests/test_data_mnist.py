"""The MNIST loader: the shipped files against their published checksums and well-known facts
about MNIST, folders of standard files written by hand, and a DataError for every problem."""
import hashlib
import re

import numpy as np
import pytest

from dcn_ref.data import MNIST_MD5, DataError, load_mnist
from dcn_ref.data.mnist import SHIPPED_DIR, SHIPPED_FILES, STANDARD_FILES

from idx_writer import idx_bytes, idx_of, write


def _readme_sha256_table():
    """file name -> sha256 from the table in dcn_ref/data/mnist_files/README.md."""
    readme = (SHIPPED_DIR / "README.md").read_text()
    return dict(re.findall(r"^\| (\S+) \|.*\| ([0-9a-f]{64}) \|$", readme, flags=re.M))


def test_shipped_files_match_the_sha256_table_of_their_readme():
    table = _readme_sha256_table()
    assert sorted(table) == sorted(SHIPPED_FILES)
    for name, sha256 in table.items():
        assert hashlib.sha256((SHIPPED_DIR / name).read_bytes()).hexdigest() == sha256, name


def test_shipped_test_set_is_the_official_one_by_its_published_md5():
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert hashlib.md5((SHIPPED_DIR / name).read_bytes()).hexdigest() == MNIST_MD5[name], name


def test_default_is_the_5k_subset_and_the_official_test_set():
    train_images, train_labels, test_images, test_labels = load_mnist()
    assert (train_images.shape, train_images.dtype) == ((5000, 28, 28), np.uint8)
    assert (train_labels.shape, train_labels.dtype) == ((5000,), np.uint8)
    assert (test_images.shape, test_images.dtype) == ((10000, 28, 28), np.uint8)
    assert (test_labels.shape, test_labels.dtype) == ((10000,), np.uint8)
    assert np.array_equal(np.bincount(train_labels), [500] * 10) and np.all(np.diff(train_labels) >= 0)
    # well-known facts about the MNIST test set: its first digits and its class counts
    assert test_labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert train_images.max() == test_images.max() == 255 and train_images.min() == 0


def test_the_5k_subset_shares_no_image_with_the_test_set():
    data = load_mnist()
    train = {image.tobytes() for image in data.train_images}
    assert len(train) == 5000
    assert not train & {image.tobytes() for image in data.test_images}


def _folder(path, n_train=3, n_test=2, compress=(False, True, True, False), seed=0):
    """A folder with the four standard files of random digits; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = [rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              rng.integers(0, 10, n_train, dtype=np.uint8),
              rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              rng.integers(0, 10, n_test, dtype=np.uint8)]
    path.mkdir(exist_ok=True)
    for name, array, gz in zip(STANDARD_FILES, arrays, compress):
        write(path / (name + ".gz" if gz else name), idx_of(array), compress=gz)
    return arrays


def test_a_folder_of_standard_files_raw_or_gzip_loads_what_was_written(tmp_path):
    written = _folder(tmp_path / "mnist")
    loaded = load_mnist(tmp_path / "mnist")
    for got, expected in zip(loaded, written):
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, expected)


def test_the_raw_file_is_used_when_both_raw_and_gzip_exist(tmp_path):
    written = _folder(tmp_path, compress=(False,) * 4)
    write(tmp_path / "t10k-labels-idx1-ubyte.gz", idx_of(np.array([9, 9], np.uint8)), compress=True)
    np.testing.assert_array_equal(load_mnist(tmp_path).test_labels, written[3])


def _broken(folder, name, content):
    """The message of load_mnist(folder) after ``name`` (a standard file) is replaced by ``content``."""
    _folder(folder, compress=(False,) * 4)
    write(folder / name, content)
    with pytest.raises(DataError) as info:
        load_mnist(folder)
    message = str(info.value)
    assert message.startswith(str(folder / name) + ": ") and "\n" not in message, message
    return message


@pytest.mark.parametrize("name, content, fragments", [
    ("train-labels-idx1-ubyte", idx_of(np.array([1, 2], np.uint8)), ["expected 3 labels", "found 2"]),
    ("t10k-images-idx3-ubyte", idx_of(np.zeros((2, 32, 32), np.uint8)), ["(N, 28, 28)", "(2, 32, 32)"]),
    ("t10k-images-idx3-ubyte", idx_of(np.zeros((2, 28, 28), np.float32)), ["dtype uint8", "dtype float32"]),
    ("t10k-labels-idx1-ubyte", idx_of(np.array([1, 10], np.uint8)), ["labels in 0..9", "found 10 at index 1"]),
    ("train-labels-idx1-ubyte", idx_of(np.zeros((3, 1), np.uint8)), ["shape (N,)", "found shape (3, 1)"]),
    ("train-images-idx3-ubyte", idx_bytes(0x08, (3, 28, 28), bytes(100)), ["truncated"]),
], ids=["count-mismatch", "image-size", "image-dtype", "label-range", "label-shape", "truncated"])
def test_unusable_files_raise_a_data_error_naming_the_file_and_problem(tmp_path, name, content, fragments):
    message = _broken(tmp_path, name, content)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_a_missing_file_is_named_with_both_accepted_spellings(tmp_path):
    _folder(tmp_path, compress=(False,) * 4)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"missing t10k-labels-idx1-ubyte \(or t10k-labels-idx1-ubyte\.gz\)"):
        load_mnist(tmp_path)


def test_a_folder_that_is_not_there_or_is_a_file_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="expected a folder holding the MNIST files, found nothing"):
        load_mnist(tmp_path / "absent")
    write(tmp_path / "a-file", b"")
    with pytest.raises(DataError, match="found a file"):
        load_mnist(tmp_path / "a-file")
