// GGUF files: the shared stories260K.gguf loads as the Hugging Face folder does (configuration,
// tokenizer ids, every weight, the greedy reference); ggml's block formats dequantize as their
// documented layouts say (blocks built here code by code); malformed files get one line.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>

#include <nlohmann/json.hpp>

#include "kernels/dtype.h"
#include "kernels/error.h"
#include "model/generation.h"
#include "model/gguf.h"
#include "model/gguf_dequantize.h"
#include "model/gguf_model.h"
#include "model/mxfp4.h"
#include "model/synthetic_checkpoint.h"
#include "tests/test_util.h"

namespace sepal {
namespace {

std::filesystem::path shared_gguf() { return test::models_dir() / "stories260K" / "original" / "stories260K.gguf"; }

// How many of the GGUF checkpoint's tensors it compared with the folder's: each must be there
// (an lm_head the folder ties to its embeddings as those), of the same shape, bit for bit (with
// `norms_plus_one`, the f32 norms one more than the folder's, as Gemma's converter writes them).
int same_tensors(const Checkpoint& folder, const Checkpoint& gguf, bool norms_plus_one = false) {
  int compared = 0;
  for (const auto& [name, listed] : gguf.tensors()) {
    const TensorRef& t = gguf.get(name);
    const TensorRef* ref = folder.find(name);
    if (!ref && name == "lm_head.weight") ref = folder.find("model.embed_tokens.weight");
    EXPECT_NE(ref, nullptr) << name;
    if (!ref) continue;
    EXPECT_EQ(t.shape, ref->shape) << name;
    EXPECT_EQ(t.bytes, ref->bytes) << name;
    if (norms_plus_one && name.ends_with("norm.weight") && t.bytes == ref->bytes) {
      for (std::int64_t i = 0; i < t.elements(); ++i) {
        EXPECT_EQ(reinterpret_cast<const float*>(t.data)[i], 1.0f + reinterpret_cast<const float*>(ref->data)[i]) << name;
      }
    } else if (t.bytes == ref->bytes) {
      EXPECT_EQ(std::memcmp(t.data, ref->data, t.bytes), 0) << name;
    }
    ++compared;
  }
  return compared;
}

TEST(GgufModel, Stories260KIsTheHuggingFaceModel) {
  const ModelConfig hf = read_model_config(test::models_dir() / "stories260K");
  const ModelConfig g = read_model_config(shared_gguf());
  EXPECT_EQ(g.hidden_size, hf.hidden_size);
  EXPECT_EQ(g.intermediate_size, hf.intermediate_size);
  EXPECT_EQ(g.num_layers, hf.num_layers);
  EXPECT_EQ(g.num_heads, hf.num_heads);
  EXPECT_EQ(g.num_kv_heads, hf.num_kv_heads);
  EXPECT_EQ(g.head_dim, hf.head_dim);
  EXPECT_EQ(g.vocab_size, hf.vocab_size);
  EXPECT_FLOAT_EQ(static_cast<float>(g.rms_norm_eps), static_cast<float>(hf.rms_norm_eps));
  EXPECT_EQ(g.bos_token_id, hf.bos_token_id);
  EXPECT_EQ(g.eos_token_ids, hf.eos_token_ids);
  // Every weight the blocks and head read, bit for bit (the query and key rows un-permuted).
  const Checkpoint a = Checkpoint::open(test::models_dir() / "stories260K"), b = Checkpoint::open(shared_gguf());
  // Tensors to convert (here the query rows to reorder) are converted when first asked for.
  const std::string query = "model.layers.0.self_attn.q_proj.weight";
  EXPECT_EQ(b.tensors().at(query).data, nullptr);
  EXPECT_NE(b.get(query).data, nullptr);
  EXPECT_EQ(same_tensors(a, b), 3 + 9 * hf.num_layers);
}

TEST(GgufModel, Stories260KTokenizesAndGeneratesTheReference) {
  const auto ref = test::greedy_reference("stories260K");
  const auto tokenizer = load_tokenizer(shared_gguf());
  std::vector<std::int32_t> ids = {1};
  for (const auto id : tokenizer->encode("Once upon a time")) ids.push_back(id);
  EXPECT_EQ(ids, ref.prompt_ids);
  const ModelConfig config = read_model_config(shared_gguf());
  const Checkpoint checkpoint = Checkpoint::open(shared_gguf());
  const ModelEnds ends = ModelEnds::load(checkpoint, config, DType::kF32);
  const BlockStack blocks = BlockStack::load(checkpoint, config, 0, config.num_layers, DType::kF32);
  GenerationRequest request;
  request.prompt_ids = ref.prompt_ids;
  request.max_new_tokens = ref.max_new_tokens;
  LocalPipeline pipeline(blocks, session_capacity(config, request));
  EXPECT_EQ(generate(ends, pipeline, request, [](std::int32_t) {}).generated_ids, ref.generated_ids);
}

// ---- block formats, built code by code from ggml's layouts ----

std::uint16_t f16(float v) { return f32_to_f16(v); }
void put16(std::vector<std::uint8_t>& b, std::size_t at, std::uint16_t v) { std::memcpy(b.data() + at, &v, 2); }
std::vector<float> decode(GgmlType type, const std::vector<std::uint8_t>& block, std::int64_t n) {
  std::vector<float> out(static_cast<std::size_t>(n));
  dequantize_ggml(static_cast<std::uint32_t>(type), reinterpret_cast<const std::byte*>(block.data()), n, out.data());
  return out;
}

TEST(GgufDequantize, SimpleBlocks) {
  std::mt19937 rng(7);
  std::vector<int> code(32), high(32);
  for (int j = 0; j < 32; ++j) {
    code[j] = static_cast<int>(rng() % 16);
    high[j] = static_cast<int>(rng() % 2);
  }
  // Q4_0: d, then byte j holds values j (low nibble) and j + 16 (high nibble).
  std::vector<std::uint8_t> b(18);
  put16(b, 0, f16(0.5f));
  for (int j = 0; j < 16; ++j) b[2 + j] = static_cast<std::uint8_t>(code[j] | code[j + 16] << 4);
  auto y = decode(GgmlType::kQ4_0, b, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], (code[j] - 8) * 0.5f) << "Q4_0 " << j;
  // Q4_1: d, m.
  b.assign(20, 0);
  put16(b, 0, f16(0.25f));
  put16(b, 2, f16(-1.5f));
  for (int j = 0; j < 16; ++j) b[4 + j] = static_cast<std::uint8_t>(code[j] | code[j + 16] << 4);
  y = decode(GgmlType::kQ4_1, b, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], code[j] * 0.25f - 1.5f) << "Q4_1 " << j;
  // Q5_0 and Q5_1: bit j of the u32 is value j's fifth bit.
  std::uint32_t qh = 0;
  for (int j = 0; j < 32; ++j) qh |= static_cast<std::uint32_t>(high[j]) << j;
  b.assign(22, 0);
  put16(b, 0, f16(2.0f));
  std::memcpy(b.data() + 2, &qh, 4);
  for (int j = 0; j < 16; ++j) b[6 + j] = static_cast<std::uint8_t>(code[j] | code[j + 16] << 4);
  y = decode(GgmlType::kQ5_0, b, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], (code[j] + 16 * high[j] - 16) * 2.0f) << "Q5_0 " << j;
  b.assign(24, 0);
  put16(b, 0, f16(0.125f));
  put16(b, 2, f16(3.0f));
  std::memcpy(b.data() + 4, &qh, 4);
  for (int j = 0; j < 16; ++j) b[8 + j] = static_cast<std::uint8_t>(code[j] | code[j + 16] << 4);
  y = decode(GgmlType::kQ5_1, b, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], (code[j] + 16 * high[j]) * 0.125f + 3.0f) << "Q5_1 " << j;
  // Q8_0: d, 32 signed bytes.
  b.assign(34, 0);
  put16(b, 0, f16(-0.75f));
  for (int j = 0; j < 32; ++j) b[2 + j] = static_cast<std::uint8_t>(static_cast<std::int8_t>(j * 8 - 128));
  y = decode(GgmlType::kQ8_0, b, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], static_cast<float>(j * 8 - 128) * -0.75f) << "Q8_0 " << j;
  // MXFP4 (ggml's layout): an E8M0 byte, 2^(e - 127); byte j holds values j (low nibble) and
  // j + 16 (high nibble), FP4 codes: 0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives (bit 3).
  static constexpr float kFp4[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
  for (const int e : {127, 130, 120}) {
    b.assign(17, 0);
    b[0] = static_cast<std::uint8_t>(e);
    for (int j = 0; j < 16; ++j) b[1 + j] = static_cast<std::uint8_t>(code[j] | code[j + 16] << 4);
    y = decode(GgmlType::kMxfp4, b, 32);
    for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], kFp4[code[j]] * std::pow(2.0f, static_cast<float>(e - 127))) << "MXFP4 " << j;
  }
  EXPECT_EQ(ggml_type_name(39), "MXFP4");
  // IQ4_NL: d, then codes as Q4_0's, each an index into 16 fixed levels.
  static constexpr int kLevels[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
  b.assign(18, 0);
  put16(b, 0, f16(0.0625f));
  for (int j = 0; j < 16; ++j) b[2 + j] = static_cast<std::uint8_t>(code[j] | code[j + 16] << 4);
  y = decode(GgmlType::kIq4_Nl, b, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], 0.0625f * static_cast<float>(kLevels[code[j]])) << "IQ4_NL " << j;
  EXPECT_EQ(ggml_type_name(20), "IQ4_NL");
  // F16, BF16.
  b = {0x00, 0x3C, 0x00, 0xC0};  // 1.0, -2.0
  EXPECT_EQ(decode(GgmlType::kF16, b, 2), (std::vector<float>{1.0f, -2.0f}));
  b = {0x80, 0x3F, 0x40, 0xC0};  // 1.0, -3.0
  EXPECT_EQ(decode(GgmlType::kBF16, b, 2), (std::vector<float>{1.0f, -3.0f}));
}

