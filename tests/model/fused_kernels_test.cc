// The fused fp32 CPU kernels of the decode step (model/src/cpu_kernels_isa.inc, fused_ops.cc) against the ATen ops
// they replace: each kernel in every instruction set this CPU runs (AVX2 and AVX-512 are separate compilations),
// on shapes with and without vector tails; then the whole decode on the parity model, fused against ATen and
// against the reference's beams.
#include <array>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include "cmn/model/fused_kernels.h"
#include "cmn/model/layers.h"
#include "cmn/model/precision.h"
#include "cmn/model/r2gencmn.h"
#include "cpu_kernels.h"
#include "fused_ops.h"
#include "test_paths.h"

namespace cmn::model {
namespace {

using cmn::testing::parity_path;

// The kernel tables this CPU can run: the AVX2 copy runs on every AVX-512 CPU as well.
std::vector<const kernels::Table*> runnable_tables() {
  std::vector<const kernels::Table*> out;
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) out.push_back(&kernels::avx2::table());
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma")) out.push_back(&kernels::avx512::table());
#endif
  return out;
}

float* f(torch::Tensor& t) { return t.data_ptr<float>(); }
const float* f(const torch::Tensor& t) { return t.data_ptr<float>(); }

double max_abs(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

// The reference's attention of one query row: softmax(q k^T / sqrt(dk)) v
torch::Tensor attention_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  auto p = torch::softmax(torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(q.size(-1))), -1);
  return torch::matmul(p, v);
}

class FusedKernelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tables_ = runnable_tables();
    if (tables_.empty()) GTEST_SKIP() << "this CPU has neither AVX2+FMA nor AVX-512F: ATen's ops run alone";
    torch::manual_seed(11);
  }
  std::vector<const kernels::Table*> tables_;
  torch::NoGradGuard no_grad_;
};

TEST_F(FusedKernelTest, LinearMatchesTorchLinearWithAndWithoutTails) {
  for (const auto* t : tables_) {
    // K = 37 and N = 7 leave tails after every vector and block of four; M = 3 leaves an odd row.
    for (auto [m, n, k] : std::vector<std::array<int64_t, 3>>{{10, 512, 512}, {3, 7, 37}, {1, 761, 512}, {64, 24, 2048}}) {
      auto x = torch::randn({m, k}), w = torch::randn({n, k}) * 0.05, b = torch::randn({n});
      auto want = torch::linear(x, w, b);
      auto got = torch::empty({m, n});
      t->linear(f(x), f(w), f(b), f(got), m, n, k, 0, n);
      EXPECT_LT(max_abs(got, want), 1e-4) << t->name << " m=" << m << " n=" << n << " k=" << k;
      // A column range writes only its own columns (the unit threads split on).
      auto part = torch::full({m, n}, -7.0f);
      t->linear(f(x), f(w), nullptr, f(part), m, n, k, 4, n);
      EXPECT_TRUE(torch::all(part.narrow(1, 0, std::min<int64_t>(4, n)) == -7.0f).item<bool>()) << t->name;
      if (n > 4) {
        EXPECT_LT(max_abs(part.narrow(1, 4, n - 4), want.narrow(1, 4, n - 4) - b.narrow(0, 4, n - 4)), 1e-4);
      }
    }
  }
}

// The bf16 Linear equals fp32 arithmetic on the bf16-rounded inputs and weights (vdpbf16ps multiplies exactly
// and accumulates in fp32), and it is what a bf16 replica's Linear runs.
TEST_F(FusedKernelTest, Bf16LinearIsFp32ArithmeticOnBf16RoundedOperands) {
  if (!kernels::best_linear_bf16()) GTEST_SKIP() << "no AVX512_BF16 on this CPU";
  for (auto [m, n, k] : std::vector<std::array<int64_t, 3>>{{10, 512, 512}, {3, 7, 64}, {1, 761, 512}}) {
    auto x = torch::randn({m, k}), w = (torch::randn({n, k}) * 0.05).to(torch::kBFloat16), b = torch::randn({n});
    auto want = torch::linear(x.to(torch::kBFloat16).to(torch::kFloat), w.to(torch::kFloat), b);
    auto got = fused::linear_bf16(x, w, b);
    ASSERT_TRUE(got.defined());
    EXPECT_LT(max_abs(got, want), 1e-4) << "m=" << m << " n=" << n << " k=" << k;
  }
  EXPECT_FALSE(fused::linear_bf16(torch::randn({2, 48}), torch::randn({4, 48}).to(torch::kBFloat16), {}).defined())
      << "K = 48 is not a multiple of 32: ATen's bf16 linear runs";
  Linear layer(512, 512);
  layer->eval();
  layer->set_precision(Precision::kBf16);
  const auto x = torch::randn({10, 512});
  EXPECT_TRUE(torch::equal(layer(x), fused::linear_bf16(x, layer->weight.to(torch::kBFloat16), layer->bias)));
}

