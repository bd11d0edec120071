#pragma once
// The arguments of one block's training pass on a device (DeviceBlockStack::forward_sequences and
// backward_sequences, model/device_blocks.h): training_parts.h's activations with every buffer in
// the backend's memory. Each architecture's device_training.cc runs its training.cc in the
// backend's ops, op for op in the same order, so that on the CPU backend a pass gives the CPU
// pass's bits (tests/model/device_training_test.cc).
//
// Thread-safety: a DeviceActivations belongs to one pass, run by the holder of the backend's turn().

#include <cstdint>
#include <memory>

#include "kernels/backend.h"
#include "model/arch/device_parts.h"
#include "model/arch/training_parts.h"
#include "model/device_blocks.h"
#include "model/model_config.h"

namespace sepal {

/// One block's activations over a pass's packed sequences, in a backend's memory (the fields of
/// training_parts.h's Activations; null where the architecture has no use for one).
struct DeviceActivations {
  float *input = nullptr, *normed1 = nullptr, *q = nullptr, *keys = nullptr, *values = nullptr, *attn = nullptr,
        *mid = nullptr, *normed2 = nullptr, *gate = nullptr, *up = nullptr, *act = nullptr, *k_rows = nullptr,
        *v_rows = nullptr, *q_raw = nullptr, *k_raw = nullptr, *o_raw = nullptr, *down_raw = nullptr;
  // backward scratch
  float *d_product = nullptr, *d_act = nullptr, *d_gate = nullptr, *d_up = nullptr, *d_norm = nullptr, *part = nullptr,
        *d_attn = nullptr, *dq = nullptr, *dk_heads = nullptr, *dv_heads = nullptr, *dk = nullptr, *dv = nullptr,
        *mlp_d_norm = nullptr;  // Cohere's parallel block: the MLP's input gradient
  // adapters' scratch (model/arch/device_parts.h: device_apply_adapter, device_adapter_backward)
  float *lora_u = nullptr, *lora_g = nullptr, *adapter_wide = nullptr, *adapter_base = nullptr, *adapter_own = nullptr;
  std::int64_t* positions = nullptr;  ///< each token's position in its sequence (Packing::positions)
  std::shared_ptr<void> storage;

  /// Allocates them for `pack` (with the backward's scratch where `backward`, and with adapters'
  /// of up to `rank` where `adapters`) and copies the positions in. Throws sepal::Error in one line
  /// when the device is out of memory.
  DeviceActivations(Backend& backend, const ModelConfig& c, const Packing& pack, bool backward, bool adapters = false,
                    std::int64_t rank = 0);
  DeviceActivations() = default;  ///< none
  /// Bytes they take for `tokens` tokens.
  static std::int64_t bytes(const ModelConfig& c, std::int64_t tokens, bool backward, bool adapters = false,
                            std::int64_t rank = 0);
};

struct DeviceTrainingCall {
  const ModelConfig& config;
  const DeviceBlockWeights& weights;
  Backend& backend;
  const double* inv_freq;       ///< RoPE (Llama family), in the backend's memory
  const double* long_inv_freq;  ///< LongRoPE's table for sequences past the original context; may be null
  const float* alibi;           ///< ALiBi slopes (BLOOM)
  const Packing& pack;          ///< host memory
  const DeviceActivations& a;
  const DeviceAdapters* adapters = nullptr;  ///< may be null
  float* adapter_grads = nullptr;            ///< this block's adapter gradients, added to (backward)
};

/// As adapt_product (training_parts.h), over the pass's rows.
void device_training_adapt(const DeviceTrainingCall& call, Projection p, const float* x, float* y);
/// As product_input_grad (training_parts.h): dx = d loss / d x of the (adapted) product of p;
/// dy is scratch. Adds the adapter's gradients.
void device_product_input_grad(const DeviceTrainingCall& call, Projection p, const float* x, float* dy, float* dx);

/// Causal attention of every packed sequence: a.q and a.k_rows, a.v_rows in; a.keys, a.values
/// (the kernels' layout) and a.attn out (packed_attention's).
void device_packed_attention(const DeviceTrainingCall& call);
/// Its input gradients from a.d_attn: a.dq, and a.dk and a.dv as rows.
void device_packed_attention_backward(const DeviceTrainingCall& call);
/// The q, k and v products' input gradients from a.dq, a.dk and a.dv, summed into a.d_norm.
void device_qkv_input_grad(const DeviceTrainingCall& call);
/// RoPE (or, `input_grad`, its input gradient) of each packed sequence's rows x[t, heads, head_dim].
void device_rotate_sequences(const DeviceTrainingCall& call, float* x, std::int64_t heads, bool input_grad);

}  // namespace sepal
