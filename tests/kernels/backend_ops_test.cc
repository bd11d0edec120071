// Every op of a backend (kernels/backend.h) against the CPU kernels, the numerical oracle, with a
// tolerance per op. The backend is $SEPAL_TEST_DEVICE (default cpu, where every op must give the
// CPU kernel's bits): ctest runs it as backend_ops_test on the CPU and, labelled gpu, as
// backend_ops_test_cuda on a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/backend.h"
#include "kernels/error.h"
#include "kernels/gradients.h"
#include "kernels/quantize.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "tests/test_util.h"

namespace sepal {
namespace {

using test::random_floats;

Device device_under_test() {
  const char* text = std::getenv("SEPAL_TEST_DEVICE");
  return parse_device(text && *text ? text : "cpu");
}

// One random matrix of rows × cols as f32, bf16 and int8 weights.
struct Weights {
  std::vector<float> f32;
  std::vector<std::uint16_t> bf16;
  std::vector<std::int8_t> i8;
  std::vector<float> scales;
  std::vector<WeightView> views;
  Weights(std::int64_t rows, std::int64_t cols)
      : f32(random_floats(static_cast<std::size_t>(rows * cols), 3, 0.05f)), bf16(f32.size()), i8(f32.size()),
        scales(static_cast<std::size_t>(rows)) {
    for (std::size_t i = 0; i < f32.size(); ++i) bf16[i] = f32_to_bf16(f32[i]);
    for (std::int64_t r = 0; r < rows; ++r) scales[r] = quantize_row_i8(f32.data() + r * cols, cols, i8.data() + r * cols);
    views = {{DType::kF32, rows, cols, f32.data()}, {DType::kBF16, rows, cols, bf16.data()},
             {DType::kI8, rows, cols, i8.data(), scales.data()}};
  }
};

class BackendOps : public ::testing::Test {
 protected:
  void SetUp() override { backend_ = open_backend(device_under_test()); }

  // A device copy of host values, and the way back.
  template <typename T>
  T* in(const std::vector<T>& host) {
    held_.push_back(backend_->upload(host.data(), static_cast<std::int64_t>(host.size())));
    return static_cast<T*>(held_.back().get());
  }
  std::vector<float> out(const float* device, std::size_t count) {
    std::vector<float> host(count);
    backend_->copy_out(host.data(), device, static_cast<std::int64_t>(count * sizeof(float)));
    return host;
  }
  // Within `tolerance` of the CPU's result, normalised; the same bits on the CPU backend.
  void expect_close(const std::vector<float>& got, const std::vector<float>& want, double tolerance, const std::string& what) {
    ASSERT_EQ(got.size(), want.size()) << what;
    if (device_under_test().is_cpu()) {
      EXPECT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * sizeof(float))) << what << ": not the CPU's bits";
      return;
    }
    const std::vector<double> reference(want.begin(), want.end());
    EXPECT_LT(test::normalized_error(got, reference), tolerance) << what;
    for (std::size_t i = 0; i < got.size(); ++i) ASSERT_TRUE(std::isfinite(got[i])) << what << " at " << i;
  }

  std::unique_ptr<Backend> backend_;
  std::vector<std::shared_ptr<void>> held_;
};

TEST_F(BackendOps, InfoNamesTheDeviceAndItsMemory) {
  const BackendInfo info = backend_->info();
  EXPECT_EQ(info.device, device_under_test());
  EXPECT_FALSE(info.name.empty());
  EXPECT_GT(info.memory_bytes, 0);
  EXPECT_GT(info.free_bytes, 0);
  EXPECT_LE(info.free_bytes, info.memory_bytes);
  EXPECT_TRUE(backend_->holds(DType::kF32) && backend_->holds(DType::kBF16) && backend_->holds(DType::kI8));
}

