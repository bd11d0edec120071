"""A LoRA adapter "trained elsewhere", in Hugging Face PEFT's layout, and the model with it merged,
written independently of sepal: random factors (F16) for some projections, and every targeted
weight replaced by W + lora_alpha / r · B A computed in float64.
  peft_merge.py MODEL_DIR PEFT_OUT MERGED_OUT"""
import json
import os
import shutil
import struct
import sys

import numpy as np

model, peft_dir, merged_dir = sys.argv[1:4]
DTYPES = {"F32": np.float32, "F16": np.float16}


def read(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + begin:8 + n + end], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
    return out


def write(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, a in tensors.items():
        data = np.ascontiguousarray(a).tobytes()
        header[name] = {"dtype": "F16" if a.dtype == np.float16 else "F32", "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * ((-len(text)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


config = json.load(open(os.path.join(model, "config.json")))
weights = read(os.path.join(model, "model.safetensors"))
rank, alpha, targets = 3, 5.0, ["q_proj", "o_proj", "up_proj"]
rng = np.random.default_rng(11)
adapter = {}
for layer in range(config["num_hidden_layers"]):
    for t in targets:
        part = "self_attn" if t in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
        name = f"model.layers.{layer}.{part}.{t}"
        w = weights[name + ".weight"]
        a = (rng.standard_normal((rank, w.shape[1])) * 0.2).astype(np.float16)
        b = (rng.standard_normal((w.shape[0], rank)) * 0.2).astype(np.float16)
        adapter[f"base_model.model.{name}.lora_A.weight"] = a
        adapter[f"base_model.model.{name}.lora_B.weight"] = b
        merged = w.astype(np.float64) + alpha / rank * (b.astype(np.float64) @ a.astype(np.float64))
        weights[name + ".weight"] = merged.astype(np.float32)
os.makedirs(peft_dir, exist_ok=True)
write(os.path.join(peft_dir, "adapter_model.safetensors"), adapter)
json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": alpha, "target_modules": targets,
           "lora_dropout": 0.05, "bias": "none", "fan_in_fan_out": False, "base_model_name_or_path": model},
          open(os.path.join(peft_dir, "adapter_config.json"), "w"))
os.makedirs(merged_dir, exist_ok=True)
for f in os.listdir(model):
    if os.path.isfile(os.path.join(model, f)) and not f.endswith(".safetensors"):
        shutil.copy(os.path.join(model, f), merged_dir)
write(os.path.join(merged_dir, "model.safetensors"), weights)