TEST_F(FusedKernelTest, LayerNormIsTheReferencesUnbiasedStdForm) {
  for (const auto* t : tables_) {
    for (int64_t d : {512, 21}) {
      auto x = torch::randn({6, d}) * 3 + 1, a = torch::randn({d}), b = torch::randn({d});
      auto want = a * (x - x.mean(-1, true)) / (x.std(-1, /*unbiased=*/true, true) + 1e-6) + b;
      auto got = torch::empty_like(x);
      t->layer_norm(f(x), f(a), f(b), f(got), d, 1e-6f, 0, 6);
      EXPECT_LT(max_abs(got, want), 1e-5) << t->name << " d=" << d;
    }
  }
}

TEST_F(FusedKernelTest, AttendIsSoftmaxAttentionOverStridedKeys) {
  for (const auto* t : tables_) {
    for (int64_t len : {1, 5, 60, 98}) {
      const int64_t dk = 64, stride = 3 * dk;  // keys of one head inside rows of three heads
      auto q = torch::randn({dk}), kv = torch::randn({2, len, stride}) * 2;
      auto k = kv[0].narrow(1, dk, dk), v = kv[1].narrow(1, dk, dk);  // [len,dk] views
      auto want = attention_reference(q.view({1, dk}), k, v).view({dk});
      auto want_p = torch::softmax(torch::mv(k, q) / 8.0, 0);
      auto got = torch::empty({dk}), p = torch::empty({len});
      t->attend(f(q), f(kv[0]) + dk, f(kv[1]) + dk, stride, len, dk, 1.0f / 8.0f, f(p), f(got));
      EXPECT_LT(max_abs(got, want), 1e-5) << t->name << " t=" << len;
      EXPECT_LT(max_abs(p, want_p), 1e-6) << t->name << " t=" << len;
    }
  }
}

// MultiThreadMemory's read, as R2GenCMN writes it: per head, topk(32) of the scores, softmax, their values.
torch::Tensor memory_reference(const torch::Tensor& q, const torch::Tensor& keys, const torch::Tensor& values,
                               int64_t topk) {
  const int64_t h = keys.size(0), dk = keys.size(2), rows = q.size(0);
  auto qh = q.view({rows, h, dk}).transpose(0, 1);                                     // [h,R,dk]
  auto scores = torch::bmm(qh, keys.transpose(1, 2)) / std::sqrt(static_cast<double>(dk));  // [h,R,M]
  auto [top, idx] = scores.topk(topk);                                                 // [h,R,k]
  std::vector<torch::Tensor> per_head;
  for (int64_t i = 0; i < h; ++i) {
    auto vals = values[i].index_select(0, idx[i].flatten()).view({rows, topk, dk});    // [R,k,dk]
    per_head.push_back(torch::bmm(torch::softmax(top[i], -1).unsqueeze(1), vals).squeeze(1));  // [R,dk]
  }
  return torch::stack(per_head, 1).reshape({rows, h * dk});                            // [R,h*dk]
}

TEST_F(FusedKernelTest, MemoryReadPicksTheTopKOfEveryHead) {
  // 2048 slots as the model; 100 slots (not a multiple of the 32-slot panel) with k = 7; 1..6 rows (the kernel
  // takes four at a time).
  for (auto [m, topk, rows] : std::vector<std::array<int64_t, 3>>{{2048, 32, 6}, {100, 7, 1}, {2048, 32, 4}}) {
    const int64_t h = 8, dk = 64;
    auto keys = torch::randn({h, m, dk}), values = torch::randn({h, m, dk}), q = torch::randn({rows, h * dk});
    auto want = memory_reference(q, keys, values, topk);
    auto packed = fused::pack_memory_keys(keys);
    for (const auto* t : tables_) {
      auto got = torch::empty({rows, h * dk});
      std::vector<float> scratch(kernels::memory_scratch(m));
      for (int64_t head = 0; head < h; ++head) {
        t->memory_read(f(q) + head * dk, h * dk, rows, f(packed[head]), f(values[head]), m, dk, topk, 1.0f / 8.0f,
                       scratch.data(), f(got) + head * dk, h * dk);
      }
      EXPECT_LT(max_abs(got, want), 1e-5) << t->name << " m=" << m << " k=" << topk << " rows=" << rows;
    }
  }
}

// Few slots for k: three blocks of maxima 9, 8, 7 bound only three slots, and the fourth (0) must still be read.
// A NaN score reads as NaN, never out of bounds.
TEST_F(FusedKernelTest, MemoryReadWithFewBlocksOrANanScoreStillTakesKSlots) {
  const int64_t m = 5, dk = 16, topk = 4;
  // Slot j's key is a multiple of the all-ones query, so its score is that multiple times dk / 4.
  const std::vector<float> score_of = {9, 0, 8, -1, 7};
  auto keys = torch::ones({1, m, dk});
  for (int64_t j = 0; j < m; ++j) keys[0][j].mul_(score_of[static_cast<size_t>(j)]);
  auto values = torch::randn({1, m, dk}), q = torch::ones({1, dk});
  auto want = memory_reference(q, keys, values, topk);
  auto packed = fused::pack_memory_keys(keys);
  for (const auto* t : tables_) {
    auto got = torch::empty({1, dk});
    std::vector<float> scratch(kernels::memory_scratch(m));
    t->memory_read(f(q), dk, 1, f(packed[0]), f(values[0]), m, dk, topk, 0.25f, scratch.data(), f(got), dk);
    EXPECT_LT(max_abs(got, want), 1e-5) << t->name;
    auto nan_q = q.clone();
    nan_q[0][3] = std::numeric_limits<float>::quiet_NaN();
    t->memory_read(f(nan_q), dk, 1, f(packed[0]), f(values[0]), m, dk, topk, 0.25f, scratch.data(), f(got), dk);
    EXPECT_TRUE(torch::isnan(got).any().item<bool>()) << t->name;
  }
}