// f32, bf16 and int8 weights (with outlier columns), decode's few rows and prompts', rows of a
// multiple of 8 columns and not.
TEST_F(BackendOps, MatmulMatchesTheCpu) {
  for (const std::int64_t cols : {256, 204}) {
    const std::int64_t rows = 96;
    const Weights weights(rows, cols);
    for (const WeightView& view : weights.views) {
      const DeviceMatrix m = backend_->upload_matrix(view);
      for (const std::int64_t n : {1, 3, 8, 9, 40}) {
        auto x = random_floats(static_cast<std::size_t>(n * cols), 10 + n);
        x[static_cast<std::size_t>(cols / 3)] = 9.0f;  // an outlier column for int8
        std::vector<float> want(static_cast<std::size_t>(n * rows));
        matmul(x.data(), n, view, want.data());
        float* y = in(std::vector<float>(want.size()));
        backend_->matmul(in(x), n, m, y);
        // bf16 prompts multiply bf16 activations on a GPU (cuBLAS); decode keeps them f32.
        const double tolerance = view.dtype == DType::kF32 ? 1e-5 : view.dtype == DType::kBF16 ? 1e-2 : 2e-2;
        expect_close(out(y, want.size()), want, tolerance,
                     std::string(dtype_name(view.dtype)) + " n=" + std::to_string(n) + " cols=" + std::to_string(cols));
      }
    }
  }
}

TEST_F(BackendOps, NormsAndElementWiseOpsMatchTheCpu) {
  const std::int64_t n = 5, dim = 300;
  const auto x = random_floats(static_cast<std::size_t>(n * dim), 1, 2.0f);
  const auto weight = random_floats(static_cast<std::size_t>(dim), 2);
  const auto bias = random_floats(static_cast<std::size_t>(dim), 3);
  const auto other = random_floats(x.size(), 4, 3.0f);
  {
    std::vector<float> want(x.size());
    rmsnorm(x.data(), n, dim, weight.data(), 1e-5f, want.data());
    float* y = in(std::vector<float>(x.size()));
    backend_->rmsnorm(in(x), n, dim, in(weight), 1e-5f, y);
    expect_close(out(y, x.size()), want, 1e-6, "rmsnorm");
  }
  {
    std::vector<float> want(x.size());
    layernorm(x.data(), n, dim, weight.data(), bias.data(), 1e-5f, want.data());
    float* y = in(std::vector<float>(x.size()));
    backend_->layernorm(in(x), n, dim, in(weight), in(bias), 1e-5f, y);
    expect_close(out(y, x.size()), want, 1e-6, "layernorm");
  }
  {  // without a bias, and each of 5 heads of 60 values with its own weights (Cohere's norms)
    std::vector<float> want(x.size());
    layernorm(x.data(), n, dim, weight.data(), nullptr, 1e-5f, want.data());
    float* y = in(std::vector<float>(x.size()));
    backend_->layernorm(in(x), n, dim, in(weight), nullptr, 1e-5f, y);
    expect_close(out(y, x.size()), want, 1e-6, "layernorm without a bias");
    auto heads = x;
    for (std::int64_t r = 0; r < n * 5; ++r) {
      layernorm(x.data() + r * 60, 1, 60, weight.data() + (r % 5) * 60, nullptr, 1e-5f, heads.data() + r * 60);
    }
    float* z = in(x);
    backend_->layernorm_heads(z, n, 5, 60, in(weight), 1e-5f, z);
    expect_close(out(z, x.size()), heads, 1e-6, "layernorm_heads");
  }
  {
    auto want = x;
    add_bias(want.data(), n, dim, bias.data());
    float* y = in(x);
    backend_->add_bias(y, n, dim, in(bias));
    expect_close(out(y, x.size()), want, 1e-7, "add_bias");
  }
  {
    auto want = x;
    add_in_place(want.data(), other.data(), n * dim);
    float* y = in(x);
    backend_->add_in_place(y, in(other), n * dim);
    expect_close(out(y, x.size()), want, 1e-7, "add_in_place");
  }
  {
    auto want = x;
    silu_mul(want.data(), other.data(), n * dim);
    float* y = in(x);
    backend_->silu_mul(y, in(other), n * dim);
    expect_close(out(y, x.size()), want, 1e-6, "silu_mul");
  }
  {
    auto want = x;
    gelu_tanh_mul(want.data(), other.data(), n * dim);
    float* y = in(x);
    backend_->gate_mul(GateActivation::kGeluTanh, y, in(other), n * dim);
    expect_close(out(y, x.size()), want, 1e-6, "gelu_tanh_mul");
  }
  {
    auto want = x;
    add_scaled_in_place(want.data(), other.data(), 0.37f, n * dim);
    float* y = in(x);
    backend_->add_scaled_in_place(y, in(other), 0.37f, n * dim);
    expect_close(out(y, x.size()), want, 1e-6, "add_scaled_in_place");
  }
  {
    auto want = x;
    scale_by_one_plus(want.data(), n, dim, weight.data());
    float* y = in(x);
    backend_->scale_by_one_plus(y, n, dim, in(weight));
    expect_close(out(y, x.size()), want, 1e-7, "scale_by_one_plus");
  }
  {
    auto want = x;
    gelu_tanh(want.data(), n * dim);
    float* y = in(x);
    backend_->gelu_tanh(y, n * dim);
    expect_close(out(y, x.size()), want, 1e-6, "gelu_tanh");
  }
}

