"""The packed file: bit packing, its exact size, its checksum, and a rebuild that computes
identical logits."""
import math
import os

import numpy as np
import pytest
import torch

from models.packed import pack, packed_tensors, same_weights, sizes, unpack
from utils.quant.corrections import RELEASE
from utils.store.packedfile import (
    PREFIX,
    PackedFileError,
    pack_bits,
    quantized_bytes,
    read_packed,
    unpack_bits,
    write_packed,
)

from helpers import mixed_model


@pytest.mark.parametrize("nbits", range(1, 9))
def test_bit_packing_round_trips_at_its_exact_size(nbits):
    rng = np.random.default_rng(nbits)
    values = rng.integers(0, 2 ** nbits, size=1001)  # (numel,) not a multiple of 8
    buf = pack_bits(values, nbits)
    assert len(buf) == math.ceil(1001 * nbits / 8)
    assert np.array_equal(unpack_bits(buf, 1001, nbits), values)


@pytest.mark.parametrize("act, form, continuous", [(4, "bits", False), (4, "bits", True),
                                                   (4, "finetune", False), (2, "bits", False)])
def test_rebuild_gives_identical_logits(tmp_path, act, form, continuous):
    model = mixed_model(act, form, continuous).eval()
    path = str(tmp_path / "model.bsq")
    pack(model, path)
    rebuilt, header = unpack(path)
    rebuilt.eval()
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))
    assert rebuilt.scheme() == model.scheme() and rebuilt.form == "bits"
    _, floats = packed_tensors(model)
    assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in floats.items())
    assert any(k.endswith("downsample.0.weight") for k in floats)
    assert any(k.endswith("alpha") for k in floats) == (act <= 3)


def test_the_release_finetune_form_packs_without_the_bias_its_forward_leaves_out(tmp_path):
    model = mixed_model(form="finetune", corrections=RELEASE).eval()
    path = str(tmp_path / "model.bsq")
    pack(model, path)
    rebuilt, header = unpack(path)
    rebuilt.eval()
    assert "fc.bias" not in [e["name"] for e in header["quantized"]]
    assert rebuilt.scheme()["fc"] == [model.scheme()["fc"][0], 0] and same_weights(model, rebuilt)
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))


def test_file_size_is_the_bits_rounded_to_bytes_plus_the_header(tmp_path):
    model = mixed_model()
    path = str(tmp_path / "model.bsq")
    header = pack(model, path)
    layers = [(numel, nbits) for _, m in model.quant_layers() for numel, nbits in m.sizes()]
    magnitudes = sum(math.ceil(numel * nbits / 8) for numel, nbits in layers)
    signs = sum(math.ceil(numel / 8) for numel, nbits in layers if nbits)
    scales = 4 * len(layers)
    _, floats = packed_tensors(model)
    float_bytes = sum(t.numel() * t.element_size() for t in floats.values())
    with open(path, "rb") as f:
        _, _, header_len, _ = PREFIX.unpack(f.read(PREFIX.size))
    file_bytes = os.path.getsize(path)
    assert file_bytes == PREFIX.size + header_len + magnitudes + signs + scales + float_bytes
    size = sizes(header, file_bytes)
    total, bits = model.size()
    assert (size["TP"], size["TB"], size["paper"]) == (total, bits, bits / 8)
    assert size["quantized"] == magnitudes + signs + scales
    assert size["header"] == PREFIX.size + header_len
    assert size["fp32"] == 4 * total + float_bytes
    assert [quantized_bytes(math.prod(e["shape"]), e["bits"]) for e in header["quantized"]] == \
        [(4, math.ceil(n / 8) if b else 0, math.ceil(n * b / 8)) for n, b in layers]


def test_damaged_files_are_refused(tmp_path):
    path = str(tmp_path / "model.bsq")
    write_packed(path, {}, [("t", torch.tensor([[3, -1], [0, 2]]), 2, torch.tensor(0.5))],
                 {"f": torch.arange(3.0)})
    _, quantized, floats = read_packed(path)
    assert torch.equal(quantized["t"][0], torch.tensor([[3, -1], [0, 2]]))
    assert quantized["t"][1] == 2 and torch.equal(quantized["t"][2], torch.tensor(0.5))
    assert torch.equal(floats["f"], torch.arange(3.0))
    data = open(path, "rb").read()
    flipped = bytearray(data)
    flipped[-1] ^= 0x10  # one bit of the payload
    for name, content, words in (("short.bsq", data[:-3], "CRC-32"),
                                 ("flipped.bsq", bytes(flipped), "CRC-32"),
                                 ("foreign.bsq", b"PK\x03\x04" + data[4:], "magic")):
        with open(tmp_path / name, "wb") as f:
            f.write(content)
        with pytest.raises(PackedFileError, match=words):
            read_packed(str(tmp_path / name))
    with pytest.raises(PackedFileError):
        read_packed(str(tmp_path / "missing.bsq"))
    with pytest.raises(ValueError):
        write_packed(path, {}, [("t", torch.tensor([4]), 2, torch.tensor(1.0))], {})
