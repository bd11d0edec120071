#pragma once
// What the draft decoder accepts and answers (actors/draft_decoder.h). The draft decoder holds a
// draft (model/draft_source.h) for each generation of its process and proposes their token trees;
// while the hosts verify a tree it prepares the next one for the outcome it finds likeliest, so
// that its time hides behind the round trip. Requests from any other process are refused.

#include <cstdint>
#include <vector>

#include "runtime/actor.h"

namespace sepal {

/// Well-known actor id of the draft decoder (on the client's node).
inline constexpr std::uint32_t kDraftDecoderActorId = 7;

struct DraftOpened {
  static constexpr std::uint16_t kTypeId = 0x0801;
  std::uint64_t draft = 0;
  SEPAL_FIELDS(draft)
};
/// A draft for a session of up to `capacity` positions that starts with `prompt` (BOS first).
struct OpenDraft {
  static constexpr std::uint16_t kTypeId = 0x0802;
  using Reply = DraftOpened;
  std::vector<std::int32_t> prompt;
  std::int64_t capacity = 0;
  SEPAL_FIELDS(prompt, capacity)
};

/// A token tree (model/token_tree.h).
struct DraftTree {
  static constexpr std::uint16_t kTypeId = 0x0803;
  std::vector<std::int32_t> tokens;
  std::vector<std::int32_t> parents;
  std::vector<double> mass;
  std::vector<std::int32_t> next_guess;
  bool anticipated = false;  ///< prepared while the last tree was verified (the guess was right)
  SEPAL_FIELDS(tokens, parents, mass, next_guess, anticipated)
};
/// The target kept `keep` of the last tree (empty after the prompt) and chose `root`: the next
/// tree of at most `size` nodes.
struct ProposeTree {
  static constexpr std::uint16_t kTypeId = 0x0804;
  using Reply = DraftTree;
  std::uint64_t draft = 0;
  std::vector<std::int32_t> keep;
  std::int32_t root = 0;
  std::int64_t size = 0;
  SEPAL_FIELDS(draft, keep, root, size)
};

/// One-way: the last tree is being verified now; prepare the next one.
struct AnticipateTree {
  static constexpr std::uint16_t kTypeId = 0x0805;
  std::uint64_t draft = 0;
  SEPAL_FIELDS(draft)
};

struct DraftClosed {
  static constexpr std::uint16_t kTypeId = 0x0806;
  std::uint64_t draft = 0;
  SEPAL_FIELDS(draft)
};
struct CloseDraft {
  static constexpr std::uint16_t kTypeId = 0x0807;
  using Reply = DraftClosed;
  std::uint64_t draft = 0;
  SEPAL_FIELDS(draft)
};

struct DraftDecoderProtocol {
  using accepts = Accepts<OpenDraft, ProposeTree, AnticipateTree, CloseDraft>;
};

}  // namespace sepal