// The whole head, and its first 48 of 64 dimensions (partial rotary embeddings).
TEST_F(BackendOps, RotationsMatchTheCpu) {
  const std::int64_t n = 6, heads = 4, head_dim = 64;
  for (const std::int64_t rotary_dim : {head_dim, std::int64_t{48}}) {
    RopeScaling scaling;
    const std::vector<double> inv_freq = rope_inverse_frequencies(rotary_dim, 10000.0, scaling);
    const std::vector<std::int64_t> positions = {0, 1, 7, 100, 1000, 4095};
    const auto x = random_floats(static_cast<std::size_t>(n * heads * head_dim), 5);
    auto want = x;
    rope_rotate_half(want.data(), n, heads, head_dim, rotary_dim, positions.data(), inv_freq.data(), 1.25);
    float* y = in(x);
    backend_->rope_rotate_half(y, n, heads, head_dim, rotary_dim, in(positions), in(inv_freq), 1.25);
    expect_close(out(y, x.size()), want, 1e-6, "rope");
    auto pairs = x;  // Cohere's and GLM's layout
    rope_rotate_adjacent(pairs.data(), n, heads, head_dim, rotary_dim, positions.data(), inv_freq.data(), 1.25);
    float* z = in(x);
    backend_->rope_rotate_adjacent(z, n, heads, head_dim, rotary_dim, in(positions), in(inv_freq), 1.25);
    expect_close(out(z, x.size()), pairs, 1e-6, "rope over adjacent pairs");
  }
}

