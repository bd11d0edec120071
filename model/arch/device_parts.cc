#include "model/arch/device_parts.h"

#include "kernels/error.h"

namespace sepal {

const DeviceMatrix& device_projection(const DeviceBlockWeights& w, Projection p) {
  switch (p) {
    case Projection::kQ: return w.q_proj;
    case Projection::kK: return w.k_proj;
    case Projection::kV: return w.v_proj;
    case Projection::kO: return w.o_proj;
    case Projection::kGate: return w.gate_proj;
    case Projection::kUp: return w.up_proj;
    case Projection::kDown: return w.down_proj;
  }
  fail("unknown projection ", static_cast<int>(p));
}

void device_adapt_product(const DeviceBlockCall& call, Projection p, const float* x, float* y) {
  const WeightView& w = device_projection(call.weights, p).view;
  Backend& b = call.backend;
  const auto one = [&](const DeviceAdapters* adapters, std::int64_t row, std::int64_t n) {
    if (!adapters || n <= 0) return;
    const auto adapter = adapters->host->of(call.config, call.weights.layer, p);
    if (!adapter) return;
    const float* values = adapters->values + (adapter->values - adapters->host->values);  // the same offset there
    float* out = y + row * w.rows;
    if (adapter->method == AdapterMethod::kPeqa) {
      if (w.dtype != DType::kI8) fail("PEQA tunes the scales of int8 weights; load the model with --dtype int8");
      return b.scale_by_one_plus(out, n, w.rows, values);
    }
    // LoRA: y += scaling · (x Aᵀ) Bᵀ, A [rank, cols] and B [rows, rank] one after the other.
    SEPAL_CHECK(adapter->rank <= call.scratch.rank && n <= call.scratch.rows, "adapter scratch too small");
    const DeviceMatrix a{WeightView{DType::kF32, adapter->rank, w.cols, values}, nullptr};
    const DeviceMatrix up{WeightView{DType::kF32, w.rows, adapter->rank, values + adapter->rank * w.cols}, nullptr};
    b.matmul(x + row * w.cols, n, a, call.scratch.lora_u);
    b.matmul(call.scratch.lora_u, n, up, call.scratch.lora_v);
    b.add_scaled_in_place(out, call.scratch.lora_v, adapter->scaling, n * w.rows);
  };
  if (call.segments.empty()) return one(call.adapters, 0, call.n);
  for (const DeviceSegment& seg : call.segments) one(seg.adapters, seg.row, seg.n);
}

}  // namespace sepal
