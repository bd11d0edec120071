"""Rewrites an F32 GGUF file with other tensor types, from ggml's documented block layouts,
written here independently of sepal: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and F16, quantized as ggml's
reference quantizers do, and IQ4_NL (each value the nearest of 16 fixed levels, at the scale that
puts a block's largest magnitude on the level -127; ggml searches for a better scale, which
changes the codes but not the layout). Also writes the "dequantized twin": the same file with every tensor
turned back to F32 from its quantized blocks, so that a model's scores on both can be compared.
  gguf_requant.py IN.gguf OUT.gguf TWIN.gguf RULE...
A RULE is SUFFIX=TYPE (e.g. attn_q.weight=Q4_0): tensors whose name ends with SUFFIX get TYPE;
the others stay F32. A tensor whose rows are not whole blocks stays F16 (as llama.cpp falls back)."""
import struct
import sys

import numpy as np

TYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8, "IQ4_NL": 20}
IQ4_LEVELS = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.float32)


def read_gguf(path):
    data = open(path, "rb").read()
    off = 0

    def rd(fmt):
        nonlocal off
        v = struct.unpack_from("<" + fmt, data, off)
        off += struct.calcsize("<" + fmt)
        return v

    def rstr():
        nonlocal off
        (n,) = rd("Q")
        s = data[off:off + n]
        off += n
        return s

    magic, version, nt, nkv = rd("4sIQQ")
    assert magic == b"GGUF"
    kv_start = off
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def skip_value(t):
        nonlocal off
        if t == 8:
            rstr()
        elif t == 9:
            (at,) = rd("I")
            (n,) = rd("Q")
            for _ in range(n):
                skip_value(at)
        else:
            off += sizes[t]

    for _ in range(nkv):
        rstr()
        (t,) = rd("I")
        skip_value(t)
    metadata = data[kv_start:off]
    tensors = []
    for _ in range(nt):
        name = rstr().decode()
        (nd,) = rd("I")
        dims = rd("Q" * nd)
        typ, o = rd("IQ")
        tensors.append((name, dims, typ, o))
    base = (off + 31) // 32 * 32
    out = []
    for name, dims, typ, o in tensors:
        assert typ == 0, f"{name} is not F32"
        n = int(np.prod(dims))
        out.append((name, dims, np.frombuffer(data, dtype="<f4", count=n, offset=base + o).copy()))
    return nkv, metadata, out


def f16(x):
    return np.float16(x)


def quantize(values, typ):
    """Blocks of 32: returns (bytes, dequantized float32 values)."""
    blocks = values.reshape(-1, 32).astype(np.float32)
    raw, back = bytearray(), []
    for x in blocks:
        if typ == "Q8_0":
            amax = np.abs(x).max()
            d = amax / 127.0
            q = np.zeros(32, np.int8) if d == 0 else np.round(x / d).astype(np.int8)
            dh = f16(d)
            raw += dh.tobytes() + q.tobytes()
            back.append(q.astype(np.float32) * np.float32(dh))
        elif typ in ("Q4_0", "Q5_0"):
            bits = 4 if typ == "Q4_0" else 5
            top = 8 if bits == 4 else 16
            i = np.argmax(np.abs(x))
            d = x[i] / -top
            inv = 0 if d == 0 else 1.0 / d
            q = np.clip(np.floor(x * inv + top + 0.5), 0, 2 * top - 1).astype(np.int32)
            dh = f16(d)
            low = (q[:16] & 15) | ((q[16:] & 15) << 4)
            if bits == 4:
                raw += dh.tobytes() + low.astype(np.uint8).tobytes()
            else:
                qh = 0
                for j in range(32):
                    qh |= int((q[j] >> 4) & 1) << j
                raw += dh.tobytes() + struct.pack("<I", qh) + low.astype(np.uint8).tobytes()
            back.append((q - top).astype(np.float32) * np.float32(dh))
        elif typ == "IQ4_NL":
            i = np.argmax(np.abs(x))
            dh = f16(x[i] / -127.0)
            d = np.float32(dh)
            scaled = x / d if d != 0 else np.zeros(32, np.float32)
            q = np.argmin(np.abs(scaled[:, None] - IQ4_LEVELS[None, :]), axis=1)
            raw += dh.tobytes() + ((q[:16] & 15) | ((q[16:] & 15) << 4)).astype(np.uint8).tobytes()
            back.append(d * IQ4_LEVELS[q])
        elif typ in ("Q4_1", "Q5_1"):
            levels = 15 if typ == "Q4_1" else 31
            lo, hi = x.min(), x.max()
            d = (hi - lo) / levels
            inv = 0 if d == 0 else 1.0 / d
            q = np.clip(np.floor((x - lo) * inv + 0.5), 0, levels).astype(np.int32)
            dh, mh = f16(d), f16(lo)
            low = (q[:16] & 15) | ((q[16:] & 15) << 4)
            if typ == "Q4_1":
                raw += dh.tobytes() + mh.tobytes() + low.astype(np.uint8).tobytes()
            else:
                qh = 0
                for j in range(32):
                    qh |= int((q[j] >> 4) & 1) << j
                raw += dh.tobytes() + mh.tobytes() + struct.pack("<I", qh) + low.astype(np.uint8).tobytes()
            back.append(q.astype(np.float32) * np.float32(dh) + np.float32(mh))
    return bytes(raw), np.concatenate(back)


def write_gguf(path, nkv, metadata, tensors):
    infos, blob = b"", b""
    for name, dims, typ, raw in tensors:
        infos += struct.pack("<Q", len(name)) + name.encode() + struct.pack("<I", len(dims))
        infos += b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", TYPES[typ], len(blob))
        blob += raw + b"\0" * ((-len(raw)) % 32)
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), nkv) + metadata + infos
    head += b"\0" * ((-len(head)) % 32)
    open(path, "wb").write(head + blob)


def main():
    src, out, twin, *rules = sys.argv[1:]
    rules = [r.split("=") for r in rules]
    nkv, metadata, tensors = read_gguf(src)
    quantized, dequantized = [], []
    for name, dims, values in tensors:
        typ = next((t for suffix, t in rules if name.endswith(suffix)), "F32")
        if typ != "F32" and dims[0] % 32 != 0:
            typ = "F16"
        if typ == "F32":
            raw, back = values.astype("<f4").tobytes(), values
        elif typ == "F16":
            h = values.astype(np.float16)
            raw, back = h.tobytes(), h.astype(np.float32)
        else:
            raw, back = quantize(values, typ)
        quantized.append((name, dims, typ, raw))
        dequantized.append((name, dims, "F32", back.astype("<f4").tobytes()))
        print(f"{name}: {typ}")
    write_gguf(out, nkv, metadata, quantized)
    write_gguf(twin, nkv, metadata, dequantized)


if __name__ == "__main__":
    main()
