// The draft decoder actor (stories260K, a real model draft and an n-gram draft, in one process):
// its trees are a local draft's, whether it guessed the verification's outcome right (the
// prepared tree is served) or wrong (it rewinds to the kept path); generation through it gives
// the reference text; requests that do not fit are refused and the decoder goes on.
#include <gtest/gtest.h>

#include "actors/blocking_facade.h"
#include "actors/draft_decoder.h"
#include "model/generation.h"
#include "runtime/inproc_transport.h"
#include "tests/test_util.h"

namespace sepal {
namespace {

using namespace std::chrono_literals;

class DraftDecoderTest : public ::testing::Test {
 protected:
  DraftDecoderTest()
      : config_(read_model_config(test::models_dir() / "stories260K")),
        checkpoint_(Checkpoint::open(test::models_dir() / "stories260K")),
        ends_(ModelEnds::load(checkpoint_, config_, DType::kF32)),
        blocks_(BlockStack::load(checkpoint_, config_, 0, config_.num_layers, DType::kF32)),
        draft_blocks_(BlockStack::load(checkpoint_, config_, 0, 2, DType::kF32)) {
    hub_ = InprocHub::create();
    transport_ = hub_->endpoint();
    system_ = std::make_unique<ActorSystem>(*transport_, scheduler_);
    EXPECT_TRUE(system_->start().is_ok());
  }
  ~DraftDecoderTest() override {
    system_->stop();
    scheduler_.shutdown();
  }
  // The model draft: the first 2 of 5 blocks; `ngram`: an n-gram draft of order 3.
  std::unique_ptr<DraftSource> make(std::int64_t capacity, bool ngram) {
    if (ngram) return std::make_unique<NgramDraft>(3);
    return std::make_unique<ModelDraft>(draft_blocks_, 2, ends_, capacity);
  }
  ActorRef<DraftDecoderProtocol> add(bool ngram, bool anticipate) {
    // A fresh decoder each time (kDraftDecoderActorId is for the one of a node).
    return system_->spawn<DraftDecoder>(system_->self(), [this, ngram](std::int64_t capacity) { return make(capacity, ngram); },
                                        anticipate);
  }

