#pragma once
// Adapters on the wire (actors/protocol/block_host.h, AdapterPayload): the client's whole set, the
// slice of a hop's blocks the driver sends, and the host's checked view of what it receives.
//
// Thread-safety: plain functions.

#include <cstdint>
#include <optional>

#include "actors/protocol/block_host.h"
#include "model/block_adapters.h"
#include "model/prompt_tuning.h"
#include "runtime/status.h"

namespace sepal {

/// Adapters as a payload: `adapters` over the blocks of `config` it covers.
AdapterPayload adapter_payload(const BlockAdapters& adapters, const ModelConfig& config);
/// The adapters of `params` for every block (values shape {0} when it has none).
AdapterPayload adapter_payload(const PromptParameters& params);

/// Rows [first, last) of a payload that covers blocks [0, n); an empty payload stays empty.
AdapterPayload slice_adapter(const AdapterPayload& all, std::int64_t first, std::int64_t last);

/// Whether the payload holds adapters.
inline bool has_adapter(const AdapterPayload& p) { return p.values.elements() > 0; }

/// The adapters a host received for its blocks [first, last): none for an empty payload; an error
/// (kInvalidArgument, one line) for a method, rank, target or shape that does not fit the model,
/// values that are not f32 or not finite. The view points into `p`'s values.
Result<std::optional<BlockAdapters>> received_adapters(const AdapterPayload& p, const ModelConfig& config,
                                                       std::int64_t first, std::int64_t last);

}  // namespace sepal