TEST_F(FusedKernelTest, EqualScoresKeepTheLowerSlotsAsASortWould) {
  // Every slot scores the same: the top k are then the first k slots, and the read is their mean.
  const int64_t h = 1, m = 64, dk = 16, topk = 4;
  auto keys = torch::ones({h, m, dk}), values = torch::arange(m * dk, torch::kFloat).view({h, m, dk});
  auto q = torch::ones({1, dk});
  auto packed = fused::pack_memory_keys(keys);
  for (const auto* t : tables_) {
    auto got = torch::empty({1, dk});
    std::vector<float> scratch(kernels::memory_scratch(m));
    t->memory_read(f(q), dk, 1, f(packed[0]), f(values[0]), m, dk, topk, 0.25f, scratch.data(), f(got), dk);
    EXPECT_LT(max_abs(got[0], values[0].narrow(0, 0, topk).mean(0)), 1e-4) << t->name;
  }
}

TEST_F(FusedKernelTest, TensorEntryPointsStepAsideWhereTheyDoNotApply) {
  auto x = torch::randn({4, 32}), w = torch::randn({8, 32}), b = torch::randn({8});
  EXPECT_TRUE(fused::linear(x, w, b).defined());
  EXPECT_FALSE(fused::linear(torch::randn({fused::kMaxLinearRows + 1, 32}), w, b).defined());  // GEMM's size
  // A row's result does not depend on its call partners (a study's tokens must not depend on its batch).
  auto many = torch::randn({fused::kMaxLinearRows, 32});
  many.narrow(0, 7, 4).copy_(x);
  EXPECT_TRUE(torch::equal(fused::linear(many, w, b).narrow(0, 7, 4), fused::linear(x, w, b)));
  EXPECT_FALSE(fused::linear(x.to(torch::kDouble), w.to(torch::kDouble), b.to(torch::kDouble)).defined());
  {
    torch::AutoGradMode grad(true);  // training: autograd must see ATen's ops
    EXPECT_FALSE(fused::linear(x, w, b).defined());
  }
  set_fused_kernels(false);
  EXPECT_FALSE(fused_kernels_enabled());
  EXPECT_FALSE(fused::linear(x, w, b).defined());
  set_fused_kernels(true);
  EXPECT_TRUE(fused_kernels_enabled());
  EXPECT_NE(std::string(fused_kernels_isa()), "none");
}

// The whole decode on the parity model (two 4-view studies): fused and ATen give the same beams, log-probs equal
// to float rounding, and both give the reference's beam-3 ids.
TEST(FusedDecodeTest, SameBeamsAsAtenAndAsTheReference) {
  if (runnable_tables().empty()) GTEST_SKIP() << "no fused kernels on this CPU";
  torch::set_num_threads(1);
  c10::InferenceMode guard;
  auto config = read_model_config(parity_path("dev/config.json"));
  auto model = load_r2gencmn(parity_path("dev/model.pth"), config);
  auto images = torch::jit::load(parity_path("dev/inputs.pt")).attr("images").toTensor();    // [2,4,3,224,224]
  auto want = torch::jit::load(parity_path("dev/expected.pt")).attr("beam_seq").toTensor();  // [2,L]
  for (int64_t beam : {3, 5}) {
    DecodingOptions options = decoding_options_from(model->config());
    options.beam_size = beam;
    options.max_length = want.size(1);
    set_fused_kernels(false);
    const auto aten = model->generate(images, options);
    set_fused_kernels(true);
    const auto fused = model->generate(images, options);
    ASSERT_EQ(aten.best.size(), fused.best.size());
    for (size_t s = 0; s < aten.best.size(); ++s) {
      ASSERT_EQ(fused.best[s].ids, aten.best[s].ids) << "beam " << beam << " study " << s;
      for (size_t i = 0; i < aten.best[s].ids.size(); ++i) {
        EXPECT_NEAR(fused.best[s].token_log_probs[i], aten.best[s].token_log_probs[i], 1e-5) << "step " << i;
      }
      if (beam == 3) {
        auto ids = fused.best[s].ids;
        ids.resize(want.size(1), 0);
        auto row = want[static_cast<int64_t>(s)].to(torch::kLong).contiguous();
        EXPECT_EQ(ids, std::vector<int64_t>(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel()));
      }
    }
  }
}

}  // namespace
}  // namespace cmn::model
