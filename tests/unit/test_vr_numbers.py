"""decode_numbers keeps one struct.Struct per (VR, byte order, length) instead of building a
format string on each call: the numbers are those struct reads, whatever the cache holds."""

from __future__ import annotations

import random
import struct

import pytest

from airflow_provider_dicom.dicom import vr as vrs


def expected(value: bytes, vr: str, little: bool) -> list:
    code, size = vrs._NUMERIC_FORMAT[vr]
    count = len(value) // size
    numbers = list(struct.unpack(f"{'<' if little else '>'}{count}{code}", value))
    if vr == "AT":
        return [(numbers[i] << 16) | numbers[i + 1] for i in range(0, count - 1, 2)]
    return numbers


@pytest.mark.parametrize("little", [True, False])
def test_numbers_of_every_vr_and_length_decode_as_struct_reads_them(little) -> None:
    rng = random.Random(5)
    for _ in range(2):  # the second pass reads through the cached Structs
        for vr, (_, size) in vrs._NUMERIC_FORMAT.items():
            for count in (0, 1, 2, 3, 7, 1000):
                value = rng.randbytes(count * size)
                # repr: random FL/FD bits may be NaN, which equals nothing, but reads back as "nan"
                assert repr(vrs.decode_numbers(value, vr, little)) == repr(expected(value, vr, little)), (vr, count)


@pytest.mark.parametrize("vr", ["FL", "FD", "SL", "SS", "UL", "US", "AT"])
def test_a_length_that_is_not_whole_values_is_refused_every_time(vr) -> None:
    size = vrs._NUMERIC_FORMAT[vr][1]
    for _ in range(2):  # never cached as a good length
        with pytest.raises(vrs.ValueConversionError, match="not a whole number of"):
            vrs.decode_numbers(b"\x00" * (size + 1), vr, True)


def test_the_cache_stays_bounded() -> None:
    for count in range(vrs._UNPACKERS_MAX + 50):
        assert vrs.decode_numbers(b"\x01\x00" * count, "US", True) == [1] * count
    assert 0 < len(vrs.NUMBER_UNPACKERS[True]["US"]) <= vrs._UNPACKERS_MAX