// The K-quants: 256 values in 16 groups of 16 (Q2_K, Q3_K, Q6_K) or 8 of 32 (Q4_K, Q5_K), each
// with its own scale (and min). Every value's code and group are chosen at random, encoded at
// the place the layout gives it, and checked after decoding.
TEST(GgufDequantize, KQuantBlocks) {
  std::mt19937 rng(11);
  const float d = 0.5f, dmin = 0.25f;
  {  // Q2_K: scales[16] (scale low nibble, min high nibble), qs[64] (2-bit codes), d, dmin.
    std::vector<std::uint8_t> b(84, 0);
    std::vector<int> scale(16), min(16), code(256);
    for (int g = 0; g < 16; ++g) {
      scale[g] = static_cast<int>(rng() % 16);
      min[g] = static_cast<int>(rng() % 16);
      b[static_cast<std::size_t>(g)] = static_cast<std::uint8_t>(scale[g] | min[g] << 4);
    }
    // Value v = 128h + 32s + 16p + l (half h, shift step s, part p): qs[32h + 16p + l], bits 2s.
    for (int v = 0; v < 256; ++v) {
      code[v] = static_cast<int>(rng() % 4);
      const int h = v / 128, s = v % 128 / 32, p = v % 32 / 16, l = v % 16;
      b[16 + 32 * h + 16 * p + l] |= static_cast<std::uint8_t>(code[v] << (2 * s));
    }
    put16(b, 80, f16(d));
    put16(b, 82, f16(dmin));
    const auto y = decode(GgmlType::kQ2_K, b, 256);
    for (int v = 0; v < 256; ++v) EXPECT_EQ(y[v], d * scale[v / 16] * code[v] - dmin * min[v / 16]) << "Q2_K " << v;
  }
  {  // Q3_K: hmask[32], qs[64], 12 bytes of 6-bit scales, d. Value = d (scale - 32) (code - 4 unless high).
    std::vector<std::uint8_t> b(110, 0);
    std::vector<int> scale(16), code(256), high(256);
    for (int g = 0; g < 16; ++g) {
      scale[g] = static_cast<int>(rng() % 64);
      // Low 4 bits: bytes 0..7 (groups 0..7 low nibble, 8..15 high nibble); high 2 bits: byte
      // 8 + g % 4, bits 2 (g / 4).
      if (g < 8) b[96 + g] |= static_cast<std::uint8_t>(scale[g] & 15);
      else b[96 + g - 8] |= static_cast<std::uint8_t>((scale[g] & 15) << 4);
      b[96 + 8 + g % 4] |= static_cast<std::uint8_t>((scale[g] >> 4) << (2 * (g / 4)));
    }
    for (int v = 0; v < 256; ++v) {
      code[v] = static_cast<int>(rng() % 4);
      high[v] = static_cast<int>(rng() % 2);
      const int h = v / 128, s = v % 128 / 32, p = v % 32 / 16, l = v % 16;
      b[32 + 32 * h + 16 * p + l] |= static_cast<std::uint8_t>(code[v] << (2 * s));
      if (high[v]) b[static_cast<std::size_t>(16 * p + l)] |= static_cast<std::uint8_t>(1 << (4 * h + s));
    }
    put16(b, 108, f16(d));
    const auto y = decode(GgmlType::kQ3_K, b, 256);
    for (int v = 0; v < 256; ++v) EXPECT_EQ(y[v], d * (scale[v / 16] - 32) * (code[v] - (high[v] ? 0 : 4))) << "Q3_K " << v;
  }
  // Q4_K and Q5_K: 8 6-bit scales and mins in 12 bytes: groups 0..3 in the low 6 bits of bytes
  // 0..3 (scales) and 4..7 (mins); groups 4..7 in the nibbles of bytes 8..11 with their top 2
  // bits in the top bits of bytes 0..3 (scales) and 4..7 (mins).
  auto pack_scales = [](std::uint8_t* p, const std::vector<int>& scale, const std::vector<int>& min) {
    for (int g = 0; g < 4; ++g) {
      p[g] = static_cast<std::uint8_t>(scale[g] | (scale[g + 4] >> 4) << 6);
      p[g + 4] = static_cast<std::uint8_t>(min[g] | (min[g + 4] >> 4) << 6);
      p[g + 8] = static_cast<std::uint8_t>((scale[g + 4] & 15) | (min[g + 4] & 15) << 4);
    }
  };
  for (const bool five : {false, true}) {  // Q4_K: d, dmin, scales[12], qs[128]; Q5_K: qh[32] before qs
    std::vector<std::uint8_t> b(five ? 176 : 144, 0);
    std::vector<int> scale(8), min(8), code(256);
    for (int g = 0; g < 8; ++g) {
      scale[g] = static_cast<int>(rng() % 64);
      min[g] = static_cast<int>(rng() % 64);
    }
    put16(b, 0, f16(d));
    put16(b, 2, f16(dmin));
    pack_scales(b.data() + 4, scale, min);
    const std::size_t qs = five ? 48 : 16;
    // Value v = 64k + 32n + l: qs[32k + l], low nibble (n = 0) or high; Q5_K's fifth bit in
    // qh[l], bit 2k + n.
    for (int v = 0; v < 256; ++v) {
      code[v] = static_cast<int>(rng() % (five ? 32 : 16));
      const int k = v / 64, n = v % 64 / 32, l = v % 32;
      b[qs + static_cast<std::size_t>(32 * k + l)] |= static_cast<std::uint8_t>((code[v] & 15) << (4 * n));
      if (five && code[v] >= 16) b[16 + static_cast<std::size_t>(l)] |= static_cast<std::uint8_t>(1 << (2 * k + n));
    }
    const auto y = decode(five ? GgmlType::kQ5_K : GgmlType::kQ4_K, b, 256);
    for (int v = 0; v < 256; ++v) {
      const float scale_f = d * static_cast<float>(scale[v / 32]), min_f = dmin * static_cast<float>(min[v / 32]);
      EXPECT_EQ(y[v], scale_f * static_cast<float>(code[v]) - min_f) << (five ? "Q5_K " : "Q4_K ") << v;
    }
  }
  {  // IQ4_XS: d, scales_h (u16), scales_l[4], qs[128]; 8 groups of 32, value = d (scale - 32) level(code).
    static constexpr int kLevels[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
    std::vector<std::uint8_t> b(136, 0);
    std::vector<int> scale(8), code(256);
    std::uint16_t scales_h = 0;
    for (int g = 0; g < 8; ++g) {
      scale[g] = static_cast<int>(rng() % 64);
      // Low 4 bits: byte 4 + g / 2, nibble g % 2; high 2 bits: bits 2g of the u16.
      b[4 + static_cast<std::size_t>(g / 2)] |= static_cast<std::uint8_t>((scale[g] & 15) << (4 * (g % 2)));
      scales_h = static_cast<std::uint16_t>(scales_h | (scale[g] >> 4) << (2 * g));
    }
    put16(b, 0, f16(d));
    put16(b, 2, scales_h);
    // Value v = 32g + 16n + l: qs[16g + l], low nibble (n = 0) or high.
    for (int v = 0; v < 256; ++v) {
      code[v] = static_cast<int>(rng() % 16);
      const int g = v / 32, n = v % 32 / 16, l = v % 16;
      b[8 + static_cast<std::size_t>(16 * g + l)] |= static_cast<std::uint8_t>(code[v] << (4 * n));
    }
    const auto y = decode(GgmlType::kIq4_Xs, b, 256);
    for (int v = 0; v < 256; ++v) {
      EXPECT_EQ(y[v], d * static_cast<float>(scale[v / 32] - 32) * static_cast<float>(kLevels[code[v]])) << "IQ4_XS " << v;
    }
    EXPECT_EQ(ggml_type_name(23), "IQ4_XS");
  }
  {  // Q6_K: ql[128], qh[64], scales[16] (signed), d; value = d scale (code - 32).
    std::vector<std::uint8_t> b(210, 0);
    std::vector<int> scale(16), code(256);
    for (int g = 0; g < 16; ++g) {
      scale[g] = static_cast<int>(rng() % 256) - 128;
      b[192 + static_cast<std::size_t>(g)] = static_cast<std::uint8_t>(static_cast<std::int8_t>(scale[g]));
    }
    // Value v = 128h + 32q + l (quarter q): low 4 bits in ql[64h + l + 32 (q & 1)], nibble q / 2;
    // high 2 bits in qh[32h + l], bits 2q.
    for (int v = 0; v < 256; ++v) {
      code[v] = static_cast<int>(rng() % 64);
      const int h = v / 128, q = v % 128 / 32, l = v % 32;
      b[static_cast<std::size_t>(64 * h + l + 32 * (q & 1))] |= static_cast<std::uint8_t>((code[v] & 15) << (4 * (q / 2)));
      b[128 + static_cast<std::size_t>(32 * h + l)] |= static_cast<std::uint8_t>((code[v] >> 4) << (2 * q));
    }
    put16(b, 208, f16(d));
    const auto y = decode(GgmlType::kQ6_K, b, 256);
    for (int v = 0; v < 256; ++v) EXPECT_EQ(y[v], d * static_cast<float>(scale[v / 16]) * static_cast<float>(code[v] - 32)) << "Q6_K " << v;
  }
}

// ---- the container ----

// A GGUF file written field by field.
class GgufWriter {
 public:
  explicit GgufWriter(std::uint32_t version = 3) {
    u32(0x46554747);
    u32(version);
  }
  void u32(std::uint32_t v) { raw(&v, 4); }
  void u64(std::uint64_t v) { raw(&v, 8); }
  void str(const std::string& s) {
    u64(s.size());
    raw(s.data(), s.size());
  }
  void raw(const void* p, std::size_t n) {
    const auto* b = static_cast<const std::uint8_t*>(p);
    bytes_.insert(bytes_.end(), b, b + n);
  }
  void pad(std::size_t alignment) { bytes_.resize((bytes_.size() + alignment - 1) / alignment * alignment, 0); }
  std::vector<std::byte> bytes() const {
    std::vector<std::byte> out(bytes_.size());
    std::memcpy(out.data(), bytes_.data(), bytes_.size());
    return out;
  }
  std::vector<std::uint8_t> bytes_;
};

// A file with one string, one u32 and one f32 array of metadata, and one F32 tensor [4, 2].
GgufWriter small_file(std::uint64_t offset = 0, std::uint32_t type = 0, std::uint32_t dims = 2) {
  GgufWriter w;
  w.u64(1);  // tensors
  w.u64(3);  // metadata
  w.str("general.architecture");
  w.u32(8);
  w.str("llama");
  w.str("llama.block_count");
  w.u32(4);
  w.u32(5);
  w.str("tokenizer.ggml.scores");
  w.u32(9);
  w.u32(6);
  w.u64(2);
  const float s[2] = {0.5f, -1.0f};
  w.raw(s, 8);
  w.str("blk.0.attn_v.weight");
  w.u32(dims);
  for (std::uint32_t d = 0; d < dims; ++d) w.u64(d == 0 ? 4 : 2);
  w.u32(type);
  w.u64(offset);
  w.pad(32);
  const float v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  w.raw(v, 32);
  return w;
}

GgufFile parse(const GgufWriter& w) { return GgufFile::parse(MappedFile::in_memory(w.bytes(), "test.gguf")); }

void expect_refused(const GgufWriter& w, const std::string& needle) {
  try {
    (void)parse(w);
    ADD_FAILURE() << "accepted; expected: " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
  }
}

TEST(GgufFile, ReadsMetadataAndTensors) {
  const GgufFile g = parse(small_file());
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.string("general.architecture"), "llama");
  EXPECT_EQ(g.integer("llama.block_count"), 5);
  ASSERT_NE(g.array("tokenizer.ggml.scores"), nullptr);
  EXPECT_EQ(g.array("tokenizer.ggml.scores")->size(), 2u);
  EXPECT_FALSE(g.integer("missing").has_value());
  EXPECT_THROW((void)g.integer("general.architecture"), Error);
  const GgufTensor& t = g.tensors().at("blk.0.attn_v.weight");
  EXPECT_EQ(t.dims, (std::vector<std::int64_t>{4, 2}));
  EXPECT_EQ(t.bytes, 32u);
  float first;
  std::memcpy(&first, t.data, 4);
  EXPECT_EQ(first, 1.0f);
}

