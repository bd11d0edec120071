// Speculative decoding: tree attention equals sequential attention bit for bit, a tree step's
// kept path equals the same tokens run one by one, and generation with every draft source gives
// exactly the ids of generation without one (greedy against the float64 references, sampled for
// many seeds); sampled tokens follow the target's distribution (chi-square), and a verifier that
// trusts the draft fails that test.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <map>
#include <memory>

#include "kernels/attention.h"
#include "kernels/cpu_isa.h"
#include "kernels/error.h"
#include "model/draft_source.h"
#include "model/generation.h"
#include "model/guess_policy.h"
#include "model/model_config.h"
#include "tests/test_util.h"

namespace sepal {
namespace {

// ---- tree attention ----

TEST(TreeAttention, EachNodeEqualsItsPathRunAsASequence) {
  // A tree of 7 nodes: 0 -> {1, 2}, 1 -> {3, 4}, 2 -> {5}, 4 -> {6}; another root-level node.
  const std::vector<std::int32_t> parents = {-1, 0, 0, 1, 1, 2, 4, -1};
  const auto nodes = static_cast<std::int64_t>(parents.size());
  for (const std::int64_t hd : {64, 24}) {  // a width with AVX-512 rows and one without
    for (const std::int64_t start : {0, 5, 16, 37}) {
      const AttentionDims dims{4, 2, hd};
      const std::int64_t capacity = start + nodes + 4;
      const auto keys = test::random_floats(static_cast<std::size_t>(dims.kv_heads * capacity * hd), 11 + start);
      const auto values = test::random_floats(keys.size(), 12 + start);
      const auto q = test::random_floats(static_cast<std::size_t>(nodes * dims.heads * hd), 13 + start);
      std::vector<float> out(q.size());
      attention_tree(q.data(), 0, nodes, start, parents.data(), keys.data(), values.data(), capacity, dims, out.data());
      // The same in two calls (nodes [0, 3) then [3, nodes)).
      std::vector<float> split(q.size());
      attention_tree(q.data(), 0, 3, start, parents.data(), keys.data(), values.data(), capacity, dims, split.data());
      attention_tree(q.data() + 3 * dims.heads * hd, 3, nodes - 3, start, parents.data(), keys.data(), values.data(), capacity,
                     dims, split.data() + 3 * dims.heads * hd);
      EXPECT_EQ(out, split);
      for (std::int64_t t = 0; t < nodes; ++t) {
        std::vector<std::int64_t> path;
        for (std::int64_t i = t; i >= 0; i = parents[static_cast<std::size_t>(i)]) path.insert(path.begin(), i);
        // A cache holding the sequence and then the path, in order.
        std::vector<float> k2(keys.size()), v2(values.size());
        for (std::int64_t h = 0; h < dims.kv_heads; ++h) {
          auto copy_row = [&](std::int64_t from, std::int64_t to) {
            std::copy_n(keys.begin() + (h * capacity + from) * hd, hd, k2.begin() + (h * capacity + to) * hd);
            std::copy_n(values.begin() + (h * capacity + from) * hd, hd, v2.begin() + (h * capacity + to) * hd);
          };
          for (std::int64_t p = 0; p < start; ++p) copy_row(p, p);
          for (std::size_t i = 0; i < path.size(); ++i) copy_row(start + path[i], start + static_cast<std::int64_t>(i));
        }
        const std::int64_t position = start + static_cast<std::int64_t>(path.size()) - 1;
        std::vector<float> one(static_cast<std::size_t>(dims.heads * hd));
        attention_causal(q.data() + t * dims.heads * hd, 1, position, k2.data(), v2.data(), capacity, dims, one.data());
        EXPECT_TRUE(std::equal(one.begin(), one.end(), out.begin() + t * dims.heads * hd))
            << "node " << t << ", start " << start << ", head_dim " << hd;
      }
    }
  }
  std::vector<float> any(64 * 4);
  const std::vector<std::int32_t> bad = {-1, 1};
  EXPECT_THROW(attention_tree(any.data(), 0, 2, 0, bad.data(), any.data(), any.data(), 8, AttentionDims{1, 1, 64}, any.data()),
               Error);
}

// ---- model level ----

class Speculative : public ::testing::Test {
 protected:
  void load(const std::string& model, const WeightLoading& loading = DType::kF32) {
    dir_ = test::models_dir() / model;
    config_ = read_model_config(dir_);
    checkpoint_ = std::make_unique<Checkpoint>(Checkpoint::open(dir_));
    ends_ = std::make_unique<ModelEnds>(ModelEnds::load(*checkpoint_, config_, loading));
    blocks_ = std::make_unique<BlockStack>(BlockStack::load(*checkpoint_, config_, 0, config_.num_layers, loading));
  }
  GenerationResult run(const GenerationRequest& request, const Speculation* speculation = nullptr) {
    LocalPipeline pipeline(*blocks_, session_capacity(config_, request));
    return generate(*ends_, pipeline, request, [](std::int32_t) {}, speculation);
  }
  std::filesystem::path dir_;
  ModelConfig config_;
  std::unique_ptr<Checkpoint> checkpoint_;
  std::unique_ptr<ModelEnds> ends_;
  std::unique_ptr<BlockStack> blocks_;
};

TEST_F(Speculative, KeptPathEqualsTheTokensRunOneByOne) {
  for (const DType kv_dtype : {DType::kF32, DType::kBF16}) {  // the caches' element type
    SCOPED_TRACE(dtype_name(kv_dtype));
    WeightLoading loading(DType::kF32);
    loading.kv_dtype = kv_dtype;
    load("stories260K", loading);
    const std::vector<std::int32_t> prompt = {1, 403, 407, 261, 378};
    const std::vector<std::int32_t> tokens = {432, 383, 300, 301, 290, 412};
    const std::vector<std::int32_t> parents = {-1, 0, 0, 2, 1, 4};  // path 0 -> 1 -> 4 -> 5
    auto embed = [&](std::span<const std::int32_t> ids) {
      std::vector<float> h(ids.size() * config_.hidden_size);
      ends_->embed(ids.data(), static_cast<std::int64_t>(ids.size()), h.data());
      return h;
    };
    KvCache tree_cache = blocks_->new_cache(32), line_cache = blocks_->new_cache(32);
    auto p1 = embed(prompt), p2 = embed(prompt);
    blocks_->forward(p1.data(), 5, tree_cache);
    blocks_->forward(p2.data(), 5, line_cache);
    auto tree = embed(tokens);
    blocks_->forward_tree(tree.data(), 6, parents, tree_cache, 0);
    EXPECT_EQ(tree_cache.length(), 5);
    const std::vector<std::int32_t> path = {0, 1, 4, 5};
    std::vector<float> line;
    for (const std::int32_t node : path) {
      auto one = embed(std::span(&tokens[static_cast<std::size_t>(node)], 1));
      blocks_->forward(one.data(), 1, line_cache);
      const float* row = tree.data() + node * config_.hidden_size;
      EXPECT_TRUE(std::equal(one.begin(), one.end(), row)) << "node " << node;
    }
    tree_cache.keep_path(path);
    ASSERT_EQ(tree_cache.length(), 9);
    // The next step after the kept path computes what it computes after the sequence.
    auto a = embed(std::vector<std::int32_t>{290}), b = a;
    blocks_->forward(a.data(), 1, tree_cache);
    blocks_->forward(b.data(), 1, line_cache);
    EXPECT_EQ(a, b);
    EXPECT_THROW(blocks_->forward_tree(tree.data(), 2, std::vector<std::int32_t>{-1, 1}, tree_cache, 0), Error);
  }
}

TEST_F(Speculative, GreedyIdsAreTheReferencesWithEveryDraft) {
  for (const std::string model : {"stories260K", "tinystories-656K"}) {
    load(model);
    const auto reference = test::greedy_reference(model);
    GenerationRequest request;
    request.prompt_ids = reference.prompt_ids;
    request.max_new_tokens = reference.max_new_tokens;
    const BlockStack first_block = BlockStack::load(*checkpoint_, config_, 0, 1, DType::kF32);
    const BlockStack int8_self = BlockStack::load(*checkpoint_, config_, 0, config_.num_layers, DType::kI8);
    const std::int64_t capacity = session_capacity(config_, request);
    struct Source {
      std::string name;
      std::unique_ptr<DraftSource> draft;
    };
    std::vector<Source> sources;
    sources.push_back({"ngram 3", std::make_unique<NgramDraft>(3)});
    sources.push_back({"first block", std::make_unique<ModelDraft>(first_block, 1, *ends_, capacity)});
    sources.push_back({"itself in int8", std::make_unique<ModelDraft>(int8_self, config_.num_layers, *ends_, capacity)});
    sources.push_back({"first block, guessing nothing", std::make_unique<ModelDraft>(first_block, 1, *ends_, capacity, ModelDraft::kWidth, 0)});
    sources.push_back({"first block, staged",
                       std::make_unique<ModelDraft>(first_block, 1, *ends_, capacity, ModelDraft::kWidth, ModelDraft::kGuesses, 3)});
    sources.push_back({"itself in int8, staged", std::make_unique<ModelDraft>(int8_self, config_.num_layers, *ends_, capacity,
                                                                              ModelDraft::kWidth, ModelDraft::kGuesses, 2)});
    for (auto& source : sources) {
      for (const std::int64_t tree_size : {1, 4, 16}) {
        Speculation speculation{source.draft.get(), tree_size, {}};
        const auto result = run(request, &speculation);
        EXPECT_EQ(result.generated_ids, reference.generated_ids) << model << ", " << source.name << ", tree " << tree_size;
        std::int64_t steps = 0, tokens = 0;
        for (std::size_t k = 0; k < result.tokens_per_step.size(); ++k) {
          steps += result.tokens_per_step[k];
          tokens += static_cast<std::int64_t>(k) * result.tokens_per_step[k];
        }
        EXPECT_EQ(tokens + 1, static_cast<std::int64_t>(result.generated_ids.size()));  // the first comes from the prompt
        if (tree_size == 1) {
          EXPECT_EQ(steps, tokens);  // a root alone yields one token a step
        }
        if (source.name == "itself in int8" && tree_size == 16) {
          EXPECT_LT(steps * 3, tokens) << model << ": the model's own int8 copy should be right most of the time";
        }
      }
    }
  }
}

// A staged draft (an n-gram guessing the model draft's own decoding) that checks every tree it
// proposes against an unstaged copy of the same draft, and that both keep the same sequence.
class ComparedDraft final : public DraftSource {
 public:
  ComparedDraft(ModelDraft& staged, ModelDraft& plain) : staged_(staged), plain_(plain) {}
  void start(std::span<const std::int32_t> prompt) override {
    staged_.start(prompt);
    plain_.start(prompt);
  }
  TokenTree propose(std::int32_t root, std::int64_t size) override {
    TokenTree tree = staged_.propose(root, size);
    const TokenTree other = plain_.propose(root, size);
    EXPECT_EQ(tree.tokens, other.tokens);
    EXPECT_EQ(tree.parents, other.parents);
    EXPECT_EQ(tree.mass, other.mass);
    EXPECT_EQ(tree.next_guess, other.next_guess);
    ++trees;
    return tree;
  }
  void keep(std::span<const std::int32_t> path) override {
    staged_.keep(path);
    plain_.keep(path);
    EXPECT_EQ(staged_.length(), plain_.length());
  }
  std::int64_t length() const override { return staged_.length(); }
  void rewind(std::int64_t length, std::span<const std::int32_t> tokens) override {
    staged_.rewind(length, tokens);
    plain_.rewind(length, tokens);
  }
  std::int64_t trees = 0;

