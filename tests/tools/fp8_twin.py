"""Writes a model folder's FP8 version and its dequantized twin, independently of sepal: every
2-D weight of the blocks becomes F8_E4M3 (the nearest E4M3 value of weight / scale, each scale
the largest magnitude it covers / 448) with its scales (F32, or BF16 for every other weight, as
some releases store them), and config.json gains the quantization_config; the twin holds the
same weights dequantized (fp8(x) * scale in float32) as F32, with no quantization_config.
    python3 fp8_twin.py MODEL_DIR FP8_DIR TWIN_DIR BLOCK_ROWS BLOCK_COLS
        transformers' fine-grained FP8 (DeepSeek-V3's, Qwen3's -FP8): weight_scale_inv, a scale a
        block of BLOCK_ROWS x BLOCK_COLS
    python3 fp8_twin.py MODEL_DIR FP8_DIR TWIN_DIR channel
        compressed-tensors' float-quantized FP8 (llm-compressor's FP8-dynamic): weight_scale
        [rows, 1], a scale a row
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import copy_model_folder, read_raw, to_bf16, to_f32, write_raw  # noqa: E402


def e4m3_table():
    """The value of every E4M3 byte (bias 7, no infinities; 0x7F and 0xFF are NaN)."""
    values = np.zeros(256, np.float32)
    for code in range(256):
        e, m = (code >> 3) & 15, code & 7
        v = np.nan if (e == 15 and m == 7) else (m / 8 * 2.0 ** -6 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7))
        values[code] = -v if code & 0x80 else v
    return values


TABLE = e4m3_table()
CODES = np.array([c for c in range(256) if not np.isnan(TABLE[c])], np.uint8)


def quantize(w, bh, bw):
    rows, cols = w.shape
    br, bc = -(-rows // bh), -(-cols // bw)
    scales = np.zeros((br, bc), np.float32)
    codes = np.zeros(w.shape, np.uint8)
    for i in range(br):
        for j in range(bc):
            block = w[i * bh:(i + 1) * bh, j * bw:(j + 1) * bw]
            s = np.float32(np.abs(block).max() / 448) or np.float32(1)
            scales[i, j] = s
            nearest = np.abs((block / s)[..., None] - TABLE[CODES][None, None, :]).argmin(axis=-1)
            codes[i * bh:(i + 1) * bh, j * bw:(j + 1) * bw] = CODES[nearest]
    return codes, scales


def main():
    src, fp8_dir, twin_dir = sys.argv[1:4]
    channel = sys.argv[4] == "channel"
    bh, bw = (0, 0) if channel else (int(sys.argv[4]), int(sys.argv[5]))
    suffix = "_scale" if channel else "_scale_inv"
    weights = copy_model_folder(src, fp8_dir, twin_dir)
    fp8, twin = {}, {}
    for n, (name, (dtype, shape, blob)) in enumerate(read_raw(f"{src}/{weights}").items()):
        if len(shape) != 2 or ".layers." not in name or not name.endswith(".weight"):
            fp8[name] = twin[name] = (dtype, shape, blob)
            continue
        codes, scales = quantize(to_f32(dtype, shape, blob), 1 if channel else bh, shape[1] if channel else bw)
        if n % 2:  # BF16 scales: the F32 values rounded to BF16, and the twin computed with those
            bits = to_bf16(scales)
            fp8[name + suffix] = ("BF16", scales.shape, bits.tobytes())
            scales = (bits.astype(np.uint32) << 16).view(np.float32)
        else:
            fp8[name + suffix] = ("F32", scales.shape, scales.tobytes())
        fp8[name] = ("F8_E4M3", shape, codes.tobytes())
        rows_scale = scales if channel else np.repeat(np.repeat(scales, bh, axis=0), bw, axis=1)[:shape[0], :shape[1]]
        twin[name] = ("F32", shape, (TABLE[codes] * rows_scale).astype(np.float32).tobytes())
    write_raw(f"{fp8_dir}/{weights}", fp8)
    write_raw(f"{twin_dir}/{weights}", twin)
    config = json.load(open(f"{src}/config.json"))
    config.pop("quantization_config", None)
    json.dump(config, open(f"{twin_dir}/config.json", "w"), indent=1)
    if channel:
        config["quantization_config"] = {
            "quant_method": "compressed-tensors", "format": "float-quantized", "ignore": ["lm_head"],
            "config_groups": {"group_0": {
                "targets": ["Linear"],
                "weights": {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "channel", "dynamic": False},
                "input_activations": {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "token",
                                      "dynamic": True}}}}
    else:
        config["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                         "weight_block_size": [bh, bw]}
    json.dump(config, open(f"{fp8_dir}/config.json", "w"), indent=1)


main()