// ---- qwen2 and qwen3 files ----

// Appends one metadata entry: key, GGUF type, value bytes.
void put_kv(GgufWriter& w, const std::string& key, std::uint32_t type, const void* value, std::size_t bytes) {
  w.str(key);
  w.u32(type);
  w.raw(value, bytes);
}

// What llama.cpp's converter writes for a Hugging Face Qwen2, Qwen3 or Phi-3 folder (f32 tensors):
// ARCH.* keys (Qwen3's head width as key_length and value_length; Phi-3's window and rotary
// width), GGUF tensor names with ggml's dimension order (fastest first), the query and key rows as
// they are (llama.cpp rotates their halves apart), Qwen2's q, k and v biases, Qwen3's q and k
// norms or Phi-3's fused attn_qkv and ffn_up (gate, then up), no output.weight when the head is
// tied.
GgufWriter qwen_gguf(const std::filesystem::path& folder, const std::string& arch) {
  const ModelConfig c = read_model_config(folder);
  const Checkpoint hf = Checkpoint::open(folder);
  std::vector<std::pair<std::string, std::string>> names = {
      {"token_embd.weight", "model.embed_tokens.weight"}, {"output_norm.weight", "model.norm.weight"}};
  if (!c.tie_word_embeddings) names.emplace_back("output.weight", "lm_head.weight");
  std::vector<std::pair<std::string, std::string>> block = {
      {"attn_norm.weight", "input_layernorm.weight"},   {"attn_q.weight", "self_attn.q_proj.weight"},
      {"attn_k.weight", "self_attn.k_proj.weight"},     {"attn_v.weight", "self_attn.v_proj.weight"},
      {"attn_output.weight", "self_attn.o_proj.weight"}, {"ffn_norm.weight", "post_attention_layernorm.weight"},
      {"ffn_gate.weight", "mlp.gate_proj.weight"},      {"ffn_up.weight", "mlp.up_proj.weight"},
      {"ffn_down.weight", "mlp.down_proj.weight"}};
  if (arch == "phi3") {
    block = {{"attn_norm.weight", "input_layernorm.weight"},    {"attn_qkv.weight", "self_attn.qkv_proj.weight"},
             {"attn_output.weight", "self_attn.o_proj.weight"}, {"ffn_norm.weight", "post_attention_layernorm.weight"},
             {"ffn_up.weight", "mlp.gate_up_proj.weight"},      {"ffn_down.weight", "mlp.down_proj.weight"}};
  } else if (arch == "gemma2" || arch == "gemma3") {  // and its norms: llama.cpp's ffn_norm is the norm before the MLP
    block = {{"attn_norm.weight", "input_layernorm.weight"},     {"attn_q.weight", "self_attn.q_proj.weight"},
             {"attn_k.weight", "self_attn.k_proj.weight"},       {"attn_v.weight", "self_attn.v_proj.weight"},
             {"attn_output.weight", "self_attn.o_proj.weight"},  {"post_attention_norm.weight", "post_attention_layernorm.weight"},
             {"ffn_norm.weight", "pre_feedforward_layernorm.weight"}, {"post_ffw_norm.weight", "post_feedforward_layernorm.weight"},
             {"ffn_gate.weight", "mlp.gate_proj.weight"},        {"ffn_up.weight", "mlp.up_proj.weight"},
             {"ffn_down.weight", "mlp.down_proj.weight"}};
    if (arch == "gemma3") {
      block.insert(block.end(), {{"attn_q_norm.weight", "self_attn.q_norm.weight"}, {"attn_k_norm.weight", "self_attn.k_norm.weight"}});
    }
  } else if (arch == "gemma") {  // Llama's tensors
  } else if (arch == "qwen2") {
    block.insert(block.end(), {{"attn_q.bias", "self_attn.q_proj.bias"}, {"attn_k.bias", "self_attn.k_proj.bias"},
                               {"attn_v.bias", "self_attn.v_proj.bias"}});
  } else {
    block.insert(block.end(), {{"attn_q_norm.weight", "self_attn.q_norm.weight"}, {"attn_k_norm.weight", "self_attn.k_norm.weight"}});
  }
  for (std::int64_t l = 0; l < c.num_layers; ++l) {
    for (const auto& [g, h] : block) {
      names.emplace_back("blk." + std::to_string(l) + "." + g, "model.layers." + std::to_string(l) + "." + h);
    }
  }
  // Phi-3's long-context kind: LongRoPE's factors from config.json as f32 tensors, the original
  // context and the attention factor as keys.
  std::vector<std::pair<std::string, std::vector<float>>> factors;
  std::int64_t original = 0;
  double attn_factor = 1.0;
  if (arch == "phi3") {
    std::ifstream in(folder / "config.json");
    const nlohmann::json config = nlohmann::json::parse(in);
    if (config.contains("rope_scaling") && !config["rope_scaling"].is_null()) {
      for (const char* kind : {"short", "long"}) {
        factors.emplace_back(std::string("rope_factors_") + kind + ".weight",
                             config["rope_scaling"][std::string(kind) + "_factor"].get<std::vector<float>>());
      }
      original = config["original_max_position_embeddings"];
      const double scale = config["max_position_embeddings"].get<double>() / static_cast<double>(original);
      attn_factor = std::sqrt(1 + std::log(scale) / std::log(static_cast<double>(original)));
    }
  }
  GgufWriter w;
  w.u64(names.size() + factors.size());
  const bool linear = c.rope_scaling.kind == RopeScaling::Kind::kLinear;
  const bool yarn = c.rope_scaling.kind == RopeScaling::Kind::kYarn;
  w.u64((arch == "qwen2" ? 9 : arch == "qwen3" || arch == "gemma" ? 11 : arch == "gemma2" ? 14 : arch == "gemma3" ? 12 : 13) +
        (factors.empty() ? 0 : 2) + (linear ? 2 : 0) + (yarn ? 5 : 0) - (arch == "gemma" || arch == "gemma2" ? 1 : 0));
  w.str("general.architecture");
  w.u32(8);
  w.str(arch);
  const auto u32 = [&](const std::string& key, std::int64_t v) {
    const auto x = static_cast<std::uint32_t>(v);
    put_kv(w, key, 4, &x, 4);
  };
  const auto f32 = [&](const std::string& key, double v) {
    const auto x = static_cast<float>(v);
    put_kv(w, key, 6, &x, 4);
  };
  u32(arch + ".context_length", c.max_position_embeddings);
  u32(arch + ".embedding_length", c.hidden_size);
  u32(arch + ".feed_forward_length", c.intermediate_size);
  u32(arch + ".block_count", c.num_layers);
  u32(arch + ".attention.head_count", c.num_heads);
  u32(arch + ".attention.head_count_kv", c.num_kv_heads);
  const bool gemma = arch == "gemma" || arch == "gemma2" || arch == "gemma3";
  if (arch != "gemma" && arch != "gemma2") f32(arch + ".rope.freq_base", c.rope_theta);  // Gemma's and Gemma 2's converters leave it out (10000)
  if (arch == "gemma3") u32(arch + ".attention.sliding_window", c.window_of(0));
  if (linear) {
    w.str(arch + ".rope.scaling.type");
    w.u32(8);
    w.str("linear");
    f32(arch + ".rope.scaling.factor", c.rope_scaling.factor);
  }
  if (yarn) {  // llama.cpp's keys for a YaRN config
    w.str(arch + ".rope.scaling.type");
    w.u32(8);
    w.str("yarn");
    f32(arch + ".rope.scaling.factor", c.rope_scaling.factor);
    u32(arch + ".rope.scaling.original_context_length", static_cast<std::int64_t>(c.rope_scaling.original_max_position_embeddings));
    f32(arch + ".rope.scaling.yarn_beta_fast", c.rope_scaling.beta_fast);
    f32(arch + ".rope.scaling.yarn_beta_slow", c.rope_scaling.beta_slow);
  }
  f32(arch + ".attention.layer_norm_rms_epsilon", c.rms_norm_eps);
  if (arch == "gemma2") {
    u32(arch + ".attention.sliding_window", c.window_of(0));
    f32(arch + ".attn_logit_softcapping", c.attention_softcap);
    f32(arch + ".final_logit_softcapping", c.final_logit_softcap);
  }
  if (arch == "qwen3" || gemma) {
    u32(arch + ".attention.key_length", c.head_dim);
    u32(arch + ".attention.value_length", c.head_dim);
  }
  if (arch == "phi3") {
    u32(arch + ".attention.sliding_window", c.sliding_window);
    u32(arch + ".rope.dimension_count", c.rope_dims());
    u32("tokenizer.ggml.eos_token_id", 2);  // <|endoftext|>, and the end of a turn, <|end|>
    u32("tokenizer.ggml.eot_token_id", 5);
    if (!factors.empty()) {
      u32(arch + ".rope.scaling.original_context_length", original);
      f32(arch + ".rope.scaling.attn_factor", attn_factor);
    }
  }
  std::uint64_t offset = 0;
  for (const auto& [g, h] : names) {
    const TensorRef& t = hf.get(h);
    EXPECT_EQ(t.dtype, DType::kF32) << h;
    w.str(g);
    w.u32(static_cast<std::uint32_t>(t.shape.size()));
    for (auto d = t.shape.rbegin(); d != t.shape.rend(); ++d) w.u64(static_cast<std::uint64_t>(*d));
    w.u32(0);  // F32
    w.u64(offset);
    offset += (t.bytes + 31) / 32 * 32;
  }
  for (const auto& [g, values] : factors) {
    w.str(g);
    w.u32(1);
    w.u64(values.size());
    w.u32(0);  // F32
    w.u64(offset);
    offset += (values.size() * 4 + 31) / 32 * 32;
  }
  w.pad(32);
  for (const auto& [g, h] : names) {
    const TensorRef& t = hf.get(h);
    if (gemma && g.ends_with("norm.weight")) {  // Gemma's converter adds the one, in f32
      std::vector<float> plus_one(static_cast<std::size_t>(t.elements()));
      for (std::size_t i = 0; i < plus_one.size(); ++i) plus_one[i] = 1.0f + reinterpret_cast<const float*>(t.data)[i];
      w.raw(plus_one.data(), t.bytes);
    } else {
      w.raw(t.data, t.bytes);
    }
    w.pad(32);
  }
  for (const auto& [g, values] : factors) {
    w.raw(values.data(), values.size() * 4);
    w.pad(32);
  }
  return w;
}

