#include "actors/adapter_payload.h"

#include <cmath>

#include "kernels/error.h"

namespace sepal {

namespace {

AdapterPayload payload_of(const AdapterShape& s, const float* values, std::int64_t blocks, std::int64_t per_block) {
  AdapterPayload p;
  p.method = s.method == AdapterMethod::kPeqa ? 0 : 1;
  p.rank = s.rank;
  p.alpha = s.alpha;
  for (const Projection t : s.targets) p.targets.push_back(static_cast<std::int64_t>(t));
  p.values = TensorPayload::copy_of(ElementType::kF32, {blocks, per_block}, values, static_cast<std::size_t>(blocks * per_block));
  return p;
}

}  // namespace

AdapterPayload adapter_payload(const BlockAdapters& adapters, const ModelConfig& config) {
  return payload_of(adapters.shape, adapters.values, adapters.blocks, adapters.shape.values_per_block(config));
}

AdapterPayload adapter_payload(const PromptParameters& params) {
  if (!trains_adapters(params.method) || params.adapter.empty()) return {};
  return payload_of(params.adapter_shape, params.adapter.data(), params.layers,
                    static_cast<std::int64_t>(params.adapter.size()) / params.layers);
}

AdapterPayload slice_adapter(const AdapterPayload& all, std::int64_t first, std::int64_t last) {
  AdapterPayload p = all;
  if (!has_adapter(all)) return p;
  const std::int64_t per_block = all.values.shape.at(1);
  p.values = TensorPayload::copy_of(ElementType::kF32, {last - first, per_block}, all.values.as<float>() + first * per_block,
                                    static_cast<std::size_t>((last - first) * per_block));
  return p;
}

Result<std::optional<BlockAdapters>> received_adapters(const AdapterPayload& p, const ModelConfig& config,
                                                       std::int64_t first, std::int64_t last) {
  if (!has_adapter(p)) return std::optional<BlockAdapters>{};
  if (p.method != 0 && p.method != 1) return error(StatusCode::kInvalidArgument, "adapter method ", p.method, " is not 0 (PEQA) or 1 (LoRA)");
  AdapterShape shape;
  shape.method = p.method == 0 ? AdapterMethod::kPeqa : AdapterMethod::kLora;
  shape.rank = p.method == 0 ? 0 : p.rank;
  shape.alpha = p.alpha;
  for (const std::int64_t t : p.targets) {
    if (t < 0 || t >= kProjections) return error(StatusCode::kInvalidArgument, "adapter target ", t, " is not a projection");
    shape.targets.push_back(static_cast<Projection>(t));
  }
  try {
    validate(shape, config);
  } catch (const Error& e) {
    return error(StatusCode::kInvalidArgument, "adapter: ", e.what());
  }
  const std::int64_t per_block = shape.values_per_block(config);
  const TensorPayload& v = p.values;
  if (v.type != ElementType::kF32 || v.shape != std::vector<std::int64_t>{last - first, per_block} ||
      v.bytes != static_cast<std::size_t>((last - first) * per_block) * sizeof(float)) {
    return error(StatusCode::kInvalidArgument, "adapter values must be f32 [", last - first, ", ", per_block, "]");
  }
  const float* values = v.as<float>();
  for (std::int64_t i = 0; i < (last - first) * per_block; ++i) {
    if (!std::isfinite(values[i])) return error(StatusCode::kInvalidArgument, "adapter values hold NaN or infinity");
  }
  return std::optional<BlockAdapters>{BlockAdapters{shape, first, last - first, values}};
}

}  // namespace sepal
