"""The packed model file: a mixed-precision model at its true size, as bit-packed integers.

Layout (all integers little-endian)::

    offset  size  field
    0       4     magic b"BSQX"
    4       4     uint32 format version (2)
    8       8     uint64 H, the length of the header
    16      4     uint32 CRC-32 of everything after this field (header and payload)
    20      H     header: UTF-8 JSON (below)
    20+H    ...   payload: the blobs of the header's entries, back to back, no padding

The header is ``{"format": "bsq-packed", "version": 2, "model": {...}, "quantized": [...],
"float": [...]}``. ``model`` is whatever describes the network (arch, depth, classes, act);
this module does not read it. Each blob's ``offset`` is counted from the start of the payload.
A file whose CRC-32 does not match (a flipped bit anywhere) is refused.

``quantized`` entries (``name``, ``shape``, ``bits`` N, ``offset``, ``bytes``) hold one
quantized tensor ``W = scale * code / (2^N - 1)`` with an integer code, ``|code| <= 2^N - 1``::

    scale       4 bytes             float32
    signs       ceil(numel / 8)     1 bit per element, 1 = negative (absent when N = 0)
    magnitudes  ceil(numel * N / 8) |code| as N-bit unsigned integers (absent when N = 0)

Elements are in row-major (C) order; each magnitude is written MSB first, element after element,
and bits fill each byte from its most significant bit (numpy ``packbits``); the last byte of the
signs and of the magnitudes is zero-padded. So a quantized tensor costs exactly its N bits per
element rounded up to bytes, plus one sign bit per element and a 4-byte scale.

``float`` entries (``name``, ``dtype``, ``shape``, ``offset``, ``bytes``) hold a tensor that
stays unquantized (BatchNorm parameters and statistics, shortcut convs, PACT clipping levels) as
its raw little-endian values: ``float32``, ``float64``, ``float16`` or ``int64``.
"""
import json
import math
import os
import struct
import zlib

import numpy as np
import torch

from utils.errors import BSQError
from utils.store.files import atomic_write

MAGIC, VERSION = b"BSQX", 2
PREFIX = struct.Struct("<4sIQI")  # magic, version, header length, CRC-32: the 20-byte prefix
SCALE_BYTES = 4
DTYPES = {"float32": "<f4", "float64": "<f8", "float16": "<f2", "int64": "<i8"}


class PackedFileError(BSQError):
    """A packed model file that cannot be read."""


def pack_bits(values, nbits):
    """Unsigned integers (numel,) below ``2^nbits`` -> ``ceil(numel * nbits / 8)`` bytes."""
    shifts = np.arange(nbits - 1, -1, -1, dtype=np.int64)  # (N,) MSB first
    digits = (values.astype(np.int64)[:, None] >> shifts) & 1  # (numel, N)
    return np.packbits(digits.astype(np.uint8).reshape(-1)).tobytes()


def unpack_bits(buf, numel, nbits):
    """Inverse of ``pack_bits``: bytes -> int64 array (numel,)."""
    digits = np.unpackbits(np.frombuffer(buf, dtype=np.uint8), count=numel * nbits)
    powers = 1 << np.arange(nbits - 1, -1, -1, dtype=np.int64)  # (N,)
    return digits.reshape(numel, nbits).astype(np.int64) @ powers  # (numel,)


def quantized_bytes(numel, nbits):
    """``(scale, signs, magnitudes)`` byte counts of one quantized tensor's blob."""
    if nbits == 0:
        return SCALE_BYTES, 0, 0
    return SCALE_BYTES, math.ceil(numel / 8), math.ceil(numel * nbits / 8)


def pack_quantized(code, nbits, scale):
    """Integer code (any shape, ``|code| <= 2^N - 1``) and 0-dim scale -> the tensor's blob."""
    flat = code.detach().reshape(-1).cpu().long().numpy()  # (numel,)
    if nbits and np.abs(flat).max(initial=0) >= 1 << nbits:
        raise ValueError(f"a code exceeds {nbits} bits")
    blob = np.asarray(scale.detach().cpu().reshape(-1)[:1], dtype="<f4").tobytes()
    if nbits:
        blob += np.packbits((flat < 0).astype(np.uint8)).tobytes()
        blob += pack_bits(np.abs(flat), nbits)
    return blob