// Keys stored and attended to: grouped heads, a prompt after earlier positions and a decode row,
// ALiBi, a sliding window, head sizes of 64 and 80, Gemma 2's scale and soft-capping.
TEST_F(BackendOps, AttentionOverTheCacheMatchesTheCpu) {
  struct Case {
    std::int64_t heads, kv_heads, head_dim, start, n, window;
    bool alibi;
    float scale = 0.0f, softcap = 0.0f;
  };
  for (const Case c : {Case{4, 2, 64, 0, 9, 0, false}, Case{4, 2, 64, 9, 1, 0, false}, Case{6, 6, 80, 30, 5, 0, true},
                       Case{4, 1, 64, 40, 3, 16, false}, Case{8, 8, 128, 300, 2, 0, false},
                       Case{4, 2, 64, 20, 4, 8, false, 0.3f, 2.0f}}) {
    const std::int64_t capacity = c.start + c.n + 3;
    AttentionDims dims{c.heads, c.kv_heads, c.head_dim};
    dims.scale = c.scale;
    dims.softcap = c.softcap;
    const std::int64_t cache_size = c.kv_heads * capacity * c.head_dim;
    const std::int64_t total = c.start + c.n;
    // The cache's earlier positions, then this call's keys and values stored by store_kv.
    const auto old_rows = random_floats(static_cast<std::size_t>(total * c.kv_heads * c.head_dim), 20);
    const auto old_values = random_floats(old_rows.size(), 21);
    std::vector<float> keys(static_cast<std::size_t>(cache_size)), values(keys.size());
    store_kv(old_rows.data(), total, 0, c.kv_heads, c.head_dim, capacity, keys.data());
    store_kv(old_values.data(), total, 0, c.kv_heads, c.head_dim, capacity, values.data());
    const std::size_t step = static_cast<std::size_t>(c.start * c.kv_heads * c.head_dim);
    std::vector<float> new_keys(old_rows.begin() + step, old_rows.end()), new_values(old_values.begin() + step, old_values.end());
    std::vector<float> device_keys(keys.size()), device_values(values.size());
    store_kv(old_rows.data(), c.start, 0, c.kv_heads, c.head_dim, capacity, device_keys.data());
    store_kv(old_values.data(), c.start, 0, c.kv_heads, c.head_dim, capacity, device_values.data());
    float* dk = in(device_keys);
    float* dv = in(device_values);
    backend_->store_kv(in(new_keys), c.n, c.start, c.kv_heads, c.head_dim, capacity, dk);
    backend_->store_kv(in(new_values), c.n, c.start, c.kv_heads, c.head_dim, capacity, dv);
    const std::string what = "attention heads=" + std::to_string(c.heads) + " start=" + std::to_string(c.start);
    const auto stored_keys = out(dk, keys.size());
    for (std::int64_t h = 0; h < c.kv_heads; ++h) {  // slots past the positions are not compared
      for (std::int64_t p = 0; p < total * c.head_dim; ++p) {
        const std::size_t i = static_cast<std::size_t>(h * capacity * c.head_dim + p);
        ASSERT_EQ(stored_keys[i], keys[i]) << what << ": stored key " << i;
      }
    }
    const auto q = random_floats(static_cast<std::size_t>(c.n * c.heads * c.head_dim), 22, 2.0f);
    const std::vector<float> slopes = alibi_slopes(c.heads);
    std::vector<float> want(q.size());
    attention_causal(q.data(), c.n, c.start, keys.data(), values.data(), capacity, dims, want.data(),
                     c.alibi ? slopes.data() : nullptr, c.window);
    float* o = in(std::vector<float>(q.size()));
    backend_->attention_causal(in(q), c.n, c.start, dk, dv, capacity, dims, o, c.alibi ? in(slopes) : nullptr, c.window, 0);
    expect_close(out(o, q.size()), want, 1e-5, what);
  }
}

// A token tree's attention (nodes after a sequence, grouped heads, ALiBi, a window with the
// cache's first slots dropped, Gemma 2's caps), causal attention from such a cache, and
// keep_path's moves.
TEST_F(BackendOps, TokenTreeOpsMatchTheCpu) {
  struct Case {
    std::int64_t heads, kv_heads, head_dim, start, window, held_from;
    bool alibi;
    float softcap = 0.0f;
  };
  const std::vector<std::int32_t> parents = {-1, 0, 0, 1, 1, 2, 4};
  const std::int64_t nodes = 7, first = 3, n = nodes - first;
  for (const Case c : {Case{4, 2, 64, 20, 0, 0, false}, Case{6, 6, 80, 9, 0, 0, true}, Case{4, 1, 64, 40, 8, 30, false},
                       Case{4, 2, 64, 12, 0, 0, false, 2.0f}}) {
    const std::int64_t capacity = c.start + nodes - c.held_from + 2;
    AttentionDims dims{c.heads, c.kv_heads, c.head_dim};
    dims.softcap = c.softcap;
    const std::size_t cache_size = static_cast<std::size_t>(c.kv_heads * capacity * c.head_dim);
    const auto keys = random_floats(cache_size, 60), values = random_floats(cache_size, 61);
    const auto q = random_floats(static_cast<std::size_t>(n * c.heads * c.head_dim), 62, 2.0f);
    const std::vector<float> slopes = alibi_slopes(c.heads);
    std::vector<float> want(q.size());
    attention_tree(q.data(), first, n, c.start, parents.data(), keys.data(), values.data(), capacity, dims, want.data(),
                   c.alibi ? slopes.data() : nullptr, c.window, c.held_from);
    float* o = in(std::vector<float>(q.size()));
    backend_->attention_tree(in(q), first, n, c.start, in(parents), in(keys), in(values), capacity, dims, o,
                             c.alibi ? in(slopes) : nullptr, c.window, c.held_from);
    expect_close(out(o, q.size()), want, 1e-5, "attention_tree heads=" + std::to_string(c.heads) + " start=" + std::to_string(c.start));
    // The same cache read causally from its first slot's position (a window's kept rows).
    std::vector<float> causal(static_cast<std::size_t>(2 * c.heads * c.head_dim));
    attention_causal(q.data(), 2, c.start, keys.data(), values.data(), capacity, dims, causal.data(),
                     c.alibi ? slopes.data() : nullptr, c.window, c.held_from);
    float* co = in(std::vector<float>(causal.size()));
    backend_->attention_causal(in(q), 2, c.start, in(keys), in(values), capacity, dims, co, c.alibi ? in(slopes) : nullptr,
                               c.window, c.held_from);
    expect_close(out(co, causal.size()), causal, 1e-5, "attention_causal from held_from=" + std::to_string(c.held_from));
  }
  // Rows 10 + path[i] move to 10 + i in each of 3 arrays of 24 rows.
  const std::int64_t rows = 24, head_dim = 48;
  const auto arrays = random_floats(static_cast<std::size_t>(3 * rows * head_dim), 63);
  const std::vector<std::int32_t> path = {1, 2, 5, 7};
  auto want = arrays;
  for (std::int64_t a = 0; a < 3; ++a) {
    for (std::size_t i = 0; i < path.size(); ++i) {
      const auto from = want.begin() + (a * rows + 10 + path[i]) * head_dim;
      std::copy(from, from + head_dim, want.begin() + (a * rows + 10 + static_cast<std::int64_t>(i)) * head_dim);
    }
  }
  float* got = in(arrays);
  backend_->keep_rows(got, 3, rows, head_dim, 10, path.data(), static_cast<std::int64_t>(path.size()));
  EXPECT_EQ(out(got, arrays.size()), want) << "keep_rows";
}