  ModelConfig config_;
  Checkpoint checkpoint_;
  ModelEnds ends_;
  BlockStack blocks_, draft_blocks_;
  ThreadPoolScheduler scheduler_{2};
  std::shared_ptr<InprocHub> hub_;
  std::unique_ptr<Transport> transport_;
  std::unique_ptr<ActorSystem> system_;
};

void expect_same_tree(const DraftTree& got, const TokenTree& want) {
  EXPECT_EQ(got.tokens, want.tokens);
  EXPECT_EQ(got.parents, want.parents);
  EXPECT_EQ(got.next_guess, want.next_guess);
}

TEST_F(DraftDecoderTest, PreparedAndRewoundTreesAreTheTreesOfALocalDraft) {
  for (const bool ngram : {false, true}) {
    SCOPED_TRACE(ngram ? "n-gram draft" : "model draft");
    const auto decoder = add(ngram, /*anticipate=*/true);
    const std::vector<std::int32_t> prompt = {1, 403, 407, 261, 403, 407};
    const std::int64_t capacity = 64, size = 8;
    auto local = make(capacity, ngram);
    local->start(prompt);
    auto opened = system_->request_sync(decoder, OpenDraft{prompt, capacity}, 10s);
    ASSERT_TRUE(opened.is_ok()) << opened.status().to_string();
    const std::uint64_t id = opened->draft;
    TokenTree want = local->propose(261, size);
    auto tree = system_->request_sync(decoder, ProposeTree{id, {}, 261, size}, 10s);
    ASSERT_TRUE(tree.is_ok()) << tree.status().to_string();
    expect_same_tree(tree.value(), want);
    int hits = 0, misses = 0;
    for (int step = 0; step < 6; ++step) {
      // Verification "keeps" either the decoder's own guess (a hit) or the root alone with
      // another next token (a miss), in turn.
      ASSERT_TRUE(system_->send(decoder, AnticipateTree{id}).is_ok());
      const std::optional<TreeOutcome> guess = likely_outcome(want);
      TreeOutcome outcome;
      if (guess && step % 2 == 0) {
        outcome = *guess;
      } else {
        outcome.path = {0};
        outcome.next = want.tokens[0] == 300 ? 301 : 300;
        if (guess && guess->path == outcome.path && guess->next == outcome.next) outcome.next = 302;
      }
      local->keep(outcome.path);
      want = local->propose(outcome.next, size);
      tree = system_->request_sync(decoder, ProposeTree{id, outcome.path, outcome.next, size}, 10s);
      ASSERT_TRUE(tree.is_ok()) << tree.status().to_string();
      expect_same_tree(tree.value(), want);
      (tree->anticipated ? hits : misses) += 1;
      EXPECT_EQ(tree->anticipated, guess && step % 2 == 0) << "step " << step;
    }
    if (!ngram) {
      EXPECT_GT(hits, 0);  // an n-gram draft offers few candidates: often every one is a child
    }
    EXPECT_GT(misses, 0);
    EXPECT_TRUE(system_->request_sync(decoder, CloseDraft{id}, 10s).is_ok());
  }
}

TEST_F(DraftDecoderTest, GenerationThroughItGivesTheReferenceWithAndWithoutGuessing) {
  const auto ref = test::greedy_reference("stories260K");
  GenerationRequest request;
  request.prompt_ids = ref.prompt_ids;
  request.max_new_tokens = ref.max_new_tokens;
  for (const bool anticipate : {false, true}) {
    const auto decoder = add(/*ngram=*/false, anticipate);
    LocalPipeline pipeline(blocks_, session_capacity(config_, request));
    DraftDecoderSession draft(*system_, decoder, session_capacity(config_, request));
    const Speculation speculation{&draft, 8, {}};
    const GenerationResult result = generate(ends_, pipeline, request, [](std::int32_t) {}, &speculation);
    EXPECT_EQ(result.generated_ids, ref.generated_ids) << (anticipate ? "guessing" : "not guessing");
    if (!anticipate) {
      EXPECT_EQ(draft.anticipated(), 0);
    }
  }
}

TEST_F(DraftDecoderTest, RequestsThatDoNotFitAreRefusedAndItGoesOn) {
  const auto decoder = add(/*ngram=*/true, true);
  EXPECT_EQ(system_->request_sync(decoder, OpenDraft{{}, 16}, 10s).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(system_->request_sync(decoder, OpenDraft{{1, 2, 3}, 2}, 10s).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(system_->request_sync(decoder, ProposeTree{99, {}, 5, 4}, 10s).status().code(), StatusCode::kNotFound);
  auto opened = system_->request_sync(decoder, OpenDraft{{1, 2, 3, 1, 2}, 16}, 10s);
  ASSERT_TRUE(opened.is_ok());
  const std::uint64_t id = opened->draft;
  EXPECT_EQ(system_->request_sync(decoder, ProposeTree{id, {}, 5, 0}, 10s).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(system_->request_sync(decoder, ProposeTree{id, {}, -3, 4}, 10s).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(system_->request_sync(decoder, ProposeTree{id, {0}, 3, 4}, 10s).status().code(), StatusCode::kInvalidArgument);
  auto tree = system_->request_sync(decoder, ProposeTree{id, {}, 3, 4}, 10s);
  ASSERT_TRUE(tree.is_ok()) << tree.status().to_string();
  EXPECT_EQ(tree->tokens.front(), 3);
  EXPECT_EQ(system_->request_sync(decoder, ProposeTree{id, {0, 7}, 3, 4}, 10s).status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(system_->request_sync(decoder, ProposeTree{id, {0}, 1, 4}, 10s).is_ok());
  EXPECT_TRUE(system_->request_sync(decoder, CloseDraft{id}, 10s).is_ok());
  EXPECT_EQ(system_->request_sync(decoder, CloseDraft{id}, 10s).status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace sepal
