#include "tools/draft_options.h"

#include "kernels/error.h"
#include "tools/commands.h"

namespace sepal::tools {

namespace po = boost::program_options;

void add_draft_options(po::options_description& description, DraftOptions& o) {
  description.add_options()
      ("draft-model", po::value(&o.model_dir),
       "speculative decoding with this smaller model as the draft (same tokenizer as --model)")
      ("draft-layers", po::value(&o.layers)->default_value(0),
       "speculative decoding with the model's own first K blocks and head as the draft")
      ("draft-ngram", po::value(&o.ngram)->default_value(0),
       "speculative decoding with an n-gram draft of this order over the prompt and the text so far;\n"
       "with --draft-model or --draft-layers, the second stage that speculates that draft's own decoding")
      ("draft-dtype", po::value(&o.dtype), "weights of --draft-model or --draft-layers: f32, bf16 or int8 (default: --dtype)")
      ("tree-size", po::value(&o.tree_size)->default_value(16), "speculative decoding: tokens per verified tree, root included")
      ("draft-pipelining", po::bool_switch(&o.pipelining),
       "with a swarm: while the hosts verify a tree, the draft guesses the outcome and prepares\n"
       "the next tree (pays off where the draft is slow next to the round trip and guesses well)");
}

namespace {

void check_same_vocabulary(const Tokenizer& target, const Tokenizer& draft, const ModelConfig& target_config,
                           const ModelConfig& draft_config, const std::string& draft_dir) {
  bool same = target.vocab_size() == draft.vocab_size() && target_config.vocab_size == draft_config.vocab_size &&
              target_config.bos_token_id == draft_config.bos_token_id &&
              target_config.eos_token_ids == draft_config.eos_token_ids;
  for (std::int32_t id = 0; same && id < target.vocab_size(); ++id) same = target.token_bytes(id) == draft.token_bytes(id);
  if (!same) fail("the draft model ", draft_dir, " has a different tokenizer or vocabulary from the target's");
}

}  // namespace

bool check_draft_options(const DraftOptions& o, const po::variables_map& vm, const ModelConfig& target) {
  const int models = !o.model_dir.empty() + (o.layers != 0);
  if (models + (o.ngram != 0) == 0) {
    if (!vm["tree-size"].defaulted()) throw UsageError{"--tree-size is for speculative decoding: add --draft-model, --draft-layers or --draft-ngram"};
    if (!o.dtype.empty()) throw UsageError{"--draft-dtype is for --draft-model or --draft-layers"};
    if (o.pipelining) throw UsageError{"--draft-pipelining is for speculative decoding: add a draft"};
    return false;
  }
  if (models > 1) throw UsageError{"give one of --draft-model and --draft-layers"};
  if (o.tree_size < 1 || o.tree_size > 256) throw UsageError{"--tree-size must be between 1 and 256"};
  if (o.ngram != 0 && (o.ngram < 2 || o.ngram > 16)) throw UsageError{"--draft-ngram must be an order between 2 and 16"};
  if (o.layers != 0 && (o.layers < 1 || o.layers >= target.num_layers)) {
    throw UsageError{"--draft-layers must be between 1 and " + std::to_string(target.num_layers - 1) + " (the model has " +
                     std::to_string(target.num_layers) + " blocks)"};
  }
  if (!o.dtype.empty() && models == 0) throw UsageError{"--draft-dtype is for --draft-model or --draft-layers"};
  if (!o.dtype.empty()) {
    const auto dtype = parse_dtype(o.dtype);
    if (!dtype || *dtype == DType::kF16) throw UsageError{"--draft-dtype must be f32, bf16 or int8, got '" + o.dtype + "'"};
  }
  if (!o.model_dir.empty()) (void)read_model_config(o.model_dir);  // a bad folder fails before a swarm starts
  return true;
}

std::unique_ptr<Drafts> Drafts::load(const DraftOptions& o, const po::variables_map& vm, const std::string& target_dir,
                                     const ModelConfig& target, const Tokenizer& tokenizer, const ModelEnds& target_ends,
                                     const BlockStack* target_blocks, const WeightLoading& target_loading) {
  if (!check_draft_options(o, vm, target)) return nullptr;
  WeightLoading loading = target_loading;
  if (!o.dtype.empty()) {
    const auto dtype = parse_dtype(o.dtype);
    loading.dtype = *dtype;
    if (*dtype == DType::kI8) loading.in_place = false;  // quantized while loading
  }
  std::unique_ptr<Drafts> drafts(new Drafts());
  drafts->tree_size_ = o.tree_size;
  const std::string dtype_text(dtype_name(loading.dtype));
  drafts->ngram_ = o.ngram;  // with a model draft: its second stage
  if (o.model_dir.empty() && o.layers == 0) {
    drafts->description_ = "an n-gram draft of order " + std::to_string(o.ngram);
  } else if (o.layers != 0) {
    drafts->layers_ = o.layers;
    drafts->ends_ = &target_ends;
    if (target_blocks && loading.dtype == target_loading.dtype) {
      drafts->blocks_ = target_blocks;
    } else {
      drafts->owned_blocks_ = std::make_unique<BlockStack>(BlockStack::load(Checkpoint::open(target_dir), target, 0, o.layers, loading));
      drafts->blocks_ = drafts->owned_blocks_.get();
    }
    drafts->description_ = "the model's first " + std::to_string(o.layers) + " blocks (" + dtype_text + ")";
  } else {
    const ModelConfig config = read_model_config(o.model_dir);
    check_same_vocabulary(tokenizer, *load_tokenizer(o.model_dir), target, config, o.model_dir);
    const Checkpoint checkpoint = Checkpoint::open(o.model_dir);
    drafts->owned_ends_.emplace(ModelEnds::load(checkpoint, config, loading));
    drafts->owned_blocks_ = std::make_unique<BlockStack>(BlockStack::load(checkpoint, config, 0, config.num_layers, loading));
    drafts->ends_ = &*drafts->owned_ends_;
    drafts->blocks_ = drafts->owned_blocks_.get();
    drafts->layers_ = config.num_layers;
    drafts->description_ = o.model_dir + " (" + dtype_text + ")";
  }
  if (o.ngram != 0 && drafts->layers_ != 0) drafts->description_ += ", staged with an n-gram of order " + std::to_string(o.ngram);
  return drafts;
}

std::unique_ptr<DraftSource> Drafts::make(std::int64_t capacity) const {
  if (layers_ == 0) return std::make_unique<NgramDraft>(ngram_);
  return std::make_unique<ModelDraft>(*blocks_, layers_, *ends_, capacity, ModelDraft::kWidth, ModelDraft::kGuesses, ngram_);
}

std::int64_t Drafts::weight_bytes() const {
  return (owned_blocks_ ? owned_blocks_->weight_bytes() : 0) + (owned_ends_ ? owned_ends_->weight_bytes() : 0);
}

}  // namespace sepal::tools