// The hidden states of the same 5 rows through every block of a folder's checkpoint and of its
// GGUF file's.
std::pair<std::vector<float>, std::vector<float>> hidden_states_of(const Checkpoint& a, const ModelConfig& hf, const Checkpoint& b,
                                                                   const ModelConfig& g) {
  const BlockStack from_hf = BlockStack::load(a, hf, 0, hf.num_layers, DType::kF32);
  const BlockStack from_gguf = BlockStack::load(b, g, 0, g.num_layers, DType::kF32);
  std::vector<float> x(static_cast<std::size_t>(5 * hf.hidden_size)), y;
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)));
  y = x;
  KvCache ca = from_hf.new_cache(5), cb = from_gguf.new_cache(5);
  from_hf.forward(x.data(), 5, ca);
  from_gguf.forward(y.data(), 5, cb);
  return {x, y};
}

// A qwen2 or qwen3 GGUF file is its Hugging Face folder: the same configuration (biases on q, k
// and v; q and k norms and heads wider than hidden / heads), every tensor bit for bit (no rows
// reordered), the same hidden states.
// `partial`: Phi-4-mini's kind, rotary embeddings on 3/4 of each head (12 of 16 dimensions).
void expect_file_is_its_folder(const std::string& arch, bool partial = false, bool yarn = false) {
  const test::TempDir dir;
  SyntheticSpec spec;
  spec.architecture = arch == "qwen2"   ? "Qwen2ForCausalLM"
                      : arch == "qwen3" ? "Qwen3ForCausalLM"
                      : arch == "gemma" ? "GemmaForCausalLM"
                      : arch == "gemma2" ? "Gemma2ForCausalLM"
                      : arch == "gemma3" ? "Gemma3ForCausalLM"
                                        : "Phi3ForCausalLM";
  if (arch == "qwen3" || arch == "gemma" || arch == "gemma2" || arch == "gemma3") spec.head_dim = 32;
  if (arch == "gemma3") {  // llama.cpp's pattern: 5 sliding blocks of 6 (here the first two of two)
    spec.sliding_window = 3;
    spec.linear_rope_factor = 8;
  }
  if (arch == "gemma2") {  // a window on even blocks, caps random weights reach
    spec.sliding_window = 3;
    spec.attention_softcap = 0.8;
    spec.final_logit_softcap = 1.5;
  }
  if (arch == "phi3") {  // Phi-3.5's kind: a window, and LongRoPE at 4 times the original context
    spec.sliding_window = 3;
    spec.long_rope_original = 16;
    if (partial) spec.partial_rotary_factor = 0.75;
  }
  spec.hidden_size = 64;
  spec.intermediate_size = 96;
  spec.num_layers = 2;
  spec.num_heads = 4;
  spec.num_kv_heads = 2;
  spec.vocab_size = 300;
  spec.max_position_embeddings = 64;
  spec.weight_std = 0.15;
  spec.tie_word_embeddings = true;
  spec.seed = 11;
  write_synthetic_checkpoint(spec, dir / "hf");
  if (yarn) {  // Qwen2.5's long context: YaRN, here 4 times an original 32 positions
    auto config = nlohmann::json::parse(test::read_file(dir / "hf" / "config.json"));
    config["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32},
                              {"beta_fast", 16.0}, {"beta_slow", 2.0}};
    test::write_file(dir / "hf" / "config.json", config.dump());
  }
  const auto gguf = dir / (arch + ".gguf");
  {
    const GgufWriter w = qwen_gguf(dir / "hf", arch);
    std::ofstream out(gguf, std::ios::binary);
    out.write(reinterpret_cast<const char*>(w.bytes_.data()), static_cast<std::streamsize>(w.bytes_.size()));
  }
  const ModelConfig hf = read_model_config(dir / "hf"), g = read_model_config(gguf);
  EXPECT_EQ(g.architecture, spec.architecture);
  EXPECT_EQ(g.attention_bias, arch == "qwen2");
  EXPECT_EQ(g.qk_norm, arch == "qwen3" || arch == "gemma3");
  EXPECT_EQ(g.fused_qkv, arch == "phi3");
  EXPECT_EQ(g.mlp_activation, hf.mlp_activation);
  EXPECT_EQ(g.embedding_scale, hf.embedding_scale);
  EXPECT_EQ(hf.norm_weight_plus_one, arch == "gemma" || arch == "gemma2" || arch == "gemma3");
  EXPECT_EQ(g.local_rope_theta, hf.local_rope_theta);
  EXPECT_EQ(g.rope_theta, hf.rope_theta);
  EXPECT_EQ(g.rope_scaling.kind, hf.rope_scaling.kind);
  EXPECT_EQ(g.rope_scaling.factor, hf.rope_scaling.factor);
  EXPECT_EQ(g.rope_scaling.beta_fast, hf.rope_scaling.beta_fast);
  EXPECT_EQ(g.rope_scaling.beta_slow, hf.rope_scaling.beta_slow);
  EXPECT_EQ(g.layer_windows, hf.layer_windows);
  EXPECT_EQ(g.attention_softcap, hf.attention_softcap);
  EXPECT_EQ(g.final_logit_softcap, hf.final_logit_softcap);
  EXPECT_EQ(g.attention_scale, hf.attention_scale);
  EXPECT_EQ(g.output_norms, arch == "gemma2" || arch == "gemma3");
  EXPECT_FALSE(g.norm_weight_plus_one);  // the file holds 1 + weight
  EXPECT_EQ(g.sliding_window, hf.sliding_window);
  EXPECT_EQ(g.max_position_embeddings, hf.max_position_embeddings);
  if (arch == "phi3") {
    EXPECT_EQ(g.eos_token_ids, (std::vector<std::int32_t>{2, 5}));  // the end of a turn too
  }
  EXPECT_EQ(g.rope_scaling.kind, hf.rope_scaling.kind);
  EXPECT_EQ(g.rope_scaling.freq_factors.size(), hf.rope_scaling.freq_factors.size());
  for (std::size_t i = 0; i < g.rope_scaling.freq_factors.size(); ++i) {  // stored as f32 in the file
    EXPECT_EQ(g.rope_scaling.freq_factors[i], static_cast<float>(hf.rope_scaling.freq_factors[i]));
  }
  EXPECT_EQ(g.rope_scaling.long_freq_factors.size(), hf.rope_scaling.long_freq_factors.size());
  for (std::size_t i = 0; i < g.rope_scaling.long_freq_factors.size(); ++i) {
    EXPECT_EQ(g.rope_scaling.long_freq_factors[i], static_cast<float>(hf.rope_scaling.long_freq_factors[i]));
  }
  EXPECT_EQ(g.rope_scaling.original_max_position_embeddings, hf.rope_scaling.original_max_position_embeddings);
  EXPECT_NEAR(g.rope_scaling.attention_factor, hf.rope_scaling.attention_factor, 1e-7);  // an f32 key
  EXPECT_TRUE(g.tie_word_embeddings);
  EXPECT_EQ(g.num_kv_heads, hf.num_kv_heads);
  EXPECT_EQ(g.head_dim, hf.head_dim);
  EXPECT_EQ(g.rope_dims(), partial ? 12 : hf.head_dim);
  EXPECT_EQ(hf.rope_dims(), g.rope_dims());
  const Checkpoint a = Checkpoint::open(dir / "hf"), b = Checkpoint::open(gguf);
  EXPECT_EQ(same_tensors(a, b, arch == "gemma" || arch == "gemma2" || arch == "gemma3"),
            2 + (arch == "qwen2" ? 12 : arch == "qwen3" || arch == "gemma2" ? 11 : arch == "gemma3" ? 13 : arch == "gemma" ? 9 : 6) *
                    spec.num_layers);
  const auto [x, y] = hidden_states_of(a, hf, b, g);
  if (arch == "phi3") {  // LongRoPE's factors and attention factor went through f32 in the file
    double worst = 0;
    for (std::size_t i = 0; i < x.size(); ++i) worst = std::max(worst, static_cast<double>(std::abs(x[i] - y[i])));
    EXPECT_LT(worst, 1e-4);
  } else {
    EXPECT_EQ(x, y);
  }
}

