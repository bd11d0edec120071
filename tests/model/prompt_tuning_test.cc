// Prompt tuning in one process: data files, the soft and deep prompts' gradients of the whole
// model's loss against float64 finite differences, training that lowers the loss, and HDF5
// checkpoints that resume a run exactly and refuse damaged files.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "kernels/error.h"
#include "model/prompt_trainer.h"
#include "model/tokenizer.h"
#include "model/tuning_checkpoint.h"
#include "tests/model/reference_llama.h"
#include "tests/test_util.h"

namespace sepal {
namespace {

using test::TempDir;
using test::write_file;

std::filesystem::path real_model() { return test::models_dir() / "tinystories-656K"; }

struct Model {
  ModelConfig config = read_model_config(real_model());
  Checkpoint checkpoint = Checkpoint::open(real_model());
  ModelEnds ends = ModelEnds::load(checkpoint, config, WeightLoading(DType::kF32));
  BlockStack blocks = BlockStack::load(checkpoint, config, 0, config.num_layers, WeightLoading(DType::kF32));
  std::unique_ptr<Tokenizer> tokenizer = load_tokenizer(real_model());
};

const Model& model() {
  static const Model m;
  return m;
}

std::string expect_error(const std::function<void()>& body) {
  try {
    body();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}

// ---- data ----

TEST(TuningData, JsonLinesAndPlainText) {
  const Model& m = model();
  TempDir dir;
  write_file(dir / "a.jsonl", "{\"text\": \"Once upon a time\"}\n\n{\"prompt\": \"Tom had a dog.\", \"completion\": \" He ran.\"}\n");
  const auto examples = read_examples(dir / "a.jsonl", *m.tokenizer, m.config, 512);
  ASSERT_EQ(examples.size(), 2u);
  EXPECT_EQ(examples[0].ids[0], m.config.bos_token_id);
  EXPECT_EQ(examples[0].scored_count(), static_cast<std::int64_t>(examples[0].ids.size()) - 1);
  // Only the completion's tokens are scored, and they follow the prompt's.
  const auto prompt_ids = m.tokenizer->encode("Tom had a dog.");
  const auto& e = examples[1];
  EXPECT_EQ(e.scored_count(), static_cast<std::int64_t>(e.ids.size() - 1 - prompt_ids.size()));
  for (std::size_t i = 0; i <= prompt_ids.size(); ++i) EXPECT_EQ(e.scored[i], 0) << i;
  const std::string scored_text =
      m.tokenizer->decode({e.ids.begin() + 1 + static_cast<std::ptrdiff_t>(prompt_ids.size()), e.ids.end()});
  EXPECT_TRUE(std::string(" He ran.").ends_with(scored_text)) << scored_text;
  EXPECT_GE(scored_text.size(), 3u);

  write_file(dir / "b.txt", "First story here.\nSecond line.\n\n\nAnother story.\n");
  const auto plain = read_examples(dir / "b.txt", *m.tokenizer, m.config, 512);
  ASSERT_EQ(plain.size(), 2u);
  EXPECT_EQ(m.tokenizer->decode(plain[0].ids), "First story here.\nSecond line.");
  // Truncation keeps the beginning.
  EXPECT_EQ(read_examples(dir / "b.txt", *m.tokenizer, m.config, 3)[0].ids.size(), 3u);
}

TEST(TuningData, BadFilesNameTheLine) {
  const Model& m = model();
  TempDir dir;
  const auto error_of = [&](const std::string& text) {
    write_file(dir / "d.jsonl", text);
    return expect_error([&] { read_examples(dir / "d.jsonl", *m.tokenizer, m.config, 512); });
  };
  EXPECT_NE(error_of("{\"text\": \"a b c\"}\n{\"text\": \"x\"\n").find("d.jsonl:2: not valid JSON"), std::string::npos);
  EXPECT_NE(error_of("{\"text\": \"a\"}\n\n{\"prompt\": \"p\"}\n").find("d.jsonl:3: expected an object"), std::string::npos);
  EXPECT_NE(error_of("{\"text\": 5}\n").find("d.jsonl:1: \"text\" must be a string"), std::string::npos);
  EXPECT_NE(error_of("{\"prompt\": \"Once upon\", \"completion\": \"\"}\n").find("d.jsonl:1: the example has no token"),
            std::string::npos);
  EXPECT_NE(error_of("  \n\n").find("holds no examples"), std::string::npos);
  EXPECT_NE(expect_error([&] { read_examples(dir / "missing.jsonl", *m.tokenizer, m.config, 512); }).find("cannot read"),
            std::string::npos);
}

// ---- gradients of the whole model's loss ----

TEST(PromptTuning, SoftAndDeepPromptGradientsMatchFiniteDifferences) {
  const Model& m = model();
  TempDir dir;
  write_file(dir / "d.jsonl",
             "{\"text\": \"Lily saw a big red ball.\"}\n{\"prompt\": \"Tom had a dog.\", \"completion\": \" The dog ran to the park.\"}\n");
  const auto examples = read_examples(dir / "d.jsonl", *m.tokenizer, m.config, 512);
  const std::vector<const Example*> batch{&examples[0], &examples[1]};
  for (TuningMethod method : {TuningMethod::kPtune, TuningMethod::kDeepPtune}) {
    PromptParameters p = initial_prompt_parameters(method, 3, m.ends, 7);
    for (std::size_t i = 0; i < p.deep.size(); ++i) p.deep[i] = 0.05f * std::sin(static_cast<float>(i));
    LocalTrainingBlocks blocks(m.blocks);
    const BatchGradient g = batch_gradient(m.ends, blocks, p, batch, 1);  // two micro-batches of one
    const PromptedBatch built = build_batch(m.ends, batch, &p);
    ASSERT_EQ(g.scored, built.scored);
    const std::vector<double> soft(p.soft.begin(), p.soft.end()), deep(p.deep.begin(), p.deep.end());
    EXPECT_NEAR(g.loss_sum / g.scored, test::reference_batch_loss(real_model(), built, p, soft, deep), 1e-4);
    SCOPED_TRACE(std::string(tuning_method_name(method)));
    test::expect_prompt_gradient(real_model(), built, p, g.grad, 90);
  }
}

TEST(PromptTuning, MicroBatchesDoNotChangeTheGradient) {
  const Model& m = model();
  TempDir dir;
  write_file(dir / "d.txt", "One day a cat sat.\n\nThe sun was hot and the boy was happy.\n\nA bird sang.\n");
  const auto examples = read_examples(dir / "d.txt", *m.tokenizer, m.config, 512);
  const std::vector<const Example*> batch{&examples[0], &examples[1], &examples[2]};
  const PromptParameters p = initial_prompt_parameters(TuningMethod::kDeepPtune, 4, m.ends, 3);
  LocalTrainingBlocks blocks(m.blocks);
  const BatchGradient one = batch_gradient(m.ends, blocks, p, batch, 3);
  const BatchGradient three = batch_gradient(m.ends, blocks, p, batch, 1);
  EXPECT_NEAR(one.loss_sum, three.loss_sum, 1e-9 * one.loss_sum);
  ASSERT_EQ(one.grad.size(), three.grad.size());
  for (std::size_t i = 0; i < one.grad.size(); ++i) EXPECT_NEAR(one.grad[i], three.grad[i], 1e-6) << i;
}

// ---- training and checkpoints ----

TuningSettings small_run(TuningMethod method) {
  TuningSettings s;
  s.method = method;
  s.prompt_tokens = 4;
  s.steps = 8;
  s.batch_size = 3;
  s.micro_batch = 2;
  s.lr = 0.05;
  s.warmup = 2;
  s.seed = 11;
  return s;
}

std::vector<Example> story_examples(const Model& m) {
  return read_examples(test::models_dir().parent_path() / "data" / "tune-tom" / "train.jsonl", *m.tokenizer, m.config,
                       96);
}

TEST(PromptTrainer, TrainingLowersTheLoss) {
  const Model& m = model();
  LocalTrainingBlocks blocks(m.blocks);
  TuningSettings s = small_run(TuningMethod::kPtune);
  s.steps = 12;
  const std::vector<Example> stories = story_examples(m);
  PromptTrainer trainer(s, m.ends, blocks, stories);
  const std::vector<Example> held(stories.begin(), stories.begin() + 6);
  const double before = trainer.evaluate(held).first;
  while (!trainer.done()) {
    const StepReport r = trainer.step();
    EXPECT_TRUE(std::isfinite(r.loss));
    EXPECT_GT(r.tokens, 0);
  }
  EXPECT_LT(trainer.evaluate(held).first, before);
}

TEST(TuningCheckpoint, ResumedRunMatchesAnUninterruptedOne) {
  const Model& m = model();
  TempDir dir;
  const std::string fingerprint = model_fingerprint(m.config, m.checkpoint);
  for (TuningMethod method : {TuningMethod::kPtune, TuningMethod::kDeepPtune}) {
    const TuningSettings s = small_run(method);
    LocalTrainingBlocks blocks(m.blocks);
    std::vector<double> straight;
    PromptTrainer a(s, m.ends, blocks, story_examples(m));
    while (!a.done()) straight.push_back(a.step().loss);

    std::vector<double> resumed;
    {
      PromptTrainer b(s, m.ends, blocks, story_examples(m));
      for (int i = 0; i < 5; ++i) resumed.push_back(b.step().loss);  // past the warmup, mid-epoch
      save_tuning_checkpoint(dir / "ck.h5", {s, b.state(), fingerprint, examples_hash(story_examples(m)), ""});
    }
    const TuningCheckpoint loaded = load_tuning_checkpoint(dir / "ck.h5");
    EXPECT_EQ(loaded.model_fingerprint, fingerprint);
    EXPECT_EQ(loaded.sepal_version, sepal_version());
    EXPECT_EQ(loaded.settings.lr, s.lr);
    PromptTrainer c(loaded.settings, m.ends, blocks, story_examples(m), loaded.state);
    while (!c.done()) resumed.push_back(c.step().loss);
    EXPECT_EQ(resumed, straight) << tuning_method_name(method);
    EXPECT_EQ(c.state().params.flat(), a.state().params.flat());
    EXPECT_EQ(c.state().optimizer.second_moment(), a.state().optimizer.second_moment());
  }
}

TEST(TuningCheckpoint, EpochsWrapAndResumeAcrossThem) {
  const Model& m = model();
  TempDir dir;
  const std::vector<Example> stories = story_examples(m);
  const std::vector<Example> few(stories.begin(), stories.begin() + 5);
  TuningSettings s = small_run(TuningMethod::kPtune);
  s.steps = 6;  // 18 examples from 5: four epochs
  LocalTrainingBlocks blocks(m.blocks);
  PromptTrainer a(s, m.ends, blocks, few);
  std::vector<double> straight;
  while (!a.done()) straight.push_back(a.step().loss);
  EXPECT_EQ(a.state().epoch, 4);
  PromptTrainer b(s, m.ends, blocks, few);
  std::vector<double> resumed{b.step().loss, b.step().loss, b.step().loss};
  save_tuning_checkpoint(dir / "ck.h5", {s, b.state(), "f", "d", ""});
  const TuningCheckpoint loaded = load_tuning_checkpoint(dir / "ck.h5");
  PromptTrainer c(loaded.settings, m.ends, blocks, few, loaded.state);
  while (!c.done()) resumed.push_back(c.step().loss);
  EXPECT_EQ(resumed, straight);
}

TEST(TuningCheckpoint, DamagedAndForeignFilesAreRefused) {
  const Model& m = model();
  TempDir dir;
  LocalTrainingBlocks blocks(m.blocks);
  const TuningSettings s = small_run(TuningMethod::kDeepPtune);
  PromptTrainer t(s, m.ends, blocks, story_examples(m));
  t.step();
  save_tuning_checkpoint(dir / "ck.h5", {s, t.state(), "f", "d", ""});
  EXPECT_FALSE(std::filesystem::exists(dir / "ck.h5.tmp"));
  const std::string bytes = test::read_file(dir / "ck.h5");

  write_file(dir / "cut.h5", bytes.substr(0, bytes.size() / 2));
  EXPECT_NE(expect_error([&] { load_tuning_checkpoint(dir / "cut.h5"); }).find("cut.h5: "), std::string::npos);

  // A flipped byte inside the second moments' data: the checksum catches it.
  std::vector<float> probe = t.state().optimizer.second_moment();
  const std::string needle(reinterpret_cast<const char*>(probe.data()), 64);
  const std::size_t at = bytes.find(needle);
  ASSERT_NE(at, std::string::npos);
  std::string flipped = bytes;
  flipped[at + 17] ^= 0x40;
  write_file(dir / "flip.h5", flipped);
  EXPECT_NE(expect_error([&] { load_tuning_checkpoint(dir / "flip.h5"); }).find("damaged"), std::string::npos);

  write_file(dir / "text.h5", "not hdf5 at all");
  EXPECT_NE(expect_error([&] { load_tuning_checkpoint(dir / "text.h5"); }).find("not an HDF5 file"), std::string::npos);
  EXPECT_NE(expect_error([&] { load_tuning_checkpoint(dir / "none.h5"); }).find("does not exist"), std::string::npos);

  // A state that does not fit the run it is resumed into.
  TuningSettings other = s;
  other.prompt_tokens = 5;
  EXPECT_NE(expect_error([&] { PromptTrainer(other, m.ends, blocks, story_examples(m), t.state()); }).find("do not fit"),
            std::string::npos);
  const std::vector<Example> stories = story_examples(m);
  const std::vector<Example> fewer(stories.begin(), stories.begin() + 3);
  EXPECT_NE(expect_error([&] { PromptTrainer(s, m.ends, blocks, fewer, t.state()); }).find("data order"),
            std::string::npos);
}

TEST(TuningCheckpoint, FingerprintsTellModelsApart) {
  const Model& m = model();
  const ModelConfig other_config = read_model_config(test::models_dir() / "stories260K");
  const Checkpoint other = Checkpoint::open(test::models_dir() / "stories260K");
  EXPECT_NE(model_fingerprint(m.config, m.checkpoint), model_fingerprint(other_config, other));
  EXPECT_EQ(model_fingerprint(m.config, m.checkpoint), model_fingerprint(m.config, Checkpoint::open(real_model())));
}

}  // namespace
}  // namespace sepal
