"""Safetensors files for the test tools: as raw tensors, {name: (dtype name, shape, bytes)}, or as
numpy arrays (F32, F16, I8 and U8). Written with 8-byte aligned data, as sepal writes them. Also
the float conversions the checkpoint writers share."""
import json
import os
import shutil
import struct

import numpy as np

NUMPY = {"F32": np.float32, "F16": np.float16, "I8": np.int8, "U8": np.uint8}


def read_raw(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    data = raw[8 + n:]
    return {name: (h["dtype"], h["shape"], data[h["data_offsets"][0]:h["data_offsets"][1]]) for name, h in header.items()}


def write_raw(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, (dtype, shape, blob) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def read_arrays(path):
    return {name: np.frombuffer(blob, dtype=NUMPY[dtype]).reshape(shape) for name, (dtype, shape, blob) in read_raw(path).items()}


def write_arrays(path, arrays):
    names = {np.dtype(t): name for name, t in NUMPY.items()}
    write_raw(path, {name: (names[a.dtype], a.shape, np.ascontiguousarray(a).tobytes()) for name, a in arrays.items()})


def to_f32(dtype, shape, blob):
    """A raw F32, BF16 or F16 tensor's values as float32."""
    if dtype == "F32":
        return np.frombuffer(blob, np.float32).reshape(shape)
    if dtype == "BF16":
        return (np.frombuffer(blob, np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(shape)
    if dtype == "F16":
        return np.frombuffer(blob, np.float16).astype(np.float32).reshape(shape)
    raise ValueError(f"dtype {dtype} is not a float type")


def to_bf16(values):
    """float32 values rounded to BF16 (to nearest, ties to even): their bits as uint16."""
    bits = np.ascontiguousarray(values, np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def copy_model_folder(src, *dirs):
    """Writable copies of the model folder `src`, which must hold one .safetensors file, at each of
    `dirs` (copytree would give them the source's modes); that file's name."""
    files = sorted(f for f in os.listdir(src) if f.endswith(".safetensors"))
    if len(files) != 1:
        raise SystemExit(f"{src}: expected one .safetensors file, found {len(files)}")
    for d in dirs:
        shutil.copytree(src, d, copy_function=shutil.copyfile)
        os.chmod(d, 0o755)
    return files[0]