// The training passes' ops (kernels/gradients.h): the products' input gradient at f32, bf16 and
// int8, the norms', the activations', the rotations' and causal attention's (grouped heads, ALiBi,
// a window, Gemma 2's scale and caps, heads of 64 and 80), and keys read back out of a cache.
TEST_F(BackendOps, TrainingOpsMatchTheCpu) {
  {
    const std::int64_t rows = 96, cols = 204;
    const Weights weights(rows, cols);
    for (const WeightView& view : weights.views) {
      const DeviceMatrix m = backend_->upload_matrix(view);
      for (const std::int64_t n : {1, 37}) {
        const auto dy = random_floats(static_cast<std::size_t>(n * rows), 30 + n);
        std::vector<float> want(static_cast<std::size_t>(n * cols));
        matmul_input_grad(dy.data(), n, view, want.data());
        float* dx = in(std::vector<float>(want.size()));
        backend_->matmul_input_grad(in(dy), n, m, dx);
        expect_close(out(dx, want.size()), want, 1e-5,
                     std::string("input gradient of ") + std::string(dtype_name(view.dtype)) + " n=" + std::to_string(n));
      }
    }
  }
  const std::int64_t n = 5, dim = 300;
  const auto x = random_floats(static_cast<std::size_t>(n * dim), 1, 2.0f);
  const auto weight = random_floats(static_cast<std::size_t>(dim), 2);
  const auto dy = random_floats(x.size(), 3);
  {  // adapters' gradients: added to what is there
    const std::int64_t rows = 7;
    const auto g = random_floats(static_cast<std::size_t>(n * rows), 8);
    auto want = random_floats(static_cast<std::size_t>(rows * dim), 9);
    float* dw = in(want);
    matmul_weight_grad(g.data(), n, x.data(), rows, dim, want.data());
    backend_->matmul_weight_grad(in(g), n, in(x), rows, dim, dw);
    expect_close(out(dw, want.size()), want, 1e-5, "matmul_weight_grad");
    auto sums = weight;
    float* got = in(weight);
    add_column_dots(x.data(), dy.data(), n, dim, sums.data());
    backend_->add_column_dots(in(x), in(dy), n, dim, got);
    expect_close(out(got, sums.size()), sums, 1e-6, "add_column_dots");
    auto scaled = x;
    scale_in_place(scaled.data(), -1.5f, n * dim);
    float* y = in(x);
    backend_->scale_in_place(y, -1.5f, n * dim);
    expect_close(out(y, x.size()), scaled, 1e-7, "scale_in_place");
    backend_->zero(y, n * dim * 4);
    EXPECT_EQ(out(y, x.size()), std::vector<float>(x.size(), 0.0f)) << "zero";
  }
  const auto up = random_floats(x.size(), 4, 3.0f);
  {
    std::vector<float> want(x.size());
    rmsnorm_input_grad(x.data(), n, dim, weight.data(), 1e-5f, dy.data(), want.data());
    float* g = in(dy);  // in place, as the passes call it
    backend_->rmsnorm_input_grad(in(x), n, dim, in(weight), 1e-5f, g, g);
    expect_close(out(g, x.size()), want, 1e-5, "rmsnorm_input_grad");
  }
  {
    std::vector<float> want(x.size());
    layernorm_input_grad(x.data(), n, dim, weight.data(), 1e-5f, dy.data(), want.data());
    float* g = in(dy);
    backend_->layernorm_input_grad(in(x), n, dim, in(weight), 1e-5f, g, g);
    expect_close(out(g, x.size()), want, 1e-5, "layernorm_input_grad");
  }
  {
    std::vector<float> want(x.size());
    for (std::int64_t r = 0; r < n * 5; ++r) {
      layernorm_input_grad(x.data() + r * 60, 1, 60, weight.data() + (r % 5) * 60, 1e-5f, dy.data() + r * 60,
                           want.data() + r * 60);
    }
    float* g = in(dy);
    backend_->layernorm_heads_input_grad(in(x), n, 5, 60, in(weight), 1e-5f, g, g);
    expect_close(out(g, x.size()), want, 1e-5, "layernorm_heads_input_grad");
  }
  {
    std::vector<float> want(x.size());
    gelu_tanh_input_grad(x.data(), dy.data(), want.data(), n * dim);
    float* g = in(dy);
    backend_->gelu_tanh_input_grad(in(x), g, g, n * dim);
    expect_close(out(g, x.size()), want, 1e-5, "gelu_tanh_input_grad");
  }
  for (const GateActivation activation : {GateActivation::kSilu, GateActivation::kGeluTanh}) {
    std::vector<float> want_gate(x.size()), want_up(x.size());
    gate_mul_input_grad(activation, x.data(), up.data(), dy.data(), want_gate.data(), want_up.data(), n * dim);
    float* dgate = in(dy);  // dgate over dout, as the passes call it
    float* dup = in(std::vector<float>(x.size()));
    backend_->gate_mul_input_grad(activation, in(x), in(up), dgate, dgate, dup, n * dim);
    const std::string what = activation == GateActivation::kSilu ? "silu_mul_input_grad" : "gelu_tanh_mul_input_grad";
    expect_close(out(dgate, x.size()), want_gate, 1e-5, what + " (gate)");
    expect_close(out(dup, x.size()), want_up, 1e-5, what + " (up)");
  }
  {
    const std::int64_t rows = 6, heads = 4, head_dim = 64, rotary_dim = 48;
    RopeScaling scaling;
    const std::vector<double> inv_freq = rope_inverse_frequencies(rotary_dim, 10000.0, scaling);
    const std::vector<std::int64_t> positions = {0, 1, 7, 100, 1000, 4095};
    const auto g = random_floats(static_cast<std::size_t>(rows * heads * head_dim), 5);
    auto half = g, pairs = g;
    rope_rotate_half_input_grad(half.data(), rows, heads, head_dim, rotary_dim, positions.data(), inv_freq.data(), 1.25);
    rope_rotate_adjacent_input_grad(pairs.data(), rows, heads, head_dim, rotary_dim, positions.data(), inv_freq.data(), 1.25);
    float* a = in(g);
    float* b = in(g);
    backend_->rope_rotate_half_input_grad(a, rows, heads, head_dim, rotary_dim, in(positions), in(inv_freq), 1.25);
    backend_->rope_rotate_adjacent_input_grad(b, rows, heads, head_dim, rotary_dim, in(positions), in(inv_freq), 1.25);
    expect_close(out(a, g.size()), half, 1e-6, "rope_rotate_half_input_grad");
    expect_close(out(b, g.size()), pairs, 1e-6, "rope_rotate_adjacent_input_grad");
  }
  struct Case {
    std::int64_t heads, kv_heads, head_dim, n, window;
    bool alibi;
    float scale = 0.0f, softcap = 0.0f;
  };
  for (const Case c : {Case{4, 2, 64, 9, 0, false}, Case{6, 6, 80, 13, 0, true}, Case{4, 1, 64, 40, 6, false},
                       Case{4, 2, 64, 20, 0, false, 0.3f, 2.0f}, Case{2, 2, 32, 1, 0, false}}) {
    AttentionDims dims{c.heads, c.kv_heads, c.head_dim};
    dims.scale = c.scale;
    dims.softcap = c.softcap;
    const std::size_t q_count = static_cast<std::size_t>(c.n * c.heads * c.head_dim);
    const std::size_t kv_count = static_cast<std::size_t>(c.n * c.kv_heads * c.head_dim);
    const auto q = random_floats(q_count, 40, 2.0f), dout = random_floats(q_count, 41);
    const auto key_rows = random_floats(kv_count, 42, 2.0f), value_rows = random_floats(kv_count, 43);
    std::vector<float> keys(kv_count), values(kv_count);
    store_kv(key_rows.data(), c.n, 0, c.kv_heads, c.head_dim, c.n, keys.data());
    store_kv(value_rows.data(), c.n, 0, c.kv_heads, c.head_dim, c.n, values.data());
    const std::vector<float> slopes = alibi_slopes(c.heads);
    std::vector<float> dq(q_count), dkeys(kv_count), dvalues(kv_count);
    attention_causal_input_grad(q.data(), keys.data(), values.data(), c.n, dims, dout.data(), dq.data(), dkeys.data(),
                                dvalues.data(), c.alibi ? slopes.data() : nullptr, c.window);
    float* gq = in(std::vector<float>(q_count));
    float* gk = in(std::vector<float>(kv_count));
    float* gv = in(std::vector<float>(kv_count));
    backend_->attention_causal_input_grad(in(q), in(keys), in(values), c.n, dims, in(dout), gq, gk, gv,
                                          c.alibi ? in(slopes) : nullptr, c.window);
    const std::string what = "attention_causal_input_grad heads=" + std::to_string(c.heads) + " n=" + std::to_string(c.n);
    expect_close(out(gq, q_count), dq, 1e-5, what + " (q)");
    expect_close(out(gk, kv_count), dkeys, 1e-5, what + " (keys)");
    expect_close(out(gv, kv_count), dvalues, 1e-5, what + " (values)");
    // Keys read back out of the cache's layout, from a slot past the first.
    std::vector<float> want_rows(key_rows.begin() + c.kv_heads * c.head_dim, key_rows.end());
    float* back = in(std::vector<float>(want_rows.size() + 1));
    backend_->load_kv(in(keys), c.n - 1, 1, c.kv_heads, c.head_dim, c.n, back);
    auto got_rows = out(back, want_rows.size());
    EXPECT_EQ(got_rows, want_rows) << what << ": load_kv";
  }
}

TEST_F(BackendOps, WeightsOfATypeItDoesNotHoldAreRefusedInOneLine) {
  const std::vector<std::uint16_t> w(16);
  try {
    backend_->upload_matrix(WeightView{DType::kF16, 4, 4, w.data()});
    FAIL() << "f16 weights were taken";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not hold f16"), std::string::npos) << e.what();
  }
}

TEST(Devices, NamesParseAndBadOnesAreRefusedInOneLine) {
  EXPECT_EQ(parse_device("cpu"), Device{});
  EXPECT_EQ(parse_device("cuda"), (Device{DeviceKind::kCuda, 0}));
  EXPECT_EQ(parse_device("cuda:3"), (Device{DeviceKind::kCuda, 3}));
  EXPECT_EQ(device_name(parse_device("cuda:3")), "cuda:3");
  for (const char* bad : {"gpu", "cuda:", "cuda:-1", "cuda:x", "cuda:1x", "CPU", ""}) {
    try {
      parse_device(bad);
      ADD_FAILURE() << bad << " was taken";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("expected cpu, cuda or cuda:N"), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    }
  }
}

}  // namespace
}  // namespace sepal
