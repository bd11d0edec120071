// BLOOM's block on a device: block.cc's forward in the backend's ops.
#include "model/arch/architectures.h"
#include "model/arch/device_parts.h"

namespace sepal {

void bloom_device_block_forward(const DeviceBlockCall& call) {
  const ModelConfig& c = call.config;
  const DeviceBlockWeights& w = call.weights;
  Backend& b = call.backend;
  const DeviceScratch& s = call.scratch;
  const std::int64_t n = call.n, h = c.hidden_size;
  const float eps = static_cast<float>(c.rms_norm_eps);

  b.layernorm(call.hidden, n, h, w.input_norm.data, w.input_norm_bias.data, eps, s.normed);
  device_products(call, s.normed, w.q_proj, s.q);
  device_products(call, s.normed, w.k_proj, s.k);
  device_products(call, s.normed, w.v_proj, s.v);
  device_adapt_product(call, Projection::kQ, s.normed, s.q);
  device_adapt_product(call, Projection::kK, s.normed, s.k);
  device_adapt_product(call, Projection::kV, s.normed, s.v);
  b.add_bias(s.q, n, c.q_size(), w.q_bias.data);
  b.add_bias(s.k, n, c.kv_size(), w.k_bias.data);
  b.add_bias(s.v, n, c.kv_size(), w.v_bias.data);
  device_store_and_attend(call);
  device_products(call, s.attn, w.o_proj, s.proj);
  device_adapt_product(call, Projection::kO, s.attn, s.proj);
  b.add_bias(s.proj, n, h, w.o_bias.data);
  b.add_in_place(call.hidden, s.proj, n * h);

  b.layernorm(call.hidden, n, h, w.post_attention_norm.data, w.post_attention_norm_bias.data, eps, s.normed);
  device_products(call, s.normed, w.up_proj, s.up);
  device_adapt_product(call, Projection::kUp, s.normed, s.up);
  b.add_bias(s.up, n, c.intermediate_size, w.up_bias.data);
  b.gelu_tanh(s.up, n * c.intermediate_size);
  device_products(call, s.up, w.down_proj, s.proj);
  device_adapt_product(call, Projection::kDown, s.up, s.proj);
  b.add_bias(s.proj, n, h, w.down_bias.data);
  b.add_in_place(call.hidden, s.proj, n * h);
}

}  // namespace sepal