def unpack_quantized(blob, shape, nbits):
    """A quantized tensor's blob -> ``(code, scale)``: int64 of ``shape`` and a 0-dim float32."""
    numel = math.prod(shape)
    _, sign_bytes, _ = quantized_bytes(numel, nbits)
    scale = torch.from_numpy(np.frombuffer(blob[:SCALE_BYTES], dtype="<f4").astype(np.float32))
    scale = scale.reshape(())
    if nbits == 0:
        return torch.zeros(shape, dtype=torch.long), scale
    body = blob[SCALE_BYTES:]
    negative = np.unpackbits(np.frombuffer(body[:sign_bytes], dtype=np.uint8), count=numel)
    magnitude = unpack_bits(body[sign_bytes:], numel, nbits)  # (numel,)
    code = np.where(negative.astype(bool), -magnitude, magnitude)
    return torch.from_numpy(code).reshape(shape), scale


def pack_float(tensor):
    """A float (or int64) tensor -> ``(dtype name, raw little-endian bytes)``."""
    name = str(tensor.dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise ValueError(f"tensors of dtype {name} cannot be packed")
    return name, np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype=DTYPES[name]).tobytes()


def unpack_float(blob, dtype, shape):
    """Raw little-endian bytes of a ``dtype`` tensor -> the tensor of ``shape``."""
    values = np.frombuffer(blob, dtype=DTYPES[dtype]).astype(DTYPES[dtype][1:])  # native order
    return torch.from_numpy(values.reshape(shape))


def write_packed(path, model, quantized, floats):
    """Write a packed file; returns its header.

    ``model``: JSON-able description of the network; ``quantized``: ``[(name, code, N, scale)]``;
    ``floats``: ``{name: tensor}``. Written atomically (``utils/store/files.py``).
    """
    entries, blobs, offset = {"quantized": [], "float": []}, [], 0
    for name, code, nbits, scale in quantized:
        blobs.append(pack_quantized(code, nbits, scale))
        entries["quantized"].append({"name": name, "shape": list(code.shape), "bits": nbits,
                                     "offset": offset, "bytes": len(blobs[-1])})
        offset += len(blobs[-1])
    for name, tensor in floats.items():
        dtype, blob = pack_float(tensor)
        blobs.append(blob)
        entries["float"].append({"name": name, "dtype": dtype, "shape": list(tensor.shape),
                                 "offset": offset, "bytes": len(blob)})
        offset += len(blob)
    header = {"format": "bsq-packed", "version": VERSION, "model": model, **entries}
    text = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    body = text + b"".join(blobs)
    atomic_write(path, PREFIX.pack(MAGIC, VERSION, len(text), zlib.crc32(body)) + body)
    return header


def read_packed(path):
    """Read a packed file -> ``(header, quantized, floats)``.

    ``quantized``: ``{name: (code, N, scale)}``; ``floats``: ``{name: tensor}``. Raises
    ``PackedFileError`` (one line) for a missing, foreign, older, truncated or damaged file.
    """
    if not os.path.isfile(path):
        raise PackedFileError(f"packed model {path} does not exist: check the path")
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < PREFIX.size or data[:4] != MAGIC:
        raise PackedFileError(f"{path} is not a packed BSQ model (no {MAGIC.decode()} magic)")
    _, version, length, crc = PREFIX.unpack_from(data)
    if version != VERSION:
        raise PackedFileError(f"{path} is packed format version {version}; this code reads "
                              f"version {VERSION}: export the model again")
    body = data[PREFIX.size:]
    if zlib.crc32(body) != crc:
        raise PackedFileError(f"{path} is damaged (its CRC-32 does not match): export the model "
                              "again")
    try:
        header = json.loads(body[:length])
        payload = body[length:]
        quantized = {}
        for e in header["quantized"]:
            if e["bytes"] != sum(quantized_bytes(math.prod(e["shape"]), e["bits"])):
                raise ValueError(f"{e['name']} has {e['bytes']} bytes, not {e['bits']} bits each")
            code, scale = unpack_quantized(_blob(payload, e), tuple(e["shape"]), e["bits"])
            quantized[e["name"]] = (code, e["bits"], scale)
        floats = {e["name"]: unpack_float(_blob(payload, e), e["dtype"], e["shape"])
                  for e in header["float"]}
    except (ValueError, KeyError, TypeError) as e:
        raise PackedFileError(f"{path} is truncated or corrupt ({e})") from None
    return header, quantized, floats


def _blob(payload, entry):
    if entry["offset"] + entry["bytes"] > len(payload):
        raise ValueError(f"the payload ends before {entry['name']}")
    return payload[entry["offset"]:entry["offset"] + entry["bytes"]]
