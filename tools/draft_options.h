#pragma once
// sepal generate's speculative decoding flags: --draft-model, --draft-layers, --draft-ngram,
// --draft-dtype and --tree-size, checked and turned into a draft per session.

#include <boost/program_options.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "model/block_stack.h"
#include "model/draft_source.h"
#include "model/model_config.h"
#include "model/model_ends.h"
#include "model/tokenizer.h"
#include "model/weights.h"

namespace sepal::tools {

struct DraftOptions {
  std::string model_dir;
  std::string dtype;  ///< empty: the target's --dtype
  std::int64_t layers = 0;
  std::int64_t ngram = 0;
  std::int64_t tree_size = 16;
  bool pipelining = false;  ///< with a swarm: prepare the next tree while the hosts verify one
};

/// Adds the flags, storing into `options`.
void add_draft_options(boost::program_options::options_description& description, DraftOptions& options);

/// Checks the flags (UsageError) without loading anything; whether a draft is asked for.
bool check_draft_options(const DraftOptions& options, const boost::program_options::variables_map& vm,
                         const ModelConfig& target);

/// What the drafts of every session share: the draft model's weights (or the target's first
/// blocks), loaded once.
class Drafts {
 public:
  /// None when no draft flag is given. Checks the flags (UsageError) and loads a draft model,
  /// refusing one whose tokenizer or vocabulary differs from the target's (sepal::Error).
  /// `target_blocks`: the target's blocks held here (one process), or null (a swarm).
  static std::unique_ptr<Drafts> load(const DraftOptions& options, const boost::program_options::variables_map& vm,
                                      const std::string& target_dir, const ModelConfig& target, const Tokenizer& tokenizer,
                                      const ModelEnds& target_ends, const BlockStack* target_blocks,
                                      const WeightLoading& target_loading);
  /// A draft for a session of `capacity` positions.
  std::unique_ptr<DraftSource> make(std::int64_t capacity) const;
  std::int64_t tree_size() const { return tree_size_; }
  /// What it is, for the load line ("n-gram of order 3", "the first 2 blocks", "DIR (int8)").
  const std::string& description() const { return description_; }
  /// Bytes of weights it holds besides the target's.
  std::int64_t weight_bytes() const;

 private:
  std::int64_t ngram_ = 0, layers_ = 0, tree_size_ = 16;
  const ModelEnds* ends_ = nullptr;        ///< the draft's head (the target's for --draft-layers)
  const BlockStack* blocks_ = nullptr;     ///< the draft's blocks (owned_blocks_ or the target's)
  std::optional<ModelEnds> owned_ends_;
  std::unique_ptr<BlockStack> owned_blocks_;
  std::string description_;
};

}  // namespace sepal::tools
