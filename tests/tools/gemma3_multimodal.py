#!/usr/bin/env python3
"""A Gemma 3 text folder (Gemma3ForCausalLM) laid out as transformers' Gemma3ForConditionalGeneration
checkpoints are (the 4B, 12B and 27B): config.json with the text model's settings in text_config,
the language model's tensors under a prefix, and a vision tower and projector beside them. Also
renames a PEFT adapter of the text model the way PEFT names one of the multimodal model.

  gemma3_multimodal.py model SRC DST [--layout old|new]   # old: language_model.model.*, new: model.language_model.*
  gemma3_multimodal.py peft SRC DST [--layout old|new]
"""
import argparse
import json
import os
import shutil
import struct

from safetensors_io import read_raw, write_raw


def renamed(name, layout):
    """A causal LM's tensor name as the multimodal checkpoint names it."""
    if name.startswith("model."):
        return ("language_model.model." if layout == "old" else "model.language_model.") + name[len("model."):]
    if name == "lm_head.weight" and layout == "old":
        return "language_model.lm_head.weight"
    return name


def model(src, dst, layout):
    os.makedirs(dst, exist_ok=True)
    for f in os.listdir(src):
        if f not in ("config.json", "model.safetensors") and os.path.isfile(os.path.join(src, f)):
            shutil.copy(os.path.join(src, f), dst)  # the tokenizer's files
    text = json.load(open(os.path.join(src, "config.json")))
    text.pop("architectures", None)
    text["model_type"] = "gemma3_text"
    # text_config's defaults are Gemma3TextConfig's (a window of 4096): a text model without a
    # window says so.
    text.setdefault("sliding_window", None)
    config = {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "text_config": text,
              "mm_tokens_per_image": 256,
              "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 4, "num_hidden_layers": 1}}
    json.dump(config, open(os.path.join(dst, "config.json"), "w"), indent=2)
    tensors = {renamed(n, layout): t for n, t in read_raw(os.path.join(src, "model.safetensors")).items()}
    four = struct.pack("<4f", 0.5, -1.0, 2.0, 0.25)
    tensors["vision_tower.vision_model.post_layernorm.weight"] = ("F32", [4], four)
    tensors["multi_modal_projector.mm_input_projection_weight"] = ("F32", [2, 2], four)
    write_raw(os.path.join(dst, "model.safetensors"), tensors)


def peft(src, dst, layout):
    os.makedirs(dst, exist_ok=True)
    shutil.copy(os.path.join(src, "adapter_config.json"), dst)
    prefix = "base_model.model."
    tensors = {}
    for n, t in read_raw(os.path.join(src, "adapter_model.safetensors")).items():
        assert n.startswith(prefix), n
        tensors[prefix + renamed(n[len(prefix):], layout)] = t
    write_raw(os.path.join(dst, "adapter_model.safetensors"), tensors)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["model", "peft"])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--layout", choices=["old", "new"], default="old")
    a = p.parse_args()
    (model if a.what == "model" else peft)(a.src, a.dst, a.layout)
