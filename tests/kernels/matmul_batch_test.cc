// What callers may rely on when products share work: matmul_many gives every matrix exactly what
// matmul gives it alone, and a token's prompt-path result does not depend on the other tokens in
// its batch (nor, for int8 with VNNI, on whether it was decoded alone or in a prompt).
#include <gtest/gtest.h>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <utility>
#include <vector>

#include "kernels/cpu_isa.h"
#include "kernels/dtype.h"
#include "kernels/error.h"
#include "kernels/matmul.h"
#include "tests/test_util.h"

namespace sepal {
namespace {

// One matrix's storage in every dtype, from the same random floats.
struct Matrix {
  std::int64_t rows = 0, cols = 0;
  std::vector<float> f32;
  std::vector<std::uint16_t> bf16;
  std::vector<std::int8_t> i8;
  std::vector<float> scales;

  Matrix(std::int64_t r, std::int64_t c, unsigned seed) : rows(r), cols(c) {
    f32 = test::random_floats(static_cast<std::size_t>(r * c), seed, 0.1f);
    for (float v : f32) bf16.push_back(f32_to_bf16(v));
    i8.resize(f32.size());
    for (std::int64_t row = 0; row < r; ++row) {
      float amax = 0;
      for (std::int64_t k = 0; k < c; ++k) amax = std::max(amax, std::fabs(f32[static_cast<std::size_t>(row * c + k)]));
      scales.push_back(amax / 127.0f);
      for (std::int64_t k = 0; k < c; ++k) {
        const auto i = static_cast<std::size_t>(row * c + k);
        i8[i] = static_cast<std::int8_t>(std::lround(f32[i] / scales.back()));
      }
    }
  }

  WeightView view(DType dtype, float threshold = 6.0f) const {
    switch (dtype) {
      case DType::kBF16: return {dtype, rows, cols, bf16.data()};
      case DType::kI8: return {dtype, rows, cols, i8.data(), scales.data(), threshold};
      default: return {DType::kF32, rows, cols, f32.data()};
    }
  }
};

std::vector<CpuIsa> supported_levels() {
  std::vector<CpuIsa> levels;
  for (CpuIsa isa : {CpuIsa::kGeneric, CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAvx512Vnni, CpuIsa::kAmx})
    if (cpu_supports(isa)) levels.push_back(isa);
  return levels;
}

TEST(MatmulMany, EveryOutputIsWhatMatmulGivesAlone) {
  const std::int64_t cols = 200;
  const Matrix a(40, cols, 1), b(300, cols, 2), c(17, cols, 3);
  for (CpuIsa isa : supported_levels()) {
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kI8}) {
      for (std::int64_t n : {1, 3, 17}) {
        auto x = test::random_floats(static_cast<std::size_t>(n * cols), 4);
        x[5] = 8.0f;  // an outlier column for int8
        const WeightView ws[] = {a.view(dtype), b.view(dtype), c.view(dtype)};
        std::vector<float> ya(static_cast<std::size_t>(n * 40)), yb(static_cast<std::size_t>(n * 300)),
            yc(static_cast<std::size_t>(n * 17));
        float* const ys[] = {ya.data(), yb.data(), yc.data()};
        matmul_many(x.data(), n, ws, ys, isa);
        for (int i = 0; i < 3; ++i) {
          std::vector<float> alone(static_cast<std::size_t>(n * ws[i].rows));
          matmul(x.data(), n, ws[i], alone.data(), isa);
          const std::vector<float> fused(ys[i], ys[i] + alone.size());
          ASSERT_EQ(fused, alone) << cpu_isa_name(isa) << " " << dtype_name(dtype) << " n=" << n << " matrix " << i;
        }
      }
    }
  }
}

TEST(MatmulMany, MixedDtypesAndEmptyListsAreHandled) {
  const std::int64_t cols = 64, n = 6;
  const Matrix a(20, cols, 5), b(33, cols, 6);
  const auto x = test::random_floats(static_cast<std::size_t>(n * cols), 7);
  const WeightView ws[] = {a.view(DType::kF32), b.view(DType::kI8)};
  std::vector<float> ya(static_cast<std::size_t>(n * 20)), yb(static_cast<std::size_t>(n * 33));
  float* const ys[] = {ya.data(), yb.data()};
  matmul_many(x.data(), n, ws, ys);
  std::vector<float> alone(yb.size());
  matmul(x.data(), n, ws[1], alone.data());
  EXPECT_EQ(yb, alone);
  matmul_many(x.data(), n, std::span<const WeightView>(), std::span<float* const>());  // nothing to do
}