 private:
  ModelDraft& staged_;
  ModelDraft& plain_;
};

TEST_F(Speculative, GuessingDraftsGrowTheSameTreesInFewerSteps) {
  for (const char* model : {"stories260K", "tinystories-656K"}) {
    load(model);
    const auto reference = test::greedy_reference(model);
    GenerationRequest request;
    request.prompt_ids = reference.prompt_ids;
    request.max_new_tokens = reference.max_new_tokens;
    const std::int64_t capacity = session_capacity(config_, request);
    const BlockStack first_block = BlockStack::load(*checkpoint_, config_, 0, 1, DType::kF32);
    for (const std::int64_t tree_size : {4, 16, 48}) {
      std::int64_t steps[3] = {};
      for (const std::int64_t stage_two : {0, 3}) {
        // Every guess runs: the step counts do not depend on how fast this machine is just now.
        ModelDraft guessing(first_block, 1, *ends_, capacity, ModelDraft::kWidth, ModelDraft::kGuesses, stage_two,
                            /*learning=*/false);
        ModelDraft plain(first_block, 1, *ends_, capacity, ModelDraft::kWidth, 0);
        ComparedDraft compared(guessing, plain);
        Speculation speculation{&compared, tree_size, {}};
        EXPECT_EQ(run(request, &speculation).generated_ids, reference.generated_ids) << model << ", tree " << tree_size;
        ASSERT_GT(compared.trees, 0);
        steps[0] = plain.steps();
        steps[stage_two == 0 ? 1 : 2] = guessing.steps();
      }
      std::cout << model << ", trees of " << tree_size << ": " << steps[0] << " draft steps guessing nothing, " << steps[1]
                << " guessing wide, " << steps[2] << " wide and deep (n-gram)\n";
      EXPECT_LE(steps[1], steps[0]) << model << ", tree " << tree_size;
      EXPECT_LE(steps[2], steps[0]) << model << ", tree " << tree_size;
      // Where the first block is unsure, the tree grows wide and the wide guesses are taken.
      if (std::string(model) == "tinystories-656K" && tree_size > 4) {
        EXPECT_LT(steps[1] * 2, steps[0]) << "tree " << tree_size;
      }
    }
  }
}

TEST_F(Speculative, SampledIdsAreThoseWithoutSpeculationForEverySeed) {
  load("tinystories-656K");
  GenerationRequest request;
  request.prompt_ids = {1, 403, 407, 261};
  request.max_new_tokens = 40;
  request.sampling = SamplingParams{0.9f, 0, 0.95f};
  for (std::uint64_t seed = 1; seed <= 12; ++seed) {
    request.seed = seed;
    const auto plain = run(request);
    NgramDraft ngram(4);
    ModelDraft early(*blocks_, 2, *ends_, session_capacity(config_, request));
    ModelDraft staged(*blocks_, 1, *ends_, session_capacity(config_, request), ModelDraft::kWidth, ModelDraft::kGuesses, 3);
    for (DraftSource* draft : std::initializer_list<DraftSource*>{&ngram, &early, &staged}) {
      Speculation speculation{draft, 8, {}};
      EXPECT_EQ(run(request, &speculation).generated_ids, plain.generated_ids) << "seed " << seed;
    }
  }
}

// Logit biases and presence and frequency penalties: each greedy choice is the argmax of the
// model's logits (as the observer sees them) with the bias added and the penalties of the tokens
// generated before it taken off; with a draft the ids are the same, sampled ones too.
TEST_F(Speculative, LogitAdjustmentsChangeEveryChoiceAsOpenAIDefinesThem) {
  load("tinystories-656K");
  GenerationRequest request;
  request.prompt_ids = {1, 403, 407, 261};
  request.max_new_tokens = 40;
  const auto plain = run(request);
  request.adjustments = LogitAdjustments{{{plain.generated_ids[0], -100.0f}, {13, 1.5f}}, 0.4f, 0.7f};
  std::vector<std::vector<float>> seen;
  LocalPipeline pipeline(*blocks_, session_capacity(config_, request));
  const auto adjusted = generate(*ends_, pipeline, request, [](std::int32_t) {}, nullptr,
                                 [&](std::int32_t, const float* logits) { seen.emplace_back(logits, logits + config_.vocab_size); });
  ASSERT_EQ(seen.size(), adjusted.generated_ids.size());
  EXPECT_NE(adjusted.generated_ids[0], plain.generated_ids[0]);
  std::map<std::int32_t, int> counts;
  for (std::size_t step = 0; step < seen.size(); ++step) {
    std::vector<double> x(seen[step].begin(), seen[step].end());
    x[static_cast<std::size_t>(plain.generated_ids[0])] -= 100.0;
    x[13] += 1.5;
    for (const auto& [id, n] : counts) x[static_cast<std::size_t>(id)] -= 0.4 + 0.7 * n;
    const auto best = static_cast<std::int32_t>(std::max_element(x.begin(), x.end()) - x.begin());
    EXPECT_EQ(adjusted.generated_ids[step], best) << "step " << step;
    ++counts[adjusted.generated_ids[step]];
  }
  EXPECT_NE(adjusted.generated_ids, plain.generated_ids);
  for (const float temperature : {0.0f, 0.9f}) {
    request.sampling = SamplingParams{temperature, 0, 0.95f};
    request.seed = 5;
    const auto without = run(request);
    ModelDraft draft(*blocks_, 2, *ends_, session_capacity(config_, request));
    Speculation speculation{&draft, 8, {}};
    EXPECT_EQ(run(request, &speculation).generated_ids, without.generated_ids) << "temperature " << temperature;
  }
  request.adjustments.bias = {{static_cast<std::int32_t>(config_.vocab_size), 1.0f}};
  EXPECT_THROW(run(request), Error);
}

// The target's probability of each (first, second) token pair under top-k sampling, and the
// chi-square statistic of `counts` (of `total` samples) against it.
double chi_square(const std::map<std::pair<int, int>, double>& expected, const std::map<std::pair<int, int>, int>& counts,
                  int total) {
  double chi = 0.0;
  for (const auto& [cell, p] : expected) {
    const auto it = counts.find(cell);
    const double observed = it == counts.end() ? 0.0 : it->second;
    chi += (observed - p * total) * (observed - p * total) / (p * total);
  }
  for (const auto& [cell, n] : counts) {
    if (!expected.count(cell)) chi += 1e9;  // a pair the target never produces
  }
  return chi;
}

TEST_F(Speculative, SampledTokensFollowTheTargetDistributionAndATrustingVerifierDoesNot) {
  load("stories260K");
  GenerationRequest request;
  request.prompt_ids = {1, 403, 407, 261, 378};
  request.max_new_tokens = 2;
  request.sampling = SamplingParams{1.0f, 3, 1.0f};
  // The exact joint distribution of the two tokens: p(a) p(b | a) over the top 3 of each.
  auto top_probabilities = [&](const std::vector<std::int32_t>& ids) {
    LocalPipeline pipeline(*blocks_, static_cast<std::int64_t>(ids.size()));
    std::vector<float> h(ids.size() * config_.hidden_size), logits(config_.vocab_size);
    ends_->embed(ids.data(), static_cast<std::int64_t>(ids.size()), h.data());
    pipeline.forward(h.data(), static_cast<std::int64_t>(ids.size()));
    ends_->logits(h.data() + (ids.size() - 1) * config_.hidden_size, 1, logits.data());
    auto top = top_candidates(logits.data(), config_.vocab_size, 3);
    double sum = 0.0;
    for (const auto& c : top) sum += c.second;
    for (auto& c : top) c.second /= sum;
    return top;
  };
  std::map<std::pair<int, int>, double> expected;
  for (const auto& [a, pa] : top_probabilities(request.prompt_ids)) {
    auto ids = request.prompt_ids;
    ids.push_back(a);
    for (const auto& [b, pb] : top_probabilities(ids)) expected[{a, b}] = pa * pb;
  }
  ASSERT_EQ(expected.size(), 9u);
  const BlockStack first_block = BlockStack::load(*checkpoint_, config_, 0, 1, DType::kF32);
  // Accepts the draft's likeliest child with the draft's probability, without asking the target.
  const TreeTokenChooser trusting = [](const float* logits, std::int64_t vocab, const TokenTree& tree, std::int32_t node,
                                       const SamplingParams& sampling, Rng& rng) {
    for (std::size_t c = static_cast<std::size_t>(node) + 1; c < tree.tokens.size(); ++c) {
      if (tree.parents[c] != node) continue;
      if (rng.uniform() < tree.mass[c] / tree.mass[static_cast<std::size_t>(node)]) return tree.tokens[c];
      break;
    }
    return sample_token(logits, vocab, sampling, rng);
  };
  constexpr int kSamples = 3000;
  // Chi-square critical value for 8 degrees of freedom at p = 0.001.
  constexpr double kCritical = 26.12;
  for (const bool exact : {true, false}) {
    std::map<std::pair<int, int>, int> counts;
    for (int s = 0; s < kSamples; ++s) {
      request.seed = 1000 + static_cast<std::uint64_t>(s);
      ModelDraft draft(first_block, 1, *ends_, session_capacity(config_, request), 3);
      Speculation speculation{&draft, 6, exact ? TreeTokenChooser{} : trusting};
      const auto ids = run(request, &speculation).generated_ids;
      ASSERT_EQ(ids.size(), 2u);
      ++counts[{ids[0], ids[1]}];
    }
    const double chi = chi_square(expected, counts, kSamples);
    if (exact) {
      EXPECT_LT(chi, kCritical) << "speculative sampling left the target's distribution";
    } else {
      EXPECT_GT(chi, kCritical) << "the chi-square test does not catch a verifier that trusts the draft";
    }
  }
}

TEST(GuessPolicy, GuessesWhatPaysForItself) {
  // Steps of 1 row take 1 ms and each more row 0.1 ms: a guess pays when the tree takes more than
  // 0.1 / 1.1 of them. Kind 0's are taken 3 times in 4, kind 1's 1 in 50.
  GuessPolicy policy(2);
  for (int step = 0; step < 200; ++step) {
    const std::int64_t rows = step % 3 == 0 ? 9 : 1;
    policy.ran(rows, 1e-3 + 1e-4 * static_cast<double>(rows - 1));
    policy.guessed(0, step % 4 != 0);
    policy.guessed(1, step % 50 == 0);
  }
  EXPECT_NEAR(policy.row_seconds(), 1e-4, 1e-6);
  EXPECT_NEAR(policy.step_seconds(), 0.9e-3, 1e-6);
  policy.ran(1, 1e-3);  // a step that is not an exploring one (201 is not a multiple of 16)
  EXPECT_TRUE(policy.worth(0));
  EXPECT_FALSE(policy.worth(1));
  // Where a row costs as much as a step (arithmetic-bound), even kind 0 does not pay.
  GuessPolicy dear(1);
  for (int step = 0; step < 200; ++step) {
    const std::int64_t rows = step % 3 == 0 ? 9 : 1;
    dear.ran(rows, 1e-3 * static_cast<double>(rows));
    dear.guessed(0, step % 4 != 0);
  }
  dear.ran(1, 1e-3);
  EXPECT_FALSE(dear.worth(0));
  // Not learning: everything runs.
  EXPECT_TRUE(GuessPolicy(1, false).worth(0));
}

TEST(TokenTrees, TheLikeliestOutcomeIsWhereTheDraftExpectsTheWalkToStop) {
  // 0 -> 1 (0.7) -> 3 (0.6); 0 -> 2 (0.2). Stops: root 1 - 0.9 = 0.1, node 1 0.7 - 0.6 = 0.1,
  // node 2 0.2, node 3 0.6 but not expanded (no next guess).
  TokenTree tree{{10, 11, 12, 13}, {-1, 0, 0, 1}, {1.0, 0.7, 0.2, 0.6}, {20, 21, 22, -1}};
  std::optional<TreeOutcome> outcome = likely_outcome(tree);
  ASSERT_TRUE(outcome.has_value());
  EXPECT_EQ(outcome->path, (std::vector<std::int32_t>{0, 2}));
  EXPECT_EQ(outcome->next, 22);
  tree.next_guess[3] = 23;  // now node 3 counts: 0.6
  outcome = likely_outcome(tree);
  EXPECT_EQ(outcome->path, (std::vector<std::int32_t>{0, 1, 3}));
  EXPECT_EQ(outcome->next, 23);
  tree.next_guess.clear();
  EXPECT_FALSE(likely_outcome(tree).has_value());
  // grow_tree records each expanded node's best candidate that did not become a child.
  const TokenTree grown = grow_tree(5, 3, [](const TokenTree&, std::int32_t node) {
    return DraftCandidates{{node == 0 ? 6 : 8, 0.5}, {7, 0.3}, {9, 0.2}};
  });
  // Root: 6 (0.5) and 7 (0.3) become children, 9 does not; node 1 (token 6): 8 (0.25) does not.
  EXPECT_EQ(grown.tokens, (std::vector<std::int32_t>{5, 6, 7}));
  EXPECT_EQ(grown.next_guess, (std::vector<std::int32_t>{9, 8, -1}));
}

TEST_F(Speculative, ARewoundDraftProposesAsOneThatKeptThoseTokens) {
  load("stories260K");
  const std::vector<std::int32_t> prompt = {1, 403, 407, 261, 403, 407, 261};
  for (const bool ngram : {true, false}) {
    SCOPED_TRACE(ngram ? "n-gram" : "model");
    auto make = [&]() -> std::unique_ptr<DraftSource> {
      if (ngram) return std::make_unique<NgramDraft>(3);
      return std::make_unique<ModelDraft>(*blocks_, 2, *ends_, 64);
    };
    // `a` keeps a path it guessed, then rewinds to the tokens kept instead; `b` keeps those.
    auto a = make(), b = make();
    a->start(prompt);
    b->start(prompt);
    const TokenTree ta = a->propose(403, 8), tb = b->propose(403, 8);
    ASSERT_EQ(ta.tokens, tb.tokens);
    const std::int64_t length = a->length();
    std::vector<std::int32_t> deepest = {0};
    while (true) {
      std::int32_t child = -1;
      for (std::int32_t i = 0; i < ta.size(); ++i) {
        if (ta.parents[static_cast<std::size_t>(i)] == deepest.back()) child = i;
      }
      if (child < 0) break;
      deepest.push_back(child);
    }
    a->keep(deepest);
    (void)a->propose(17, 8);
    a->rewind(length, std::vector<std::int32_t>{403});
    b->keep(std::vector<std::int32_t>{0});
    EXPECT_EQ(a->length(), b->length());
    const TokenTree ra = a->propose(407, 8), rb = b->propose(407, 8);
    EXPECT_EQ(ra.tokens, rb.tokens);
    EXPECT_EQ(ra.parents, rb.parents);
    EXPECT_THROW(a->rewind(a->length() + 1, {}), Error);
  }
}

TEST_F(Speculative, EachTreeRowsLogitsAreItsLogitsAlone) {
  for (const DType dtype : {DType::kF32, DType::kBF16, DType::kI8}) {
    load("stories260K", dtype);
    const std::int64_t h = config_.hidden_size, vocab = config_.vocab_size, n = 11;
    std::vector<float> hidden(static_cast<std::size_t>(n * h));
    for (std::size_t i = 0; i < hidden.size(); ++i) hidden[i] = std::sin(0.37f * static_cast<float>(i)) * (i % 13 == 0 ? 9.f : 1.f);
    std::vector<float> all(static_cast<std::size_t>(n * vocab)), one(static_cast<std::size_t>(vocab));
    ends_->logits_each_alone(hidden.data(), n, all.data());
    for (std::int64_t t = 0; t < n; ++t) {
      ends_->logits(hidden.data() + t * h, 1, one.data());
      EXPECT_TRUE(std::equal(one.begin(), one.end(), all.begin() + t * vocab)) << dtype_name(dtype) << " row " << t;
    }
  }
}

TEST_F(Speculative, Int8TargetsGiveTheirOwnDecodingIds) {
  // Greedy and sampled, with an n-gram draft and with the model's own int8 weights as the draft
  // (long paths accepted, trees wider than a decode product).
  load("stories260K", DType::kI8);
  GenerationRequest request;
  request.prompt_ids = {1, 403, 407, 261};
  request.max_new_tokens = 80;
  for (std::uint64_t seed = 0; seed <= 4; ++seed) {
    request.seed = seed;
    request.sampling = seed == 0 ? SamplingParams{} : SamplingParams{0.8f, 0, 1.0f};
    const auto plain = run(request);
    NgramDraft ngram(3);
    ModelDraft self(*blocks_, config_.num_layers, *ends_, session_capacity(config_, request));
    for (DraftSource* draft : std::initializer_list<DraftSource*>{&ngram, &self}) {
      Speculation speculation{draft, 24, {}};
      EXPECT_EQ(run(request, &speculation).generated_ids, plain.generated_ids) << "seed " << seed;
    }
  }
}

TEST_F(Speculative, RefusesWhatCannotWork) {
  load("stories260K");
  GenerationRequest request;
  request.prompt_ids = {1, 403};
  request.max_new_tokens = 5;
  Speculation none{nullptr, 4, {}};
  EXPECT_THROW(run(request, &none), Error);
  NgramDraft ngram(3);
  Speculation zero{&ngram, 0, {}};
  EXPECT_THROW(run(request, &zero), Error);
  EXPECT_THROW(NgramDraft(1), Error);
}

TEST_F(Speculative, StopsWhereDecodingWithoutADraftStops) {
  load("stories260K");
  GenerationRequest request;
  request.prompt_ids.assign(static_cast<std::size_t>(config_.max_position_embeddings - 6), 403);
  request.prompt_ids[0] = 1;
  request.max_new_tokens = 50;  // the positions run out first
  const auto plain = run(request);
  NgramDraft ngram(3);
  Speculation speculation{&ngram, 16, {}};
  const auto fast = run(request, &speculation);
  EXPECT_EQ(fast.generated_ids, plain.generated_ids);
  EXPECT_EQ(fast.stop, plain.stop);
  EXPECT_EQ(plain.stop, StopReason::kMaxPositions);
}

}  // namespace
}  // namespace sepal
