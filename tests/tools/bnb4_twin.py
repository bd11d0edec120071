"""Writes a model folder's bitsandbytes 4-bit version (NF4 or FP4, as transformers saves
load_in_4bit models) and its dequantized twin, independently of sepal. Every 2-D weight of the
blocks is quantized in blocks of BLOCKSIZE values (each value's nearest code of value / the
block's absmax), two codes a byte, the first in the high nibble; with `nested`, the absmax values
less their mean are quantized again, 8 bits in blocks of 256 (double quantization). The twin holds
code value * scale in float32, rounded to the quant_state's dtype (DTYPE: bfloat16 or float16),
as F32, with no quantization_config.
    python3 bnb4_twin.py MODEL_DIR OUT_DIR TWIN_DIR nf4|fp4 BLOCKSIZE DTYPE [nested]
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import copy_model_folder, read_raw, to_bf16, to_f32, write_raw  # noqa: E402

# QLoRA's NormalFloat levels, and bitsandbytes' FP4 (sign, 2 exponent bits, 1 mantissa bit)
# normalised to [-1, 1]: the value of each 4-bit code.
NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
       -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
       0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0]
FP4 = [v / 12 for v in [0, 0.0625, 8, 12, 4, 6, 2, 3, -0.0, -0.0625, -8, -12, -4, -6, -2, -3]]
NESTED_MAP = np.linspace(-1, 1, 256).astype(np.float32)  # any 256 levels: the file carries them


def nearest(values, levels):
    return np.abs(values[:, None] - levels[None, :]).argmin(axis=1)


def rounded(values, dtype):
    if dtype == "bfloat16":
        return (to_bf16(values).astype(np.uint32) << 16).view(np.float32)
    return values.astype(np.float16).astype(np.float32)


def main():
    src, out_dir, twin_dir, kind, blocksize, dtype = sys.argv[1:7]
    blocksize, nested = int(blocksize), "nested" in sys.argv[7:]
    levels = np.array(NF4 if kind == "nf4" else FP4, np.float32)
    weights = copy_model_folder(src, out_dir, twin_dir)
    packed, twin = {}, {}
    for name, (dt, shape, blob) in read_raw(f"{src}/{weights}").items():
        if len(shape) != 2 or ".layers." not in name or not name.endswith(".weight"):
            packed[name] = twin[name] = (dt, shape, blob)
            continue
        flat = to_f32(dt, shape, blob).reshape(-1)
        n = flat.size
        blocks = -(-n // blocksize)
        padded = np.concatenate([flat, np.zeros(blocks * blocksize - n, np.float32)]).reshape(blocks, blocksize)
        absmax = np.abs(padded).max(axis=1).astype(np.float32)
        absmax[absmax == 0] = 1
        codes = nearest((padded / absmax[:, None]).reshape(-1), levels)[:n]
        state = {"quant_type": kind, "blocksize": blocksize, "dtype": dtype, "shape": list(shape)}
        if nested:
            offset = np.float32(absmax.mean())
            centred = absmax - offset
            groups = -(-blocks // 256)
            padded2 = np.concatenate([centred, np.zeros(groups * 256 - blocks, np.float32)]).reshape(groups, 256)
            absmax2 = np.abs(padded2).max(axis=1).astype(np.float32)
            absmax2[absmax2 == 0] = 1
            codes2 = nearest((padded2 / absmax2[:, None]).reshape(-1), NESTED_MAP)[:blocks].astype(np.uint8)
            scales = (NESTED_MAP[codes2] * absmax2[np.arange(blocks) // 256] + offset).astype(np.float32)
            packed[name + ".absmax"] = ("U8", (blocks,), codes2.tobytes())
            packed[name + ".nested_absmax"] = ("F32", (groups,), absmax2.tobytes())
            packed[name + ".nested_quant_map"] = ("F32", (256,), NESTED_MAP.tobytes())
            state.update(nested_blocksize=256, nested_dtype="float32", nested_offset=float(offset))
        else:
            scales = absmax
            packed[name + ".absmax"] = ("F32", (blocks,), absmax.tobytes())
        pairs = np.concatenate([codes, np.zeros(n % 2, np.int64)]).reshape(-1, 2)
        packed[name] = ("U8", (pairs.shape[0], 1), ((pairs[:, 0] << 4) | pairs[:, 1]).astype(np.uint8).tobytes())
        packed[name + ".quant_map"] = ("F32", (16,), levels.tobytes())
        text = json.dumps(state).encode()
        packed[name + ".quant_state.bitsandbytes__" + kind] = ("U8", (len(text),), text)
        values = rounded((levels[codes] * scales[np.arange(n) // blocksize]).astype(np.float32), dtype)
        twin[name] = ("F32", shape, values.reshape(shape).tobytes())
    write_raw(f"{out_dir}/{weights}", packed)
    write_raw(f"{twin_dir}/{weights}", twin)
    config = json.load(open(f"{src}/config.json"))
    config.pop("quantization_config", None)
    json.dump(config, open(f"{twin_dir}/config.json", "w"), indent=1)
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True, "load_in_8bit": False,
                                     "bnb_4bit_quant_type": kind, "bnb_4bit_use_double_quant": nested,
                                     "bnb_4bit_compute_dtype": dtype, "bnb_4bit_quant_storage": "uint8"}
    json.dump(config, open(f"{out_dir}/config.json", "w"), indent=1)


main()