TEST(MatmulMany, Int8RowsTooLongForInt32SumsAreRefused) {
  const std::vector<std::int8_t> q(1, 1);
  const std::vector<float> scales(1, 1.0f), x(1, 1.0f);
  std::vector<float> y(1);
  const WeightView w{DType::kI8, 1, kMaxInt8Cols + 1, q.data(), scales.data()};  // never read
  EXPECT_THROW(matmul(x.data(), 1, w, y.data()), Error);
}

// Prompt-sized batches (more than kStreamingMaxTokens tokens): tokens 3..22 of a 29-token batch
// computed as a batch of their own (other tiles, other tile positions) give the same bits. Below
// AVX-512, f32 and bf16 prompts go to OpenBLAS, whose edge tiles round differently: not promised.
TEST(MatmulBatch, APromptTokensResultDoesNotDependOnItsBatch) {
  const std::int64_t cols = 300, rows = 77, n = 29, first = 3, sub = 20;
  const Matrix m(rows, cols, 8);
  const auto x = test::random_floats(static_cast<std::size_t>(n * cols), 9);
  for (CpuIsa isa : supported_levels()) {
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kI8}) {
      if (dtype != DType::kI8 && isa < CpuIsa::kAvx512) continue;
      // Without outliers: LLM.int8() picks its outlier columns over the whole batch, by design.
      const WeightView w = m.view(dtype, INFINITY);
      std::vector<float> all(static_cast<std::size_t>(n * rows)), part(static_cast<std::size_t>(sub * rows));
      matmul(x.data(), n, w, all.data(), isa);
      matmul(x.data() + first * cols, sub, w, part.data(), isa);
      const std::vector<float> same(all.begin() + first * rows, all.begin() + (first + sub) * rows);
      EXPECT_EQ(part, same) << cpu_isa_name(isa) << " " << dtype_name(dtype);
    }
  }
}

// With VNNI the int8 sums are exact and decode and prompts finish them the same way: a token
// decoded alone gives the bits it gets inside a prompt, outliers included when they are the same.
TEST(MatmulBatch, ADecodeTokensResultDoesNotDependOnTheOthersOfItsCall) {
  // The streaming path (up to kStreamingMaxTokens tokens): what speculative decoding's tree
  // steps rely on to give decoding's bits. Int8 with outlier columns in some tokens only (each
  // token's own are split off), and without any.
  const std::int64_t cols = 200;
  const Matrix m(70, cols, 21);
  auto x = test::random_floats(static_cast<std::size_t>(kStreamingMaxTokens * cols), 22);
  x[17] = 9.0f;                 // token 0
  x[2 * cols + 17] = -7.5f;     // token 2, the same column
  x[3 * cols + 150] = 6.5f;     // token 3, another
  x[1 * cols + 199] = -12.0f;   // token 1, the last column
  struct Case {
    DType dtype;
    float threshold;
  };
  for (CpuIsa isa : supported_levels()) {
    for (const Case c : {Case{DType::kF32, 6.0f}, Case{DType::kBF16, 6.0f}, Case{DType::kI8, 6.0f}, Case{DType::kI8, INFINITY}}) {
      const DType dtype = c.dtype;
      const WeightView w = m.view(dtype, c.threshold);
      for (std::int64_t n = 2; n <= kStreamingMaxTokens; ++n) {
        std::vector<float> together(static_cast<std::size_t>(n * m.rows)), alone(static_cast<std::size_t>(m.rows));
        matmul(x.data(), n, w, together.data(), isa);
        for (std::int64_t t = 0; t < n; ++t) {
          matmul(x.data() + t * cols, 1, w, alone.data(), isa);
          ASSERT_TRUE(std::equal(alone.begin(), alone.end(), together.begin() + t * m.rows))
              << cpu_isa_name(isa) << " " << dtype_name(dtype) << " token " << t << " of " << n;
        }
      }
    }
  }
}

