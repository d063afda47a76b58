#!/usr/bin/env python3
"""An independent safetensors reader and writer (Python standard library only), used to check
meap's files against the format description rather than against meap's own reader.

    safetensors_interop.py <path to the safetensors_interop program>

1. The program writes a file with meap's writer; this script parses it from the specification
   (length, header, padding, alignment, tiling, values) and compares every tensor.
2. This script writes a file its own way (metadata last, names in reverse order, data not in
   name order); the program reads it with meap's reader and checks the same tensors.
Exit status 0 when both directions agree.
"""
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
         "U64": 8, "U32": 4, "U16": 2, "U8": 1}
FORMATS = {"F64": "d", "F32": "f", "F16": "e", "I64": "q", "I32": "i", "U8": "B"}


def bf16(value):
    """bfloat16 bits of a value exactly representable in bfloat16."""
    return struct.unpack("<I", struct.pack("<f", value))[0] >> 16


# name -> (dtype, shape, values); values of BF16 tensors are their bit patterns.
EXPECTED = {
    "f32": ("F32", [2, 3], [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5]),
    "f64": ("F64", [3], [0.1, -2.0, 1e300]),
    "f16": ("F16", [2], [1.5, -0.25]),
    "bf16": ("BF16", [2], [bf16(1.0), bf16(-3.0)]),
    "i64": ("I64", [2], [-(2 ** 63), 2 ** 63 - 1]),
    "u8": ("U8", [3], [0, 128, 255]),
    "scalar": ("F32", [], [7.0]),
    "empty": ("I32", [0, 2], []),
}


def encode(dtype, values):
    if dtype == "BF16":
        return b"".join(struct.pack("<H", v) for v in values)
    return struct.pack("<%d%s" % (len(values), FORMATS[dtype]), *values)


def decode(dtype, data):
    count = len(data) // SIZES[dtype]
    if dtype == "BF16":
        return list(struct.unpack("<%dH" % count, data))
    return list(struct.unpack("<%d%s" % (count, FORMATS[dtype]), data))


def fail(message):
    print("FAIL: " + message, file=sys.stderr)
    sys.exit(1)


def read_and_check(path):
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        fail("file shorter than 8 bytes")
    (n,) = struct.unpack("<Q", blob[:8])
    if n % 8 != 0:
        fail("header length %d is not a multiple of 8" % n)
    raw = blob[8:8 + n]
    text = raw.decode("utf-8")
    stripped = text.rstrip(" ")  # the padding is spaces only
    if not (stripped.startswith("{") and stripped.endswith("}")):
        fail("header is not a JSON object padded with spaces: %r" % text)
    header = json.loads(text)
    buffer = blob[8 + n:]
    if header.pop("__metadata__", None) != {"format": "pt", "producer": "meap"}:
        fail("metadata differs")
    if set(header) != set(EXPECTED):
        fail("names differ: %s" % sorted(header))
    spans = sorted((info["data_offsets"][0], info["data_offsets"][1], name) for name, info in header.items())
    covered = 0
    for begin, end, name in spans:
        if begin != covered:
            fail("%s starts at %d, expected %d" % (name, begin, covered))
        covered = end
    if covered != len(buffer):
        fail("tensors cover %d of %d buffer bytes" % (covered, len(buffer)))
    for name, (dtype, shape, values) in EXPECTED.items():
        info = header[name]
        if info["dtype"] != dtype or info["shape"] != shape:
            fail("%s: dtype/shape %s %s" % (name, info["dtype"], info["shape"]))
        begin, end = info["data_offsets"]
        if (8 + n + begin) % SIZES[dtype] != 0:
            fail("%s is not aligned in the file" % name)
        if end - begin != math.prod(shape) * SIZES[dtype]:
            fail("%s: size mismatch" % name)
        got = decode(dtype, buffer[begin:end])
        if got != values:
            fail("%s: values %s, expected %s" % (name, got, values))


def write_own(path):
    # Data in reverse name order, header keys in name order, metadata last, padded to 8.
    names = sorted(EXPECTED, reverse=True)
    data = b""
    offsets = {}
    for name in names:
        dtype, shape, values = EXPECTED[name]
        chunk = encode(dtype, values)
        offsets[name] = [len(data), len(data) + len(chunk)]
        data += chunk
    header = {name: {"dtype": EXPECTED[name][0], "shape": EXPECTED[name][1], "data_offsets": offsets[name]}
              for name in sorted(EXPECTED)}
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(", ", ": ")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def main():
    if len(sys.argv) != 2:
        fail("usage: safetensors_interop.py <safetensors_interop program>")
    program = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix="meap_interop_") as directory:
        ours = os.path.join(directory, "meap.safetensors")
        subprocess.run([program, "write", ours], check=True)
        read_and_check(ours)
        if os.listdir(directory) != ["meap.safetensors"]:
            fail("the atomic write left %s" % os.listdir(directory))
        theirs = os.path.join(directory, "python.safetensors")
        write_own(theirs)
        result = subprocess.run([program, "check", theirs])
        if result.returncode != 0:
            fail("meap rejected or misread the file written by Python")
    print("safetensors interop: meap -> python and python -> meap agree")


if __name__ == "__main__":
    main()
