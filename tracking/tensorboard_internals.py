"""The one private TensorBoard piece `tracking` touches, kept in one place.

TensorBoard's `EventFileWriter` checksums every record (event) with a pure-Python CRC-32C:
about 45 µs of the writer thread's CPU, holding the GIL, for a step's event of a few metrics,
which at every-step logging competes with the training thread. `fast_checksums` gives one
writer's record writer the same checksum computed by `google-crc32c` (C, about 1 µs): the file
is byte for byte what TensorBoard would write.

If TensorBoard's writer moves on, only this module changes, and
`tests/tracking/test_tensorboard.py` names what broke.
"""

from __future__ import annotations

import struct
from typing import Any

_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C of `data` (TensorFlow's `crc32c::Mask`)."""
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def fast_checksums(writer: Any) -> bool:
    """Write `writer`'s (an `EventFileWriter`) later records with the C checksum; False (the
    writer left as it is) where google-crc32c has no C build here or the writer moved on."""
    try:
        import google_crc32c

        records = writer._async_writer._writer  # the RecordWriter the writer thread calls
        file = records._writer
    except (ImportError, AttributeError):
        return False
    if google_crc32c.implementation != "c":
        return False

    def write(data: bytes) -> None:
        header = struct.pack("<Q", len(data))
        file.write(
            header
            + struct.pack("<I", masked_crc32c(header))
            + data
            + struct.pack("<I", masked_crc32c(data))
        )

    records.write = write
    return True