// matmul_many_alone: any number of rows, each the bits it gets decoded alone, over matrices
// sharing one pass, with tiles of weight rows smaller than a thread's slice; int8 with outlier
// columns that only some rows have, in different groups of kStreamingMaxTokens, and (n = 48)
// outlier columns in every row, 96 in the call.
TEST(MatmulBatch, ManyRowsAloneGiveEachRowItsDecodeBits) {
  const std::int64_t cols = 200;
  const Matrix a(700, cols, 31), b(90, cols, 32);
  for (const std::int64_t n : {5, 16, 23, 48}) {
    auto x = test::random_floats(static_cast<std::size_t>(n * cols), 33);
    x[17] = 9.0f;                          // row 0
    x[(n - 1) * cols + 17] = -7.5f;        // the last row, the same column
    x[6 % n * cols + 150] = 6.5f;          // another group's row, another column
    if (n == 48) {
      for (std::int64_t t = 0; t < n; ++t) x[t * cols + (t * 3) % cols] = x[t * cols + (t * 3 + 1) % cols] = 8.0f;
    }
    for (CpuIsa isa : supported_levels()) {
      for (const DType dtype : {DType::kF32, DType::kBF16, DType::kI8}) {
        const WeightView ws[] = {a.view(dtype, 6.0f), b.view(dtype, 6.0f)};
        std::vector<float> ya(static_cast<std::size_t>(n * a.rows)), yb(static_cast<std::size_t>(n * b.rows));
        float* const ys[] = {ya.data(), yb.data()};
        matmul_many_alone(x.data(), n, ws, ys, isa);
        for (std::int64_t t = 0; t < n; ++t) {
          std::vector<float> alone_a(static_cast<std::size_t>(a.rows)), alone_b(static_cast<std::size_t>(b.rows));
          matmul(x.data() + t * cols, 1, ws[0], alone_a.data(), isa);
          matmul(x.data() + t * cols, 1, ws[1], alone_b.data(), isa);
          ASSERT_TRUE(std::equal(alone_a.begin(), alone_a.end(), ya.begin() + t * a.rows))
              << cpu_isa_name(isa) << " " << dtype_name(dtype) << " row " << t << " of " << n;
          ASSERT_TRUE(std::equal(alone_b.begin(), alone_b.end(), yb.begin() + t * b.rows))
              << cpu_isa_name(isa) << " " << dtype_name(dtype) << " row " << t << " of " << n << " (second matrix)";
        }
      }
    }
  }
}

TEST(MatmulBatch, Int8DecodeAndPromptAgreeBitForBitWithVnni) {
  if (!cpu_supports(CpuIsa::kAvx512Vnni)) GTEST_SKIP() << "CPU lacks avx512vnni";
  const std::int64_t cols = 300, rows = 77, n = 9;
  const Matrix m(rows, cols, 10);
  auto x = test::random_floats(static_cast<std::size_t>(n * cols), 11);
  for (std::int64_t t = 0; t < n; ++t) x[static_cast<std::size_t>(t * cols + 17)] = t % 2 ? 7.5f : -9.0f;
  const WeightView w = m.view(DType::kI8, 6.0f);
  std::vector<float> prompt(static_cast<std::size_t>(n * rows));
  matmul(x.data(), n, w, prompt.data(), CpuIsa::kAvx512Vnni);
  for (std::int64_t t = 0; t < n; ++t) {
    std::vector<float> alone(static_cast<std::size_t>(rows));
    matmul(x.data() + t * cols, 1, w, alone.data(), CpuIsa::kAvx512Vnni);
    const std::vector<float> in_prompt(prompt.begin() + t * rows, prompt.begin() + (t + 1) * rows);
    EXPECT_EQ(alone, in_prompt) << "token " << t;
  }
}

// A copy of bytes that ends where an inaccessible page begins: a kernel reading past the end of
// a matrix faults instead of reading a neighbour's bytes.
class GuardedBytes {
 public:
  explicit GuardedBytes(const std::vector<std::int8_t>& bytes) {
    const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    const std::size_t data_pages = (bytes.size() + page - 1) / page;
    length_ = (data_pages + 1) * page;
    base_ = mmap(nullptr, length_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base_ == MAP_FAILED) throw std::runtime_error("mmap failed");
    auto* guard = static_cast<char*>(base_) + data_pages * page;
    if (mprotect(guard, page, PROT_NONE) != 0) throw std::runtime_error("mprotect failed");
    data_ = reinterpret_cast<std::int8_t*>(guard) - bytes.size();
    std::copy(bytes.begin(), bytes.end(), data_);
  }
  ~GuardedBytes() { munmap(base_, length_); }
  GuardedBytes(const GuardedBytes&) = delete;
  GuardedBytes& operator=(const GuardedBytes&) = delete;
  const std::int8_t* data() const { return data_; }

