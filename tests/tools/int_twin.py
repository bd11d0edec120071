"""Writes a model folder's integer-quantized version (GPTQ, AWQ, or compressed-tensors'
pack-quantized or int-quantized) and its dequantized twin, independently of sepal. Every 2-D
weight of the blocks W [out, in] is quantized in groups of input columns (round to nearest, no calibration: the layout
is what is tested, not GPTQ's or AWQ's search), packed as each tool writes it, and config.json
gains the tool's quantization_config; the twin holds s * (q - z) computed in float32 from the
unpacked integers and the stored (rounded) scales, as F32, with no quantization_config.
    python3 int_twin.py MODEL_DIR OUT_DIR TWIN_DIR FORMAT BITS GROUP_SIZE [OPTIONS]
FORMAT: gptq (AutoGPTQ's own format: zero points stored one less), gptq_v2, awq (AutoAWQ's GEMM
layout, 4 bits), ct (compressed-tensors pack-quantized) or ct_int8 (compressed-tensors
int-quantized, W8A8's int8 weights). GROUP_SIZE -1: a scale a row.
OPTIONS: act_order (gptq: columns grouped in a shuffled order, stored as g_idx),
asymmetric (ct: with zero points), bf16 (scales in BF16 rather than F16).
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import copy_model_folder, read_raw, to_bf16, to_f32, write_raw  # noqa: E402

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]  # nibble p of a word holds output 8w + AWQ_ORDER[p]


def stored_scales(s, bf16):
    """The scales as the file stores them (dtype name, bytes) and their float32 values."""
    if bf16:
        bits = to_bf16(s)
        return "BF16", bits.tobytes(), (bits.astype(np.uint32) << 16).view(np.float32)
    h = s.astype(np.float16)
    return "F16", h.tobytes(), h.astype(np.float32)


def pack(values, bits, axis, order=None):
    """Packs unsigned `values` (< 2^bits) into uint32 words along `axis`, value k of a word in bits
    [k * bits, (k + 1) * bits), or value order[k] of a group of 32 // bits there; padded with 0."""
    per = 32 // bits
    v = np.moveaxis(values.astype(np.uint32), axis, 0)
    pad = -v.shape[0] % per
    v = np.concatenate([v, np.zeros((pad,) + v.shape[1:], np.uint32)])
    v = v.reshape((v.shape[0] // per, per) + v.shape[1:])
    words = np.zeros((v.shape[0],) + v.shape[2:], np.uint32)
    for k in range(per):
        words |= v[:, order[k] if order else k] << np.uint32(k * bits)
    return np.moveaxis(words, 0, axis).view(np.int32)


def quantize(w, bits, group_of, groups, symmetric, bf16):
    """Integers q [out, in], zero points z [out, groups] (0 when symmetric) and float32 scales
    s [out, groups] (as stored), unsigned (0 to 2^bits - 1) unless symmetric (centred on 0)."""
    out, _ = w.shape
    top = (1 << bits) - 1
    s = np.zeros((out, groups), np.float32)
    z = np.zeros((out, groups), np.int64)
    for g in range(groups):
        cols = w[:, group_of == g]
        if symmetric:
            s[:, g] = np.abs(cols).max(axis=1) / (top // 2)
        else:
            lo, hi = np.minimum(cols.min(axis=1), 0), np.maximum(cols.max(axis=1), 0)
            s[:, g] = (hi - lo) / top
    s[s == 0] = 1
    dtype, blob, s = stored_scales(s, bf16)
    for g in range(groups):
        if not symmetric:
            lo = np.minimum(w[:, group_of == g].min(axis=1), 0)
            z[:, g] = np.clip(np.round(-lo / s[:, g]), 0, top)
    lo, hi = (-(top + 1) // 2, top // 2) if symmetric else (0, top)
    q = np.clip(np.round(w / s[:, group_of]) + z[:, group_of], lo, hi).astype(np.int64)
    return q, z, s, dtype, blob


def main():
    src, out_dir, twin_dir, fmt, bits, group_size = sys.argv[1:7]
    bits, group_size, options = int(bits), int(group_size), set(sys.argv[7:])
    rng = np.random.default_rng(7)
    weights = copy_model_folder(src, out_dir, twin_dir)
    packed, twin = {}, {}
    for name, (dtype, shape, blob) in read_raw(f"{src}/{weights}").items():
        if len(shape) != 2 or ".layers." not in name or not name.endswith(".weight"):
            packed[name] = twin[name] = (dtype, shape, blob)
            continue
        w = to_f32(dtype, shape, blob)
        out, cols = shape
        size = cols if group_size < 0 else group_size
        groups = -(-cols // size)
        rank = np.arange(cols)
        if "act_order" in options:  # the order GPTQ quantizes columns in: groups of shuffled columns
            rank = np.argsort(rng.permutation(cols))
        group_of = rank // size
        symmetric = fmt in ("ct", "ct_int8") and "asymmetric" not in options
        q, z, s, scale_dtype, scale_blob = quantize(w, bits, group_of, groups, symmetric, "bf16" in options)
        if fmt == "gptq":  # AutoGPTQ reads each stored zero point plus one: keep them at 1 or more
            z = np.maximum(z, 1)
            q = np.clip(np.round(w / s[:, group_of]) + z[:, group_of], 0, (1 << bits) - 1).astype(np.int64)
        twin_w = (s[:, group_of] * (q - z[:, group_of]).astype(np.float32)).astype(np.float32)
        twin[name] = ("F32", shape, twin_w.tobytes())
        base = name[:-len(".weight")]
        if fmt in ("gptq", "gptq_v2"):
            packed[base + ".qweight"] = ("I32", (-(-cols * bits // 32), out), pack(q.T, bits, 0).tobytes())
            stored = (z - (1 if fmt == "gptq" else 0)).T  # [groups, out]
            packed[base + ".qzeros"] = ("I32", (groups, -(-out * bits // 32)), pack(stored, bits, 1).tobytes())
            packed[base + ".scales"] = (scale_dtype, (groups, out), np.frombuffer(scale_blob, np.uint16).reshape(out, groups).T.copy().tobytes())
            if "act_order" in options or group_size < 0:  # else the group of column i is i // group_size
                packed[base + ".g_idx"] = ("I32", (cols,), group_of.astype(np.int32).tobytes())
        elif fmt == "awq":
            packed[base + ".qweight"] = ("I32", (cols, out // 8), pack(q.T, 4, 1, AWQ_ORDER).tobytes())
            packed[base + ".qzeros"] = ("I32", (groups, out // 8), pack(z.T, 4, 1, AWQ_ORDER).tobytes())
            packed[base + ".scales"] = (scale_dtype, (groups, out), np.frombuffer(scale_blob, np.uint16).reshape(out, groups).T.copy().tobytes())
        elif fmt == "ct_int8":  # int8 as it is, a scale a row
            packed[name] = ("I8", shape, q.astype(np.int8).tobytes())
            packed[base + ".weight_scale"] = (scale_dtype, (out, groups), scale_blob)
        else:
            # Stored plus 2^(bits - 1): signed integers as unsigned. Asymmetric ones are unsigned
            # already (their signed values and zero points are both 2^(bits - 1) less).
            words = pack(q + (1 << (bits - 1)) if symmetric else q, bits, 1)
            packed[base + ".weight_packed"] = ("I32", words.shape, words.tobytes())
            packed[base + ".weight_scale"] = (scale_dtype, (out, groups), scale_blob)
            packed[base + ".weight_shape"] = ("I64", (2,), np.array([out, cols], np.int64).tobytes())
            if not symmetric:
                zp = pack(z, bits, 0)
                packed[base + ".weight_zero_point"] = ("I32", zp.shape, zp.tobytes())
    write_raw(f"{out_dir}/{weights}", packed)
    write_raw(f"{twin_dir}/{weights}", twin)
    config = json.load(open(f"{src}/config.json"))
    config.pop("quantization_config", None)
    json.dump(config, open(f"{twin_dir}/config.json", "w"), indent=1)
    if fmt in ("gptq", "gptq_v2"):
        config["quantization_config"] = {"quant_method": "gptq", "bits": bits, "group_size": group_size,
                                         "desc_act": "act_order" in options, "sym": False, "damp_percent": 0.01,
                                         "checkpoint_format": fmt, "true_sequential": True}
    elif fmt == "awq":
        config["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": group_size,
                                         "zero_point": True, "version": "gemm"}
    else:
        weights = {"num_bits": bits, "type": "int", "symmetric": symmetric, "dynamic": False,
                   "strategy": "channel" if group_size < 0 else "group"}
        if group_size > 0:
            weights["group_size"] = group_size
        activations = None  # W8A8: activations quantized on the fly, a scale a token
        if fmt == "ct_int8":
            activations = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token", "dynamic": True}
        config["quantization_config"] = {
            "quant_method": "compressed-tensors", "format": "int-quantized" if fmt == "ct_int8" else "pack-quantized",
            "quantization_status": "compressed", "ignore": ["lm_head"],
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "input_activations": activations}}}
    json.dump(config, open(f"{out_dir}/config.json", "w"), indent=1)


main()
