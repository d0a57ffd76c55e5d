"""The IDX reader against hand-written files: every type code, gzip detection, and a clear
DataError for every kind of broken file."""
import gzip

import numpy as np
import pytest

from dcn_ref.data import DataError, read_idx

from idx_writer import idx_bytes, write

# type code, dims, payload bytes (big-endian, written out by hand), the values they hold
HAND_WRITTEN = [
    (0x08, (3,), b"\x00\x7f\xff", np.array([0, 127, 255], np.uint8)),
    (0x09, (3,), b"\x80\xff\x05", np.array([-128, -1, 5], np.int8)),
    (0x0B, (2,), b"\xff\xfe\x01\x2c", np.array([-2, 300], np.int16)),
    (0x0C, (2,), b"\xff\xff\xff\xff\x00\x01\x00\x00", np.array([-1, 65536], np.int32)),
    (0x0D, (2,), b"\x3f\xc0\x00\x00\xc0\x20\x00\x00", np.array([1.5, -2.5], np.float32)),
    (0x0E, (1,), b"\xbf\xd0\x00\x00\x00\x00\x00\x00", np.array([-0.25], np.float64)),
]


@pytest.mark.parametrize("code, dims, payload, expected", HAND_WRITTEN,
                         ids=[e[3].dtype.name for e in HAND_WRITTEN])
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_every_type_code_reads_the_hand_written_values(tmp_path, code, dims, payload, expected, compress):
    path = write(tmp_path / "f", idx_bytes(code, dims, payload), compress)
    got = read_idx(path)
    assert got.dtype == expected.dtype and got.dtype.isnative, got.dtype
    np.testing.assert_array_equal(got, expected)


def test_dimensions_are_c_order_first_dimension_first(tmp_path):
    path = write(tmp_path / "f", idx_bytes(0x08, (2, 3, 4), bytes(range(24))))
    got = read_idx(path)
    assert got.shape == (2, 3, 4)
    assert got[1, 2, 3] == 23 and got[0, 1, 0] == 4 and got[1, 0, 0] == 12


def test_gzip_is_recognised_by_content_not_by_name(tmp_path):
    content = idx_bytes(0x08, (2,), b"\x07\x09")
    for path in (write(tmp_path / "looks-raw.idx", content, compress=True),
                 write(tmp_path / "looks-compressed.gz", content, compress=False)):
        np.testing.assert_array_equal(read_idx(path), [7, 9])


def test_result_is_a_writable_native_array(tmp_path):
    path = write(tmp_path / "f", idx_bytes(0x0B, (2,), b"\x00\x01\x00\x02"))
    got = read_idx(path)
    got[0] = 5  # must not raise
    assert got.flags.writeable and got.dtype.isnative


@pytest.mark.parametrize("content, fragments", [
    (b"", ["at least 4 bytes", "found 0 bytes"]),
    (b"\x00\x00\x08", ["at least 4 bytes", "found 3 bytes"]),
    (b"\x01\x00\x08\x01" + b"\x00\x00\x00\x01\x05", ["two zero bytes", "found 01 00 08 01"]),
    (idx_bytes(0x0A, (1,), b"\x05"), ["unknown IDX type code 0x0a", "0x08 (uint8)", "0x0e (float64)"]),
    (b"\x00\x00\x08\x00", ["at least 1 dimension", "found 0"]),
    (b"\x00\x00\x08\x03" + b"\x00\x00\x00\x02" * 2, ["truncated header", "expected 16 bytes", "found 12"]),
    (idx_bytes(0x08, (2, 3), bytes(5)), ["truncated", "(2, 3) of uint8", "need 6 data bytes", "found 5"]),
    (idx_bytes(0x08, (2, 3), bytes(7)), ["oversized", "need 6 data bytes", "found 7"]),
    (idx_bytes(0x0C, (2,), bytes(6)), ["truncated", "(2,) of int32", "need 8 data bytes", "found 6"]),
    # a corrupt header claiming ~7.9e28 bytes: reported, nothing allocated
    (idx_bytes(0x08, (2**32 - 1,) * 3, bytes(10)), ["truncated", "found 10"]),
], ids=["empty", "short-magic", "bad-magic", "bad-type", "no-dims", "short-dims", "truncated",
        "oversized", "truncated-int32", "huge-dims"])
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_broken_files_raise_a_one_line_data_error_naming_file_expected_and_found(tmp_path, content,
                                                                                 fragments, compress):
    path = write(tmp_path / "broken-idx", content, compress)
    with pytest.raises(DataError) as info:
        read_idx(path)
    message = str(info.value)
    assert message.startswith(str(path) + ": ") and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def _gzip_broken(how):
    good = gzip.compress(idx_bytes(0x08, (4000,), bytes(range(250)) * 16))
    if how == "cut short":
        return good[:len(good) // 2]
    if how == "flipped bytes":  # inside the deflate data, past the 10-byte gzip header
        middle = len(good) // 2
        return good[:middle] + bytes(b ^ 0xFF for b in good[middle:middle + 8]) + good[middle + 8:]
    if how == "bad crc":  # the trailer is CRC32 then size, 4 bytes each
        return good[:-8] + bytes(b ^ 0xFF for b in good[-8:-4]) + good[-4:]
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["cut short", "flipped bytes", "bad crc"])
def test_a_corrupt_gzip_stream_raises_data_error(tmp_path, how):
    path = write(tmp_path / "f.gz", _gzip_broken(how))
    with pytest.raises(DataError, match="corrupt gzip stream") as info:
        read_idx(path)
    assert str(info.value).startswith(str(path) + ": ")


def test_a_missing_file_raises_data_error_naming_it(tmp_path):
    with pytest.raises(DataError, match="cannot read the file") as info:
        read_idx(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value)


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


def test_a_gzip_bomb_is_refused_after_one_byte_past_the_declared_size(tmp_path):
    # a valid header declaring 6 bytes, followed by 50 MB of zeros: about 50 KB compressed
    import tracemalloc
    bomb = gzip.compress(idx_bytes(0x08, (2, 3), bytes(50 * 2 ** 20)), compresslevel=9)
    assert len(bomb) < 2 ** 20
    path = write(tmp_path / "bomb.gz", bomb)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"oversized: dims \(2, 3\) of uint8 need 6 data bytes .* found 7 or more"):
            read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2 ** 20, f"peak {peak / 2 ** 20:.1f} MiB: the stream was decompressed past its size"


def test_a_header_with_255_dimensions_gives_a_short_message(tmp_path):
    path = write(tmp_path / "f", idx_bytes(0x08, (2 ** 32 - 1,) * 255, bytes(10)))
    with pytest.raises(DataError, match=r"truncated: dims \(4294967295, 4294967295, 4294967295, "
                                        r"4294967295, \.\.\. 255 dims\) of uint8 need more than "
                                        r"1e308 data bytes .* found 10$") as info:
        read_idx(path)
    assert len(str(info.value)) < 300, str(info.value)