 private:
  void* base_ = nullptr;
  std::size_t length_ = 0;
  std::int8_t* data_ = nullptr;
};

// The AMX prompt kernel reads whole strips of 32 rows and 64-byte steps in place and copies the
// others (the weights end at an inaccessible page here); it runs tokens 32 at a time. Over shapes
// on both sides of each: without outlier columns every output has the bits the VNNI prompt kernel
// gives (which are those of each token alone: the test above); with them, the outlier part runs on
// bf16 tiles and adds its exact products in the tile unit's order, so the outputs round
// differently from VNNI's chain of fused multiply-adds, and are as close to the exact product.
TEST(MatmulBatch, Int8PromptOnAmxTilesHasTheBitsOfVnniWithoutOutliersAndItsAccuracyWith) {
  if (!cpu_supports(CpuIsa::kAmx)) GTEST_SKIP() << "CPU or OS lacks AMX";
  for (const auto& [rows, cols] : {std::pair<std::int64_t, std::int64_t>{64, 256}, {77, 300}, {40, 64}, {96, 1000}}) {
    const Matrix m(rows, cols, 20);
    const GuardedBytes guarded(m.i8);
    for (const float threshold : {6.0f, 0.0f}) {  // 0: no outlier columns
      WeightView w = m.view(DType::kI8, threshold);
      w.data = guarded.data();
      for (const std::int64_t n : {5, 9, 31, 32, 33, 70}) {
        auto x = test::random_floats(static_cast<std::size_t>(n * cols), 21);
        for (std::int64_t t = 0; t < n; t += 3) x[static_cast<std::size_t>(t * cols + (t * 7) % cols)] = t % 2 ? 7.5f : -9.0f;
        // Many outlier columns in the longest prompts (more than one 32-value step of them).
        for (std::int64_t c = 0; n == 70 && c < cols; c += 3) x[static_cast<std::size_t>((c % n) * cols + c)] = 6.5f + c % 5;
        std::vector<float> amx(static_cast<std::size_t>(n * rows), NAN), vnni(amx.size(), NAN);
        matmul(x.data(), n, w, amx.data(), CpuIsa::kAmx);
        matmul(x.data(), n, w, vnni.data(), CpuIsa::kAvx512Vnni);
        if (threshold == 0.0f) {
          EXPECT_EQ(amx, vnni) << rows << " x " << cols << ", " << n << " tokens";
          continue;
        }
        // The same decomposition (the call's outlier columns in float, the rest from the same
        // quantized activations), rounded otherwise: int8_test checks both levels against double.
        EXPECT_TRUE(std::none_of(amx.begin(), amx.end(), [](float v) { return std::isnan(v); }));
        EXPECT_LT(test::normalized_error(amx, std::vector<double>(vnni.begin(), vnni.end())), 1e-6)
            << rows << " x " << cols << ", " << n << " tokens";
      }
    }
  }
}

// The AVX-512 levels quantize the activations 16 lanes at a time, the others one by one: the
// bytes must be the same. The avx512 level runs the same int8 kernel as avx2 on them (VNNI is the
// level above), so equal quantization means equal outputs.
TEST(MatmulBatch, VectorAndScalarQuantizationGiveTheSameBytes) {
  if (!cpu_supports(CpuIsa::kAvx512)) GTEST_SKIP() << "CPU lacks avx512";
  const std::int64_t cols = 203, rows = 40;
  const Matrix m(rows, cols, 12);
  for (std::int64_t n : {1, 4, 17}) {
    auto x = test::random_floats(static_cast<std::size_t>(n * cols), 13, 3.0f);  // some beyond 6: outliers
    x[3] = 0.0f;
    const WeightView w = m.view(DType::kI8, 6.0f);
    std::vector<float> scalar(static_cast<std::size_t>(n * rows)), vector(scalar.size());
    matmul(x.data(), n, w, scalar.data(), CpuIsa::kAvx2);
    matmul(x.data(), n, w, vector.data(), CpuIsa::kAvx512);
    EXPECT_EQ(scalar, vector) << n << " tokens";
  }
}

}  // namespace
}  // namespace sepal
