"""Writes variants of an F32 GGUF file (llama architecture), independently of sepal:
  gguf_variant.py IN.gguf OUT.gguf rope-llama3 FACTOR LOW HIGH ORIGINAL
      adds rope_freqs.weight as llama.cpp's converter computes it for Llama 3.1's RoPE scaling
      (convert_hf_to_gguf.py: per pair of head dimensions, 1 for short wavelengths, FACTOR for
      long ones, 1 / ((1 - smooth) / FACTOR + smooth) between; float32 as there);
  gguf_variant.py IN.gguf OUT.gguf rope-factors V1,V2,...   adds rope_freqs.weight = the values;
  gguf_variant.py IN.gguf OUT.gguf tensor NAME N            adds an F32 tensor NAME of N zeros;
  gguf_variant.py IN.gguf OUT.gguf u32 KEY VALUE            adds a UINT32 metadata entry."""
import math
import struct
import sys

import numpy as np

from gguf_requant import read_gguf, write_gguf


def metadata_u32(data, key):
    """The value of a UINT32 (type 4) metadata entry, read from the raw metadata."""
    off = 0
    while off < len(data):
        (n,) = struct.unpack_from("<Q", data, off)
        name = data[off + 8:off + 8 + n].decode()
        off += 8 + n
        (t,) = struct.unpack_from("<I", data, off)
        off += 4
        if name == key:
            assert t == 4, f"{key} is not a UINT32"
            return struct.unpack_from("<I", data, off)[0]
        sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
        if t == 8:
            (m,) = struct.unpack_from("<Q", data, off)
            off += 8 + m
        elif t == 9:
            (at,) = struct.unpack_from("<I", data, off)
            (m,) = struct.unpack_from("<Q", data, off + 4)
            off += 12
            for _ in range(m):
                if at == 8:
                    (k,) = struct.unpack_from("<Q", data, off)
                    off += 8 + k
                else:
                    off += sizes[at]
        else:
            off += sizes[t]
    raise KeyError(key)


def metadata_f32(data, key):
    off = data.find(struct.pack("<Q", len(key)) + key.encode())
    if off < 0:
        return None
    off += 8 + len(key)
    (t,) = struct.unpack_from("<I", data, off)
    assert t == 6, f"{key} is not a FLOAT32"
    return struct.unpack_from("<f", data, off + 4)[0]


def main():
    src, out, kind, *args = sys.argv[1:]
    nkv, metadata, tensors = read_gguf(src)
    rows = [(name, dims, "F32", values.astype("<f4").tobytes()) for name, dims, values in tensors]
    if kind == "rope-llama3":
        factor, low, high, original = map(float, args)
        heads = metadata_u32(metadata, "llama.attention.head_count")
        dim = metadata_u32(metadata, "llama.embedding_length") // heads
        base = metadata_f32(metadata, "llama.rope.freq_base") or 10000.0
        freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
        low_wavelen, high_wavelen = original / low, original / high
        factors = []
        for freq in freqs:
            wavelen = 2 * math.pi / freq
            if wavelen < high_wavelen:
                factors.append(1.0)
            elif wavelen > low_wavelen:
                factors.append(factor)
            else:
                smooth = (original / wavelen - low) / (high - low)
                factors.append(1 / ((1 - smooth) / factor + smooth))
        values = np.array(factors, dtype="<f4")
        print("rope_freqs:", " ".join(f"{v:.6g}" for v in values))
        rows.append(("rope_freqs.weight", (len(values),), "F32", values.tobytes()))
    elif kind == "rope-factors":
        values = np.array([float(v) for v in args[0].split(",")], dtype="<f4")
        rows.append(("rope_freqs.weight", (len(values),), "F32", values.tobytes()))
    elif kind == "tensor":
        rows.append((args[0], (int(args[1]),), "F32", np.zeros(int(args[1]), dtype="<f4").tobytes()))
    elif kind == "u32":
        key = args[0].encode()
        metadata += struct.pack("<Q", len(key)) + key + struct.pack("<II", 4, int(args[1]))
        nkv += 1
    else:
        sys.exit(f"unknown variant {kind}")
    write_gguf(out, nkv, metadata, rows)


main()