TEST(GgufModel, AQwen2FileIsItsHuggingFaceFolder) { expect_file_is_its_folder("qwen2"); }
TEST(GgufModel, AQwen2FileWithYarnIsItsHuggingFaceFolder) { expect_file_is_its_folder("qwen2", false, /*yarn=*/true); }
TEST(GgufModel, AQwen3FileIsItsHuggingFaceFolder) { expect_file_is_its_folder("qwen3"); }
TEST(GgufModel, APhi3FileIsItsHuggingFaceFolder) { expect_file_is_its_folder("phi3"); }
TEST(GgufModel, APhi4MiniFileIsItsHuggingFaceFolder) { expect_file_is_its_folder("phi3", /*partial=*/true); }
TEST(GgufModel, AGemmaFileIsItsHuggingFaceFolder) { expect_file_is_its_folder("gemma"); }
TEST(GgufModel, AGemma2FileIsItsHuggingFaceFolder) { expect_file_is_its_folder("gemma2"); }
TEST(GgufModel, AGemma3FileIsItsHuggingFaceFolder) { expect_file_is_its_folder("gemma3"); }

// Granite (its multipliers as keys, q and k interleaved as for llama) and a mixture of experts as
// llama.cpp's converter writes them: Mixtral as a `llama` file (its query
// and key rows interleaved for llama.cpp's rotation) and Qwen3-MoE as a `qwen3moe` file, with
// expert_count, expert_used_count (and expert_feed_forward_length), the router as ffn_gate_inp
// and each projection's experts stacked in one tensor [experts, rows, cols] (or, `split`, as older
// Mixtral files hold them, ffn_gate.E one by one). `q8_down`: the stacked down projections in Q8_0.
// OLMoE as an `olmoe` file (its q and k norms as wide as the projections); OLMo 2 and 3 as `olmo2`
// files (no input norms, post_attention_norm and post_ffw_norm; OLMo 3 with its window as a key).
// GPT-OSS as a `gpt-oss` file: biases on q, k, v and o, attn_sinks, post_attention_norm the norm
// before the MLP, the router with a bias, each projection's experts stacked out of transformers'
// transposed, interleaved stacks, with their biases stacked too (`mxfp4`: the experts in MXFP4).
struct MoeFile {
  // "llama" (Mixtral), "qwen3moe", "qwen2moe" (q, k and v biases, a shared expert and its gate as
  // ffn_*_shexp and ffn_gate_inp_shexp, a vector), "olmoe", or without experts "granite" (its multipliers), "olmo2"
  // or "smollm3" (Llama's tensors, q and k interleaved; every fourth block without RoPE)
  std::string arch;
  bool split = false, q8_down = false;
  std::vector<std::pair<std::string, std::int64_t>> extra_u32 = {};  // more keys (a refusal's)
  std::int64_t window = 0;  // olmo2: OLMo 3's sliding window; gpt-oss: its window
  bool mxfp4 = false;       // gpt-oss: the experts' matrices in MXFP4
  bool shared_mlp = false;  // granitemoe: Granite-MoE-Shared's shared MLP, as ffn_*_shexp
};

// MXFP4 blocks of 32 values as ggml lays them out: an E8M0 scale byte (2^(e - 127)) large enough
// for the block's absmax to be at most 6 of it, then 16 bytes whose low nibbles are values 0..15 and
// high nibbles 16..31, each the nearest FP4 (E2M1) code.
std::vector<std::uint8_t> mxfp4_blocks(const float* x, std::int64_t n) {
  std::vector<std::uint8_t> out;
  for (std::int64_t b = 0; b < n; b += 32) {
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::abs(x[b + i]));
    const int e = std::clamp(static_cast<int>(std::ceil(std::log2(std::max(amax, 1e-30f) / 6.0f))), -127, 127);
    out.push_back(static_cast<std::uint8_t>(e + 127));
    auto code = [&](float v) {
      int best = 0;
      for (int c = 1; c < 16; ++c) {
        if (std::abs(std::ldexp(fp4_value(static_cast<std::uint8_t>(c)), e) - v) < std::abs(std::ldexp(fp4_value(static_cast<std::uint8_t>(best)), e) - v)) best = c;
      }
      return static_cast<std::uint8_t>(best);
    };
    for (int j = 0; j < 16; ++j) out.push_back(static_cast<std::uint8_t>(code(x[b + j]) | code(x[b + j + 16]) << 4));
  }
  return out;
}

// Expert e's matrix of projection `g` ("gate", "up", "down") [rows, cols] from a GPT-OSS folder's
// transposed stacks, gate_up_proj's even columns the gate's and odd ones the up's; with `bias`,
// its bias.
std::vector<float> gpt_oss_expert(const Checkpoint& hf, const std::string& moe, const std::string& g, std::int64_t e,
                                  const ModelConfig& c, bool bias = false) {
  const std::int64_t h = c.hidden_size, inter = c.moe_intermediate_size;
  const bool down = g == "down";
  const TensorRef& t = hf.get(moe + (down ? "experts.down_proj" : "experts.gate_up_proj") + (bias ? "_bias" : ""));
  const auto* v = reinterpret_cast<const float*>(t.data);
  const std::int64_t parity = g == "up" ? 1 : 0;
  if (bias) {
    std::vector<float> out(static_cast<std::size_t>(down ? h : inter));
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = down ? v[e * h + i] : v[e * 2 * inter + 2 * i + parity];
    return out;
  }
  const std::int64_t rows = down ? h : inter, cols = down ? inter : h;
  std::vector<float> out(static_cast<std::size_t>(rows * cols));
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t k = 0; k < cols; ++k) {
      out[static_cast<std::size_t>(r * cols + k)] = down ? v[(e * inter + k) * h + r] : v[(e * h + k) * 2 * inter + 2 * r + parity];
    }
  return out;
}

// Q8_0 blocks of 32 values: an f16 scale (absmax / 127) and 32 rounded codes, as ggml's quantizer.
std::vector<std::uint8_t> q8_0(const float* x, std::int64_t n) {
  std::vector<std::uint8_t> out;
  for (std::int64_t b = 0; b < n; b += 32) {
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::abs(x[b + i]));
    const float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
    const std::uint16_t d16 = f32_to_f16(d);
    out.push_back(static_cast<std::uint8_t>(d16 & 0xff));
    out.push_back(static_cast<std::uint8_t>(d16 >> 8));
    for (int i = 0; i < 32; ++i) out.push_back(static_cast<std::uint8_t>(static_cast<std::int8_t>(std::lround(x[b + i] * id))));
  }
  return out;
}

// Expert e's matrix of projection `g` ("gate", "up", "down") from a Granite-MoE folder's stacked
// input_linear (gate's rows, then up's) and output_linear.
std::vector<float> expert_slice(const Checkpoint& hf, const std::string& moe, const std::string& g, std::int64_t e,
                                const ModelConfig& c) {
  const std::int64_t h = c.hidden_size, inter = c.moe_intermediate_size;
  const TensorRef& t = hf.get(moe + (g == "down" ? "output_linear.weight" : "input_linear.weight"));
  const auto* v = reinterpret_cast<const float*>(t.data);
  const std::int64_t first = g == "down" ? e * h * inter : (e * 2 * inter + (g == "up" ? inter : 0)) * h;
  return std::vector<float>(v + first, v + first + inter * h);
}

