#!/usr/bin/env python3
"""GPT-OSS folders as its released checkpoints hold the experts: MXFP4 (OCP microscaling FP4).

  mxfp4_twin.py SRC MXFP4_DST TWIN_DST

SRC is a GPT-OSS folder with float expert stacks (transformers' layout: gate_up_proj [experts,
hidden, 2 * inter], down_proj [experts, inter, hidden]). MXFP4_DST gets each stack quantized as
transformers' checkpoints store it: X_blocks [experts, outputs, inputs / 32, 16] (two FP4 E2M1
codes a byte, the lower nibble the first) and X_scales [experts, outputs, inputs / 32] (E8M0:
2^(byte - 127) per 32 values), and config.json's quantization_config. TWIN_DST gets the values
those dequantize to, as transformers dequantizes them (the FP4 table, ldexp, each matrix
transposed back), stored as F32: the two folders hold the same model.
"""
import json
import os
import shutil
import sys

import numpy as np

from safetensors_io import read_arrays, write_arrays

FP4 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], dtype=np.float32)
def quantize(stack):
    """[experts, inputs, outputs] floats -> blocks, scales of the [experts, outputs, inputs] matrices."""
    m = np.transpose(stack, (0, 2, 1))
    e, rows, cols = m.shape
    assert cols % 32 == 0, "inputs must be a multiple of 32"
    groups = m.reshape(e, rows, cols // 32, 32)
    absmax = np.abs(groups).max(axis=-1)
    exponent = np.ceil(np.log2(np.maximum(absmax, 1e-30) / 6.0)).astype(np.int32)  # |x| / 2^exponent <= 6
    exponent = np.clip(exponent, -127, 127)
    scaled = groups / np.ldexp(1.0, exponent)[..., None]
    codes = np.abs(scaled[..., None] - FP4).argmin(axis=-1).astype(np.uint8)  # the nearest FP4 value
    blocks = (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)
    return blocks, (exponent + 127).astype(np.uint8)


def dequantize(blocks, scales):
    """transformers' convert_moe_packed_tensors, then each matrix transposed: [experts, inputs, outputs]."""
    e, rows, groups, _ = blocks.shape
    values = np.empty((e, rows, groups, 32), dtype=np.float32)
    values[..., 0::2] = FP4[blocks & 0x0F]
    values[..., 1::2] = FP4[blocks >> 4]
    values = np.ldexp(values, scales.astype(np.int32)[..., None] - 127)
    return np.transpose(values.reshape(e, rows, groups * 32), (0, 2, 1)).astype(np.float32)


def main(src, mx_dst, twin_dst):
    tensors = read_arrays(os.path.join(src, "model.safetensors"))
    mx, twin = {}, {}
    for name, array in tensors.items():
        if name.endswith(("experts.gate_up_proj", "experts.down_proj")):
            blocks, scales = quantize(array)
            mx[name + "_blocks"], mx[name + "_scales"] = blocks, scales
            twin[name] = dequantize(blocks, scales)
        else:
            mx[name] = twin[name] = array
    for dst, out in ((mx_dst, mx), (twin_dst, twin)):
        os.makedirs(dst, exist_ok=True)
        for f in os.listdir(src):
            if f != "model.safetensors":
                shutil.copy(os.path.join(src, f), dst)
        write_arrays(os.path.join(dst, "model.safetensors"), out)
    config = json.load(open(os.path.join(src, "config.json")))
    config["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn", "lm_head"]}
    json.dump(config, open(os.path.join(mx_dst, "config.json"), "w"))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
