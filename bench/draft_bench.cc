// The draft's own cost in speculative decoding (model/draft_source.h): a greedy generation with a
// model draft that guesses nothing, one that guesses wide (the candidates the tree takes next)
// and one staged with an n-gram second stage, each with the same trees (checked), timed in the
// same run, rounds interleaved, best of --rounds. Prints the draft's seconds and steps and the
// ratios against the draft that guesses nothing; writes a CSV row per draft and tree size.
//
//   build/bin/draft_bench --model-dir DIR [--draft-dtype int8] [--draft-layers K] [--tokens 200]
//                         [--tree-sizes 4,8,16,32] [--rounds 3] [--csv bench/results/draft.csv]

#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "kernels/cpu_isa.h"
#include "kernels/error.h"
#include "kernels/parallel.h"
#include "model/draft_source.h"
#include "model/generation.h"
#include "model/model_config.h"
#include "model/tokenizer.h"

namespace {

using namespace sepal;
using Clock = std::chrono::steady_clock;

// Times what generation asks of a draft.
class TimedDraft final : public DraftSource {
 public:
  explicit TimedDraft(ModelDraft& draft) : draft_(draft) {}
  void start(std::span<const std::int32_t> prompt) override { draft_.start(prompt); }
  TokenTree propose(std::int32_t root, std::int64_t size) override {
    const auto t = Clock::now();
    TokenTree tree = draft_.propose(root, size);
    seconds += std::chrono::duration<double>(Clock::now() - t).count();
    trees.push_back(tree.tokens);
    return tree;
  }
  void keep(std::span<const std::int32_t> path) override {
    const auto t = Clock::now();
    draft_.keep(path);
    seconds += std::chrono::duration<double>(Clock::now() - t).count();
  }
  std::int64_t length() const override { return draft_.length(); }
  void rewind(std::int64_t length, std::span<const std::int32_t> tokens) override { draft_.rewind(length, tokens); }
  double seconds = 0.0;
  std::vector<std::vector<std::int32_t>> trees;

 private:
  ModelDraft& draft_;
};

}  // namespace

int main(int argc, char** argv) {
  namespace po = boost::program_options;
  std::string model_dir, csv = "bench/results/draft.csv", draft_dtype = "int8", sizes = "4,8,16,32";
  std::string prompt = "Once upon a time, there was a little girl who";
  int rounds = 3;
  std::int64_t tokens = 200, layers = 0, order = 3;
  po::options_description options("draft_bench: a model draft's time, guessing nothing against guessing wide and staged");
  options.add_options()("help,h", "show this help")("model-dir", po::value(&model_dir)->required(), "model folder")(
      "draft-dtype", po::value(&draft_dtype)->default_value(draft_dtype), "the draft's weights: f32, bf16 or int8")(
      "draft-layers", po::value(&layers)->default_value(0), "the draft is the first K blocks (0: all of them)")(
      "ngram", po::value(&order)->default_value(order), "order of the second stage's n-gram")(
      "tokens", po::value(&tokens)->default_value(tokens), "tokens to generate")(
      "prompt", po::value(&prompt)->default_value(prompt), "prompt")(
      "tree-sizes", po::value(&sizes)->default_value(sizes), "tree sizes, comma-separated")(
      "rounds", po::value(&rounds)->default_value(3), "repetitions (best taken)")(
      "csv", po::value(&csv)->default_value(csv), "CSV to write");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, options), vm);
    if (vm.count("help")) {
      std::cout << options << "\n";
      return 0;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    std::fprintf(stderr, "draft_bench: %s\n", e.what());
    return 2;
  }
  const auto dtype = parse_dtype(draft_dtype);
  if (!dtype || rounds < 1 || tokens < 1 || order < 2) {
    std::fprintf(stderr, "draft_bench: bad --draft-dtype, --rounds, --tokens or --ngram\n");
    return 2;
  }
  try {
    const ModelConfig config = read_model_config(model_dir);
    if (layers < 0 || layers > config.num_layers) throw Error("--draft-layers must be between 0 and the model's blocks");
    const std::int64_t draft_blocks = layers == 0 ? config.num_layers : layers;
    const Checkpoint checkpoint = Checkpoint::open(model_dir);
    const ModelEnds ends = ModelEnds::load(checkpoint, config, DType::kF32);
    const BlockStack target = BlockStack::load(checkpoint, config, 0, config.num_layers, DType::kF32);
    const BlockStack draft_stack = BlockStack::load(checkpoint, config, 0, draft_blocks, WeightLoading(*dtype));
    GenerationRequest request;
    if (config.bos_token_id >= 0) request.prompt_ids.push_back(config.bos_token_id);
    for (const std::int32_t id : load_tokenizer(model_dir)->encode(prompt)) request.prompt_ids.push_back(id);
    request.max_new_tokens = tokens;
    const std::int64_t capacity = session_capacity(config, request);
    std::printf("draft: %s, %lld of %lld blocks at %s; %lld tokens greedy; %s, %d threads\n", model_dir.c_str(),
                static_cast<long long>(draft_blocks), static_cast<long long>(config.num_layers), draft_dtype.c_str(),
                static_cast<long long>(tokens), std::string(cpu_isa_name(active_cpu_isa())).c_str(), compute_threads());
    std::ofstream out(csv);
    out << "tree_size,draft,draft_seconds,draft_steps,trees,seconds_over_guessing_nothing,steps_over_guessing_nothing\n";
    struct Variant {
      const char* name;
      std::int64_t guesses, stage_two;
    };
    const Variant variants[] = {{"guessing nothing", 0, 0}, {"guessing wide", ModelDraft::kGuesses, 0},
                                {"wide + n-gram stage", ModelDraft::kGuesses, order}};
    std::stringstream list(sizes);
    std::string item;
    while (std::getline(list, item, ',')) {
      const std::int64_t size = std::stoll(item);
      double best[3] = {1e30, 1e30, 1e30};
      std::int64_t steps[3] = {}, trees[3] = {};
      std::vector<std::vector<std::int32_t>> first_trees;
      for (int r = 0; r < rounds; ++r) {
        for (int v = 0; v < 3; ++v) {
          ModelDraft draft(draft_stack, draft_blocks, ends, capacity, ModelDraft::kWidth, variants[v].guesses,
                           variants[v].stage_two);
          TimedDraft timed(draft);
          LocalPipeline pipeline(target, capacity);
          const Speculation speculation{&timed, size, {}};
          generate(ends, pipeline, request, [](std::int32_t) {}, &speculation);
          if (v == 0) first_trees = timed.trees;
          if (timed.trees != first_trees) throw Error("the drafts grew different trees");
          best[v] = std::min(best[v], timed.seconds);
          steps[v] = draft.steps();
          trees[v] = static_cast<std::int64_t>(timed.trees.size());
        }
      }
      for (int v = 0; v < 3; ++v) {
        std::printf("  trees of %3lld, %-20s %.4f s (%.3f of guessing nothing), %5lld steps (%.3f) for %lld trees\n",
                    static_cast<long long>(size), variants[v].name, best[v], best[v] / best[0],
                    static_cast<long long>(steps[v]), static_cast<double>(steps[v]) / static_cast<double>(steps[0]),
                    static_cast<long long>(trees[v]));
        out << size << "," << variants[v].name << "," << best[v] << "," << steps[v] << "," << trees[v] << ","
            << best[v] / best[0] << "," << static_cast<double>(steps[v]) / static_cast<double>(steps[0]) << "\n";
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "draft_bench: %s\n", e.what());
    return 1;
  }
  std::printf("wrote %s\n", csv.c_str());
  return 0;
}