std::vector<std::uint8_t> moe_gguf(const std::filesystem::path& folder, const MoeFile& f) {
  const ModelConfig c = read_model_config(folder);
  const Checkpoint hf = Checkpoint::open(folder);
  const bool qwen = f.arch == "qwen3moe", olmo2 = f.arch == "olmo2", olmo = olmo2 || f.arch == "olmoe";
  const bool qwen2 = f.arch == "qwen2moe", granitemoe = f.arch == "granitemoe", gpt_oss = f.arch == "gpt-oss";
  const bool cohere = f.arch == "command-r" || f.arch == "cohere2", glm4 = f.arch == "glm4";
  struct Tensor {
    std::string name;
    std::vector<std::uint64_t> dims;  // ggml's order: the contiguous dimension first
    std::uint32_t type = 0;           // 0 F32, 8 Q8_0, 39 MXFP4
    std::vector<std::uint8_t> data;
  };
  std::vector<Tensor> tensors;
  auto f32_of = [&](const std::string& h) {
    const TensorRef& t = hf.get(h);
    const auto* v = reinterpret_cast<const float*>(t.data);
    return std::vector<float>(v, v + t.elements());
  };
  auto add = [&](const std::string& g, const std::vector<std::int64_t>& shape, std::vector<float> v, bool q8 = false, bool mx = false) {
    Tensor t{g, {}, q8 ? 8u : mx ? 39u : 0u, {}};
    for (auto d = shape.rbegin(); d != shape.rend(); ++d) t.dims.push_back(static_cast<std::uint64_t>(*d));
    if (mx) {
      t.data = mxfp4_blocks(v.data(), static_cast<std::int64_t>(v.size()));
    } else if (q8) {
      t.data = q8_0(v.data(), static_cast<std::int64_t>(v.size()));
    } else {
      t.data.resize(v.size() * 4);
      std::memcpy(t.data.data(), v.data(), t.data.size());
    }
    tensors.push_back(std::move(t));
  };
  // llama.cpp's interleave of a llama file's query and key rows: file row h*d + 2j + s is row h*d + s*d/2 + j.
  auto interleave = [&](std::vector<float> v, std::int64_t heads, std::int64_t cols) {
    std::vector<float> out(v.size());
    const std::int64_t d = static_cast<std::int64_t>(v.size()) / cols / heads;
    for (std::int64_t h = 0; h < heads; ++h)
      for (std::int64_t j = 0; j < d / 2; ++j)
        for (std::int64_t s = 0; s < 2; ++s)
          std::copy_n(v.data() + (h * d + s * d / 2 + j) * cols, cols, out.data() + (h * d + 2 * j + s) * cols);
    return out;
  };
  add("token_embd.weight", {c.vocab_size, c.hidden_size}, f32_of("model.embed_tokens.weight"));
  add("output_norm.weight", {c.hidden_size}, f32_of("model.norm.weight"));
  if (!c.tie_word_embeddings) add("output.weight", {c.vocab_size, c.hidden_size}, f32_of("lm_head.weight"));
  const std::int64_t h = c.hidden_size, inter = c.moe_intermediate_size;
  for (std::int64_t l = 0; l < c.num_layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".", p = "model.layers." + std::to_string(l) + ".";
    if (!olmo2) add(b + "attn_norm.weight", {h}, f32_of(p + "input_layernorm.weight"));
    auto q = f32_of(p + "self_attn.q_proj.weight"), k = f32_of(p + "self_attn.k_proj.weight");
    if (!qwen && !qwen2 && !olmo && !gpt_oss && !cohere && !glm4) {  // Cohere's and GLM-4's rotate adjacent pairs in both
      q = interleave(q, c.num_heads, h);
      k = interleave(k, c.num_kv_heads, h);
    }
    add(b + "attn_q.weight", {c.q_size(), h}, q);
    add(b + "attn_k.weight", {c.kv_size(), h}, k);
    add(b + "attn_v.weight", {c.kv_size(), h}, f32_of(p + "self_attn.v_proj.weight"));
    add(b + "attn_output.weight", {h, c.q_size()}, f32_of(p + "self_attn.o_proj.weight"));
    if (qwen2 || gpt_oss || glm4) {
      add(b + "attn_q.bias", {c.q_size()}, f32_of(p + "self_attn.q_proj.bias"));
      add(b + "attn_k.bias", {c.kv_size()}, f32_of(p + "self_attn.k_proj.bias"));
      add(b + "attn_v.bias", {c.kv_size()}, f32_of(p + "self_attn.v_proj.bias"));
    }
    if (gpt_oss) {
      add(b + "attn_output.bias", {h}, f32_of(p + "self_attn.o_proj.bias"));
      add(b + "attn_sinks.weight", {c.num_heads}, f32_of(p + "self_attn.sinks"));
    }
    if (qwen || olmo) {
      add(b + "attn_q_norm.weight", {c.q_norm_width()}, f32_of(p + "self_attn.q_norm.weight"));
      add(b + "attn_k_norm.weight", {c.k_norm_width()}, f32_of(p + "self_attn.k_norm.weight"));
    }
    if (f.arch == "command-r") {  // each head's own: [heads, head_dim]
      add(b + "attn_q_norm.weight", {c.num_heads, c.head_dim}, f32_of(p + "self_attn.q_norm.weight"));
      add(b + "attn_k_norm.weight", {c.num_kv_heads, c.head_dim}, f32_of(p + "self_attn.k_norm.weight"));
    }
    if (cohere) {  // one norm: the MLP reads attn_norm's output too
    } else if (glm4) {  // its four norms under llama.cpp's names; gate and up fused in ffn_up
      add(b + "post_attention_norm.weight", {h}, f32_of(p + "post_self_attn_layernorm.weight"));
      add(b + "ffn_norm.weight", {h}, f32_of(p + "post_attention_layernorm.weight"));
      add(b + "post_ffw_norm.weight", {h}, f32_of(p + "post_mlp_layernorm.weight"));
      add(b + "ffn_up.weight", {2 * c.intermediate_size, h}, f32_of(p + "mlp.gate_up_proj.weight"));
      add(b + "ffn_down.weight", {h, c.intermediate_size}, f32_of(p + "mlp.down_proj.weight"));
      continue;
    } else if (olmo2) {
      add(b + "post_attention_norm.weight", {h}, f32_of(p + "post_attention_layernorm.weight"));
      add(b + "post_ffw_norm.weight", {h}, f32_of(p + "post_feedforward_layernorm.weight"));
    } else if (gpt_oss) {
      add(b + "post_attention_norm.weight", {h}, f32_of(p + "post_attention_layernorm.weight"));
    } else {
      add(b + "ffn_norm.weight", {h}, f32_of(p + "post_attention_layernorm.weight"));
    }
    if (!c.mixture_of_experts()) {  // Granite's and OLMo 2's dense MLP
      add(b + "ffn_gate.weight", {c.intermediate_size, h}, f32_of(p + "mlp.gate_proj.weight"));
      add(b + "ffn_up.weight", {c.intermediate_size, h}, f32_of(p + "mlp.up_proj.weight"));
      add(b + "ffn_down.weight", {h, c.intermediate_size}, f32_of(p + "mlp.down_proj.weight"));
      continue;
    }
    const bool mixtral = f.arch == "llama" || granitemoe;
    const std::string moe = p + (!mixtral ? "mlp." : "block_sparse_moe.");
    if (gpt_oss) {  // the router with its bias, each projection's experts and biases stacked
      add(b + "ffn_gate_inp.weight", {c.num_experts, h}, f32_of(moe + "router.weight"));
      add(b + "ffn_gate_inp.bias", {c.num_experts}, f32_of(moe + "router.bias"));
      for (const char* g : {"gate", "up", "down"}) {
        const bool down = std::string(g) == "down";
        std::vector<float> stacked, biases;
        for (std::int64_t e = 0; e < c.num_experts; ++e) {
          const auto v = gpt_oss_expert(hf, moe, g, e, c), bias = gpt_oss_expert(hf, moe, g, e, c, true);
          stacked.insert(stacked.end(), v.begin(), v.end());
          biases.insert(biases.end(), bias.begin(), bias.end());
        }
        add(b + "ffn_" + g + "_exps.weight", {c.num_experts, down ? h : inter, down ? inter : h}, stacked, false, f.mxfp4);
        add(b + "ffn_" + g + "_exps.bias", {c.num_experts, down ? h : inter}, biases);
      }
      continue;
    }
    add(b + "ffn_gate_inp.weight", {c.num_experts, h}, f32_of(moe + (granitemoe ? "router.layer.weight" : "gate.weight")));
    const std::pair<const char*, const char*> parts[] = {{"gate", !mixtral ? "gate_proj" : "w1"}, {"up", !mixtral ? "up_proj" : "w3"},
                                                         {"down", !mixtral ? "down_proj" : "w2"}};
    for (const auto& [g, name] : parts) {
      const bool down = std::string(g) == "down";
      const std::vector<std::int64_t> shape = down ? std::vector<std::int64_t>{h, inter} : std::vector<std::int64_t>{inter, h};
      std::vector<float> stacked;
      for (std::int64_t e = 0; e < c.num_experts; ++e) {
        // Granite-MoE's folder stacks them: input_linear's rows of expert e, gate's then up's; output_linear's.
        auto v = granitemoe ? expert_slice(hf, moe, g, e, c) : f32_of(moe + "experts." + std::to_string(e) + "." + name + ".weight");
        if (f.split) add(b + "ffn_" + g + "." + std::to_string(e) + ".weight", shape, v);
        stacked.insert(stacked.end(), v.begin(), v.end());
      }
      if (!f.split) add(b + "ffn_" + g + "_exps.weight", {c.num_experts, shape[0], shape[1]}, stacked, down && f.q8_down);
    }
    if (f.shared_mlp) {  // llama.cpp's converter splits input_linear: gate's rows, then up's
      const std::int64_t shared = c.shared_expert_intermediate_size;
      const auto input = f32_of(p + "shared_mlp.input_linear.weight");
      add(b + "ffn_gate_shexp.weight", {shared, h}, std::vector<float>(input.begin(), input.begin() + shared * h));
      add(b + "ffn_up_shexp.weight", {shared, h}, std::vector<float>(input.begin() + shared * h, input.end()));
      add(b + "ffn_down_shexp.weight", {h, shared}, f32_of(p + "shared_mlp.output_linear.weight"));
    }
    if (qwen2) {
      const std::int64_t shared = c.shared_expert_intermediate_size;
      add(b + "ffn_gate_inp_shexp.weight", {h}, f32_of(moe + "shared_expert_gate.weight"));
      add(b + "ffn_gate_shexp.weight", {shared, h}, f32_of(moe + "shared_expert.gate_proj.weight"));
      add(b + "ffn_up_shexp.weight", {shared, h}, f32_of(moe + "shared_expert.up_proj.weight"));
      add(b + "ffn_down_shexp.weight", {h, shared}, f32_of(moe + "shared_expert.down_proj.weight"));
    }
  }
  GgufWriter w;
  w.u64(tensors.size());
  std::vector<std::function<void()>> kvs;
  const auto u32 = [&](const std::string& key, std::int64_t v) {
    kvs.push_back([&w, key, v] {
      const auto x = static_cast<std::uint32_t>(v);
      put_kv(w, key, 4, &x, 4);
    });
  };
  const auto f32 = [&](const std::string& key, double v) {
    kvs.push_back([&w, key, v] {
      const auto x = static_cast<float>(v);
      put_kv(w, key, 6, &x, 4);
    });
  };
  const std::string& a = f.arch;
  u32(a + ".context_length", c.max_position_embeddings);
  u32(a + ".embedding_length", h);
  u32(a + ".feed_forward_length", c.intermediate_size);
  u32(a + ".block_count", c.num_layers);
  u32(a + ".attention.head_count", c.num_heads);
  u32(a + ".attention.head_count_kv", c.num_kv_heads);
  f32(a + ".rope.freq_base", c.rope_theta);
  if (cohere) {
    f32(a + ".attention.layer_norm_epsilon", c.rms_norm_eps);
    f32(a + ".logit_scale", 1.0 / c.logit_divisor);
  } else {
    f32(a + ".attention.layer_norm_rms_epsilon", c.rms_norm_eps);
  }
  if (c.mixture_of_experts()) {
    u32(a + ".expert_count", c.num_experts);
    u32(a + ".expert_used_count", c.experts_per_token);
  }
  if (a == "granite" || granitemoe) {  // llama.cpp's names of its multipliers
    f32(a + ".embedding_scale", c.embedding_scale);
    f32(a + ".residual_scale", c.residual_scale);
    f32(a + ".attention.scale", c.attention_scale);
    f32(a + ".logit_scale", c.logit_divisor);
  }
  if (f.shared_mlp) u32(a + ".expert_shared_feed_forward_length", c.shared_expert_intermediate_size);
  if (glm4) {
    u32(a + ".rope.dimension_count", c.rope_dims());
    // A BOS id and add_bos_token, which a glm4 vocabulary's pre-tokenizer overrides (no BOS).
    u32("tokenizer.ggml.bos_token_id", 1);
    kvs.push_back([&w] {
      w.str("tokenizer.ggml.pre");
      w.u32(8);
      w.str("glm4");
    });
  }
  if (qwen2) {
    u32(a + ".expert_feed_forward_length", inter);
    u32(a + ".expert_shared_feed_forward_length", c.shared_expert_intermediate_size);
  }
  if (qwen) {
    u32(a + ".expert_feed_forward_length", inter);
    u32(a + ".attention.key_length", c.head_dim);
    u32(a + ".attention.value_length", c.head_dim);
  }
  if (f.window > 0) u32(a + ".attention.sliding_window", f.window);
  if (gpt_oss) {
    u32(a + ".expert_feed_forward_length", inter);
    u32(a + ".attention.key_length", c.head_dim);
    u32(a + ".attention.value_length", c.head_dim);
    // A vocabulary whose <|return|> (209) is the EOS and which has a <|call|> (210).
    u32("tokenizer.ggml.eos_token_id", 209);
    kvs.push_back([&w, vocab = c.vocab_size] {
      w.str("tokenizer.ggml.tokens");
      w.u32(9);  // an array
      w.u32(8);  // of strings
      w.u64(static_cast<std::uint64_t>(vocab));
      for (std::int64_t id = 0; id < vocab; ++id) w.str(id == 209 ? "<|return|>" : id == 210 ? "<|call|>" : "t" + std::to_string(id));
    });
  }
  for (const auto& [key, v] : f.extra_u32) u32(key, v);
  w.u64(kvs.size() + 1);
  w.str("general.architecture");
  w.u32(8);
  w.str(a);
  for (const auto& kv : kvs) kv();
  std::uint64_t offset = 0;
  for (const Tensor& t : tensors) {
    w.str(t.name);
    w.u32(static_cast<std::uint32_t>(t.dims.size()));
    for (std::uint64_t d : t.dims) w.u64(d);
    w.u32(t.type);
    w.u64(offset);
    offset += (t.data.size() + 31) / 32 * 32;
  }
  w.pad(32);
  for (const Tensor& t : tensors) {
    w.raw(t.data.data(), t.data.size());
    w.pad(32);
  }
  return w.bytes_;
}

