"""LoRA adapters in Hugging Face PEFT's layout, merged into a model's weights, independently of
sepal: every adapted weight becomes W + alpha / r · B A, computed in float64, with a module's r and
alpha from rank_pattern and alpha_pattern where a key names it (PEFT's rule: the module's path is
the key or ends with "." + key).
  peft_merge.py make MODEL_DIR PEFT_OUT MERGED_OUT   an adapter "trained elsewhere" (random F16
      factors, other targets, ranks and alphas than sepal's defaults) and the model with it merged
  peft_merge.py merge MODEL_DIR PEFT_DIR MERGED_OUT  the model with an existing adapter merged
Llama (q_proj ... down_proj), BLOOM (fused query_key_value, dense, dense_h_to_4h, dense_4h_to_h),
Phi-3 (fused qkv_proj and gate_up_proj), Mixtral (each expert's w1, w3 and w2 its own module) and
Qwen2-MoE (each expert's and the shared expert's gate_proj, up_proj, down_proj) checkpoints in
Hugging Face's layout."""
import json
import os
import shutil
import sys

import numpy as np

from safetensors_io import read_arrays, write_arrays

mode, model, peft_dir, merged_dir = sys.argv[1:5]
PREFIX = "base_model.model."


def pattern_value(pattern, path, default):
    for key, value in (pattern or {}).items():
        if path == key or path.endswith("." + key):
            return value
    return default


def merge(weights, adapter, config):
    for name, a in adapter.items():
        if not name.endswith(".lora_A.weight"):
            continue
        path = name[len(PREFIX):-len(".lora_A.weight")]
        b = adapter[PREFIX + path + ".lora_B.weight"]
        r = pattern_value(config.get("rank_pattern"), path, config["r"])
        alpha = pattern_value(config.get("alpha_pattern"), path, config["lora_alpha"])
        assert a.shape[0] == r and b.shape[1] == r, (path, a.shape, b.shape, r)
        w = weights[path + ".weight"]
        weights[path + ".weight"] = (w.astype(np.float64) + alpha / r * (b.astype(np.float64) @ a.astype(np.float64))).astype(np.float32)


def random_adapter(model_config, weights):
    """Random F16 factors: Llama's q_proj (rank 3), o_proj (rank 2) and up_proj (alpha 7); BLOOM's
    fused query_key_value (one A for q, k and v, rank 4) and dense_4h_to_h (alpha 7); Phi-3's fused
    qkv_proj (rank 4) and gate_up_proj (one A for gate and up, alpha 7); Mixtral's q_proj and every
    expert's w1 (alpha 7) and w2 (rank 2); Qwen2-MoE's q_proj and every expert's and the shared
    expert's gate_proj (alpha 7) and down_proj (rank 2)."""
    rng = np.random.default_rng(11)
    if model_config.get("model_type") == "bloom":
        layers, targets = model_config["n_layer"], ["query_key_value", "dense_4h_to_h"]
        paths = lambda layer: [f"transformer.h.{layer}.self_attention.query_key_value", f"transformer.h.{layer}.mlp.dense_4h_to_h"]
        config = {"r": 3, "lora_alpha": 5.0, "rank_pattern": {"query_key_value": 4}, "alpha_pattern": {"dense_4h_to_h": 7.0}}
    elif model_config.get("model_type") == "phi3":
        layers, targets = model_config["num_hidden_layers"], ["qkv_proj", "gate_up_proj"]
        paths = lambda layer: [f"model.layers.{layer}.self_attn.qkv_proj", f"model.layers.{layer}.mlp.gate_up_proj"]
        config = {"r": 3, "lora_alpha": 5.0, "rank_pattern": {"qkv_proj": 4}, "alpha_pattern": {"gate_up_proj": 7.0}}
    elif model_config.get("model_type") == "mixtral":
        layers, targets, experts = model_config["num_hidden_layers"], ["q_proj", "w1", "w2"], model_config["num_local_experts"]
        paths = lambda layer: [f"model.layers.{layer}.self_attn.q_proj"] + [
            f"model.layers.{layer}.block_sparse_moe.experts.{e}.{w}" for e in range(experts) for w in ("w1", "w2")]
        config = {"r": 3, "lora_alpha": 5.0, "rank_pattern": {"w2": 2}, "alpha_pattern": {"w1": 7.0}}
    elif model_config.get("model_type") == "qwen2_moe":
        layers, targets, experts = model_config["num_hidden_layers"], ["q_proj", "gate_proj", "down_proj"], model_config["num_experts"]
        paths = lambda layer: [f"model.layers.{layer}.self_attn.q_proj"] + [
            f"model.layers.{layer}.mlp.experts.{e}.{w}" for e in range(experts) for w in ("gate_proj", "down_proj")] + [
            f"model.layers.{layer}.mlp.shared_expert.{w}" for w in ("gate_proj", "down_proj")]
        config = {"r": 3, "lora_alpha": 5.0, "rank_pattern": {"down_proj": 2}, "alpha_pattern": {"gate_proj": 7.0}}
    else:
        layers, targets = model_config["num_hidden_layers"], ["q_proj", "o_proj", "up_proj"]
        paths = lambda layer: [f"model.layers.{layer}.self_attn.q_proj", f"model.layers.{layer}.self_attn.o_proj",
                               f"model.layers.{layer}.mlp.up_proj"]
        config = {"r": 3, "lora_alpha": 5.0, "rank_pattern": {"o_proj": 2}, "alpha_pattern": {"up_proj": 7.0}}
    adapter = {}
    for layer in range(layers):
        for path in paths(layer):
            w = weights[path + ".weight"]
            r = pattern_value(config["rank_pattern"], path, config["r"])
            adapter[f"{PREFIX}{path}.lora_A.weight"] = (rng.standard_normal((r, w.shape[1])) * 0.2).astype(np.float16)
            adapter[f"{PREFIX}{path}.lora_B.weight"] = (rng.standard_normal((w.shape[0], r)) * 0.2).astype(np.float16)
    config.update({"peft_type": "LORA", "task_type": "CAUSAL_LM", "target_modules": targets, "lora_dropout": 0.05,
                   "bias": "none", "fan_in_fan_out": False, "base_model_name_or_path": model})
    return adapter, config


model_config = json.load(open(os.path.join(model, "config.json")))
weights = read_arrays(os.path.join(model, "model.safetensors"))
if mode == "make":
    adapter, config = random_adapter(model_config, weights)
    os.makedirs(peft_dir, exist_ok=True)
    write_arrays(os.path.join(peft_dir, "adapter_model.safetensors"), adapter)
    json.dump(config, open(os.path.join(peft_dir, "adapter_config.json"), "w"))
elif mode == "merge":
    adapter = read_arrays(os.path.join(peft_dir, "adapter_model.safetensors"))
    config = json.load(open(os.path.join(peft_dir, "adapter_config.json")))
else:
    sys.exit(f"peft_merge.py: mode must be make or merge, not {mode}")
merge(weights, adapter, config)
os.makedirs(merged_dir, exist_ok=True)
for f in os.listdir(model):
    if os.path.isfile(os.path.join(model, f)) and not f.endswith(".safetensors"):
        shutil.copy(os.path.join(model, f), merged_dir)
write_arrays(os.path.join(merged_dir, "model.safetensors"), weights)