// The file is its Hugging Face folder: the same configuration, every tensor bit for bit (a Q8_0
// expert as its blocks dequantize, each expert its own slice), the same hidden states.
void expect_moe_file_is_its_folder(const MoeFile& f) {
  SCOPED_TRACE(f.arch + (f.split ? " split" : "") + (f.q8_down ? " q8_0" : "") + (f.mxfp4 ? " mxfp4" : "") + (f.window > 0 ? " window" : ""));
  const test::TempDir dir;
  SyntheticSpec spec;
  const bool qwen = f.arch == "qwen3moe", granite = f.arch == "granite", olmo2 = f.arch == "olmo2", olmoe = f.arch == "olmoe";
  const bool smollm3 = f.arch == "smollm3", qwen2 = f.arch == "qwen2moe";
  const bool dense = granite || olmo2 || smollm3 || f.arch == "command-r" || f.arch == "cohere2" || f.arch == "glm4";
  const bool gpt_oss = f.arch == "gpt-oss", command_r = f.arch == "command-r", cohere2 = f.arch == "cohere2";
  const bool cohere = command_r || cohere2;
  spec.architecture = gpt_oss ? "GptOssForCausalLM"
                      : command_r ? "CohereForCausalLM"
                      : cohere2 ? "Cohere2ForCausalLM"
                      : f.arch == "glm4" ? "Glm4ForCausalLM"
                      : f.arch == "granitemoe" ? (f.shared_mlp ? "GraniteMoeSharedForCausalLM" : "GraniteMoeForCausalLM")
                      : qwen2   ? "Qwen2MoeForCausalLM"
                      : smollm3 ? "SmolLM3ForCausalLM"
                      : qwen    ? "Qwen3MoeForCausalLM"
                      : granite ? "GraniteForCausalLM"
                      : olmoe   ? "OlmoeForCausalLM"
                      : olmo2   ? (f.window > 0 ? "Olmo3ForCausalLM" : "Olmo2ForCausalLM")
                                : "MixtralForCausalLM";
  spec.sliding_window = f.window;
  spec.norm_topk_prob = !olmoe && !qwen2;  // as llama.cpp runs OLMoE and Qwen2-MoE
  spec.shared_expert_intermediate_size = qwen2 ? 80 : f.shared_mlp ? 56 : 0;
  spec.hidden_size = 64;
  spec.intermediate_size = 96;
  spec.moe_intermediate_size = qwen ? 64 : qwen2 ? 32 : 0;
  spec.num_layers = smollm3 || cohere2 ? 4 : 2;  // SmolLM3: block 3 without RoPE; Cohere 2: block 3 without a window or RoPE
  spec.num_heads = 4;
  spec.num_kv_heads = 2;
  spec.head_dim = qwen ? 32 : gpt_oss ? 16 : 0;
  spec.vocab_size = 300;
  spec.max_position_embeddings = 64;
  spec.weight_std = 0.15;
  spec.num_experts = qwen ? 6 : dense ? 0 : 4;
  spec.experts_per_token = qwen ? 3 : 2;
  spec.seed = 12;
  write_synthetic_checkpoint(spec, dir / "hf");
  const auto gguf = dir / "moe.gguf";
  {
    const auto bytes = moe_gguf(dir / "hf", f);
    std::ofstream out(gguf, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
  const ModelConfig hf = read_model_config(dir / "hf"), g = read_model_config(gguf);
  EXPECT_EQ(g.architecture, spec.architecture);
  EXPECT_EQ(g.num_experts, hf.num_experts);
  EXPECT_EQ(g.experts_per_token, hf.experts_per_token);
  EXPECT_EQ(g.moe_intermediate_size, hf.moe_intermediate_size);
  EXPECT_EQ(g.moe_renormalize, !olmoe && !qwen2);  // as llama.cpp runs them
  EXPECT_EQ(g.shared_expert_intermediate_size, hf.shared_expert_intermediate_size);
  EXPECT_EQ(g.attention_bias, qwen2 || gpt_oss || f.arch == "glm4");
  if (f.arch == "glm4") {
    EXPECT_EQ(g.bos_token_id, -1);  // its template writes [gMASK]<sop>
  }
  EXPECT_TRUE(g.attention_output_bias == gpt_oss && g.attention_sinks == gpt_oss && g.expert_biases == gpt_oss);
  EXPECT_EQ(g.mlp_activation, hf.mlp_activation);
  EXPECT_EQ(g.swiglu_limit, hf.swiglu_limit);
  if (gpt_oss) {
    EXPECT_EQ(g.eos_token_ids, (std::vector<std::int32_t>{209, 210}));  // a call ends the turn too
  }
  EXPECT_EQ(g.moe_renormalize, hf.moe_renormalize);
  EXPECT_TRUE(g.dense_layers.empty());
  EXPECT_EQ(g.qk_norm, qwen || olmo2 || olmoe || command_r);
  EXPECT_EQ(g.qk_norm_per_head_weights, command_r);
  EXPECT_TRUE(g.layer_norms == cohere && g.parallel_block == cohere && g.rope_adjacent_pairs == (cohere || f.arch == "glm4"));
  EXPECT_TRUE(g.fused_gate_up == hf.fused_gate_up && g.rope_dims() == hf.rope_dims() && g.output_norms == hf.output_norms);
  EXPECT_FLOAT_EQ(static_cast<float>(g.rms_norm_eps), static_cast<float>(hf.rms_norm_eps));
  EXPECT_EQ(g.qk_norm_across_heads, olmo2 || olmoe);
  EXPECT_TRUE(g.input_norms == hf.input_norms && g.output_norms == hf.output_norms);
  EXPECT_EQ(g.layer_windows, hf.layer_windows);
  EXPECT_EQ(g.rope_layers, hf.rope_layers);
  EXPECT_EQ(g.rope_layers, smollm3 || cohere2 ? (std::vector<bool>{true, true, true, false}) : std::vector<bool>{});
  if (cohere2) {
    EXPECT_EQ(g.layer_windows, (std::vector<std::int64_t>{f.window, f.window, f.window, 0}));
  }
  EXPECT_TRUE(g.embedding_scale == hf.embedding_scale && g.residual_scale == hf.residual_scale &&
              g.attention_scale == hf.attention_scale && g.logit_divisor == hf.logit_divisor);
  const Checkpoint a = Checkpoint::open(dir / "hf"), b = Checkpoint::open(gguf);
  int compared = 0;
  const bool granitemoe = f.arch == "granitemoe";
  for (const auto& [name, listed] : b.tensors()) {
    const TensorRef& t = b.get(name);
    TensorRef ref;
    std::vector<float> slice;  // Granite-MoE: the file's experts and router, under Mixtral's names, against the folder's stacks
    const std::size_t moe_at = name.find("block_sparse_moe."), experts_at = name.find("mlp.experts.");
    if (gpt_oss && experts_at != std::string::npos) {  // "mlp.experts.E.gate_proj.weight" against the folder's stacks
      const std::string moe = name.substr(0, experts_at + 4), rest = name.substr(experts_at + 12);
      const std::size_t dot = rest.find('.');
      const std::string projection = rest.substr(dot + 1, rest.find('_', dot) - dot - 1);
      slice = gpt_oss_expert(a, moe, projection, std::stoll(rest.substr(0, dot)), hf, name.ends_with(".bias"));
      ref = t;
      ref.data = reinterpret_cast<const std::byte*>(slice.data());
    } else if (f.shared_mlp && name.find("shared_mlp.") != std::string::npos && !name.ends_with("output_linear.weight")) {
      // gate_proj and up_proj: the folder's input_linear rows
      const TensorRef& input = a.get(name.substr(0, name.find("shared_mlp.") + 11) + "input_linear.weight");
      const std::int64_t rows = t.shape.at(0), cols = t.shape.at(1);
      const auto* v = reinterpret_cast<const float*>(input.data) + (name.ends_with("up_proj.weight") ? rows * cols : 0);
      slice.assign(v, v + rows * cols);
      ref = t;
      ref.data = reinterpret_cast<const std::byte*>(slice.data());
    } else if (granitemoe && moe_at != std::string::npos) {
      const std::string moe = name.substr(0, moe_at + 17), rest = name.substr(moe_at + 17);
      if (rest == "gate.weight") {
        ref = a.get(moe + "router.layer.weight");
      } else {
        const std::size_t dot = rest.find('.', 8);  // "experts.E.wN.weight"
        const std::string w = rest.substr(dot + 1, 2);
        slice = expert_slice(a, moe, w == "w1" ? "gate" : w == "w3" ? "up" : "down", std::stoll(rest.substr(8, dot - 8)), hf);
        ref = t;
        ref.data = reinterpret_cast<const std::byte*>(slice.data());
      }
    } else {
      ref = a.get(name);
    }
    ASSERT_EQ(t.shape, ref.shape) << name;
    const auto* got = reinterpret_cast<const float*>(t.data);
    const auto* want = reinterpret_cast<const float*>(ref.data);
    if (f.mxfp4 && name.find(".experts.") != std::string::npos && name.ends_with(".weight")) {  // each block of 32 as MXFP4 gives it back
      const auto blocks = mxfp4_blocks(want, ref.elements());
      for (std::int64_t i = 0; i < ref.elements(); ++i) {
        const std::uint8_t* block = blocks.data() + (i / 32) * 17;
        const std::uint8_t byte = block[1 + i % 16];
        ASSERT_EQ(got[i], std::ldexp(fp4_value(i % 32 < 16 ? byte & 0x0F : byte >> 4), block[0] - 127)) << name << " " << i;
      }
    } else if (f.q8_down && name.find(".experts.") != std::string::npos && name.find("down_proj") != std::string::npos) {  // each block of 32 as Q8_0 gives it back
      const auto blocks = q8_0(want, ref.elements());
      for (std::int64_t i = 0; i < ref.elements(); ++i) {
        const std::uint8_t* block = blocks.data() + (i / 32) * 34;
        const float d = f16_to_f32(static_cast<std::uint16_t>(block[0] | block[1] << 8));
        ASSERT_EQ(got[i], d * static_cast<float>(static_cast<std::int8_t>(block[2 + i % 32]))) << name << " " << i;
      }
    } else {
      ASSERT_EQ(std::memcmp(got, want, t.bytes), 0) << name;
    }
    ++compared;
  }
  // embeddings, final norm, head; per block 4 attention, 2 norms (and q, k norms), the router and 3 per expert (Granite, OLMo 2: its MLP)
  // (Qwen2-MoE: 3 biases, its shared expert's 3 and gate)
  // (GPT-OSS: 2 norms, 4 attention weights and biases, sinks, the router and its bias; 3 weights and 3 biases per expert)
  // (Cohere: one norm, and Command R+'s 2 q and k norms; GLM-4: 3 biases, 4 norms, and gate and up in one tensor)
  EXPECT_EQ(compared, 3 + spec.num_layers * ((qwen || olmoe ? 9 : granite || smollm3 ? 6 : olmo2 ? 8 : qwen2 ? 14 : gpt_oss ? 13
                                              : command_r ? 7 : cohere2 ? 5 : f.shared_mlp ? 10 : f.arch == "glm4" ? 10 : 7) +
                                             (dense ? 3 : (gpt_oss ? 6 : 3) * spec.num_experts)));
  const auto [x, y] = hidden_states_of(a, hf, b, g);
  if (f.q8_down || f.mxfp4) {
    EXPECT_NE(x, y);
  } else {
    EXPECT_EQ(x, y);
  }
}

TEST(GgufModel, AMixtralFileIsItsHuggingFaceFolder) {
  expect_moe_file_is_its_folder({"llama"});
  expect_moe_file_is_its_folder({"llama", /*split=*/true});
}
TEST(GgufModel, AGraniteFileIsItsHuggingFaceFolder) { expect_moe_file_is_its_folder({"granite"}); }
TEST(GgufModel, AGraniteMoeFileIsItsHuggingFaceFolder) {
  expect_moe_file_is_its_folder({"granitemoe"});
  expect_moe_file_is_its_folder({"granitemoe", false, false, {}, 0, false, /*shared_mlp=*/true});  // Granite-MoE-Shared
}
TEST(GgufModel, OlmoFilesAreTheirHuggingFaceFolders) {
  expect_moe_file_is_its_folder({"olmo2"});
  expect_moe_file_is_its_folder({"olmo2", false, false, {}, /*window=*/3});  // OLMo 3: the window on 3 of every 4 blocks
  expect_moe_file_is_its_folder({"olmoe"});
}
TEST(GgufModel, AQwen2MoeFileIsItsHuggingFaceFolder) {
  expect_moe_file_is_its_folder({"qwen2moe"});
  expect_moe_file_is_its_folder({"qwen2moe", false, /*q8_down=*/true});
}
TEST(GgufModel, ASmolLM3FileIsItsHuggingFaceFolder) { expect_moe_file_is_its_folder({"smollm3"}); }
TEST(GgufModel, AGlm4FileIsItsHuggingFaceFolder) { expect_moe_file_is_its_folder({"glm4"}); }
// Vocabularies whose pre-tokenizer splits digits: GLM-4's (`glm4`, Llama 3's split: digits in
// threes) and Cohere's (`command-r`: each digit apart). A byte-level
// vocabulary of the 256 byte characters with merges "1 2" and "12 3".
TEST(GgufTokenizer, PreTokenizersThatSplitDigits) {
  for (const std::string pre : {"glm4", "command-r"}) {
    GgufWriter w;
    w.u64(0);  // tensors
    w.u64(7);  // metadata
    w.str("general.architecture");
    w.u32(8);
    w.str("glm4");
    w.str("tokenizer.ggml.model");
    w.u32(8);
    w.str("gpt2");
    w.str("tokenizer.ggml.pre");
    w.u32(8);
    w.str(pre);
    std::vector<std::string> tokens;
    int next = 256;
    for (int b = 0; b < 256; ++b) {  // GPT-2's byte alphabet, in byte order
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
      const unsigned cp = printable ? b : next++;
      std::string s;
      if (cp < 0x80) {
        s += static_cast<char>(cp);
      } else {
        s += static_cast<char>(0xC0 | (cp >> 6));
        s += static_cast<char>(0x80 | (cp & 0x3F));
      }
      tokens.push_back(s);
    }
    tokens.push_back("12");   // 256
    tokens.push_back("123");  // 257
    const auto strings = [&](const std::string& key, const std::vector<std::string>& values) {
      w.str(key);
      w.u32(9);  // an array
      w.u32(8);  // of strings
      w.u64(values.size());
      for (const auto& v : values) w.str(v);
    };
    strings("tokenizer.ggml.tokens", tokens);
    strings("tokenizer.ggml.merges", {"1 2", "12 3"});
    w.str("tokenizer.ggml.bos_token_id");
    w.u32(4);
    w.u32(65);
    w.str("tokenizer.ggml.add_bos_token");
    w.u32(7);  // a bool
    w.raw("\x01", 1);
    const GgufFile file = parse(w);
    const auto tokenizer = gguf_tokenizer(file);
    const std::vector<std::int32_t> ids = tokenizer->encode("1231231");
    if (pre == "glm4") {
      EXPECT_EQ(ids, (std::vector<std::int32_t>{257, 257, '1'}));  // "123" "123" "1"
    } else {
      EXPECT_EQ(ids, (std::vector<std::int32_t>{'1', '2', '3', '1', '2', '3', '1'}));  // each digit apart
    }
    EXPECT_EQ(tokenizer->decode(ids), "1231231");
  }
}

TEST(GgufModel, CohereFilesAreTheirHuggingFaceFolders) {
  expect_moe_file_is_its_folder({"command-r"});
  expect_moe_file_is_its_folder({"cohere2", false, false, {}, /*window=*/3});  // the window on 3 of every 4 blocks
}
TEST(GgufModel, AGptOssFileIsItsHuggingFaceFolder) {
  expect_moe_file_is_its_folder({"gpt-oss", false, false, {}, /*window=*/3});
  expect_moe_file_is_its_folder({"gpt-oss", false, false, {}, /*window=*/3, /*mxfp4=*/true});
}
TEST(GgufModel, AQwen3MoeFileIsItsHuggingFaceFolder) {
  expect_moe_file_is_its_folder({"qwen3moe"});
  expect_moe_file_is_its_folder({"qwen3moe", false, /*q8_down=*/true});
}

// What llama.cpp runs for other mixtures, and sepal does not, is refused in one line.
TEST(GgufModel, OtherMixturesAreRefused) {
  SyntheticSpec spec;
  spec.architecture = "Qwen3MoeForCausalLM";
  spec.hidden_size = 64, spec.intermediate_size = 96, spec.num_layers = 1, spec.num_heads = 2, spec.num_kv_heads = 2;
  spec.vocab_size = 300, spec.num_experts = 4;
  const test::TempDir dir;
  write_synthetic_checkpoint(spec, dir / "hf");
  const std::pair<std::pair<std::string, std::int64_t>, const char*> cases[] = {
      {{"qwen3moe.expert_shared_count", 1}, "shared experts (qwen3moe.expert_shared_count 1) are not supported"},
      {{"qwen3moe.expert_gating_func", 2}, "qwen3moe.expert_gating_func 2 is not supported (1, a softmax, is)"}};
  for (const auto& [key, message] : cases) {
    const auto path = dir / "bad.gguf";
    MoeFile f{"qwen3moe"};
    f.extra_u32 = {key};
    const auto bytes = moe_gguf(dir / "hf", f);
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    try {
      (void)read_model_config(path);
      ADD_FAILURE() << "accepted " << key.first;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
    }
  }
}

TEST(GgufFile, MalformedFilesGetOneLine) {
  GgufWriter bad_magic = small_file();
  bad_magic.bytes_[0] = 'X';
  expect_refused(bad_magic, "bad magic");
  GgufWriter v1 = small_file();
  v1.bytes_[4] = 1;
  expect_refused(v1, "version 1 is not supported");
  GgufWriter truncated = small_file();
  truncated.bytes_.resize(40);
  expect_refused(truncated, "test.gguf");
  expect_refused(small_file(64), "past the end");
  expect_refused(small_file(8), "not aligned");
  expect_refused(small_file(0, 99), "type 99, which sepal does not read");
  expect_refused(small_file(0, 8), "not a multiple of Q8_0's blocks of 32");
  expect_refused(small_file(0, 0, 5), "5 dimensions");
  GgufWriter huge = small_file();
  const std::uint64_t absurd = std::uint64_t{1} << 60;
  std::memcpy(huge.bytes_.data() + 16, &absurd, 8);  // the metadata count
  expect_refused(huge, "does not fit in the file");
  // A vocabulary that is not a llama one, a tokenizer that is missing: one line each.
  EXPECT_THROW((void)gguf_tokenizer(parse(small_file())), Error);
  EXPECT_THROW((void)gguf_model_config(parse(small_file())), Error);
}

}  // namespace
}  // namespace sepal
