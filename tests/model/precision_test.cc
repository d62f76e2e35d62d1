// Reduced-precision inference (model/precision.h): which hosts may run it, and that the derived weights act only
// where they should (eval, grad off) and stay close to fp32. Accuracy on the full model: tests/engine and
// bench/precision_check.cc.
#include "cmn/model/precision.h"

#include <algorithm>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cmn/model/fused_kernels.h"
#include "cmn/model/layers.h"
#include "cmn/model/visual_extractor.h"

namespace cmn::model {
namespace {

TEST(PrecisionTest, NamesRoundTripAndOthersAreRefused) {
  for (Precision p : {Precision::kFp32, Precision::kBf16, Precision::kInt8}) {
    EXPECT_EQ(parse_precision(precision_name(p)), p);
  }
  EXPECT_FALSE(parse_precision("fp16"));
  EXPECT_FALSE(parse_precision("BF16"));
  EXPECT_FALSE(parse_precision(""));
}

TEST(PrecisionTest, Bf16NeedsTheInstructionsAndSaysWhichOnesAreMissing) {
  const std::string missing = precision_unavailable(Precision::kBf16, "cpu", CpuBf16{false, false});
  EXPECT_NE(missing.find("AVX512_BF16"), std::string::npos) << missing;
  EXPECT_NE(missing.find("AMX-BF16"), std::string::npos) << missing;
  EXPECT_EQ(precision_unavailable(Precision::kBf16, "cpu", CpuBf16{true, false}), "");
  EXPECT_EQ(precision_unavailable(Precision::kBf16, "cpu", CpuBf16{false, true}), "");
  EXPECT_EQ(precision_unavailable(Precision::kBf16, "cuda:0", CpuBf16{false, false}), "");  // CUDA always has bf16
  EXPECT_EQ(precision_unavailable(Precision::kFp32, "cpu", CpuBf16{false, false}), "");
}

TEST(PrecisionTest, Int8RunsOnTheCpuOnlyWithAQuantizedEngine) {
  const std::string on_cuda = precision_unavailable(Precision::kInt8, "cuda", CpuBf16{});
  EXPECT_NE(on_cuda.find("CPU only"), std::string::npos) << on_cuda;
  const auto& engines = at::globalContext().supportedQEngines();
  const bool has_engine = std::any_of(engines.begin(), engines.end(), [](at::QEngine e) {
    return e == at::QEngine::ONEDNN || e == at::QEngine::QNNPACK || e == at::QEngine::FBGEMM;
  });
  EXPECT_EQ(precision_unavailable(Precision::kInt8, "cpu", CpuBf16{}).empty(), has_engine);
}

// The CPU this test runs on, read with CPUID, agrees with the kernel's view (/proc/cpuinfo flags).
TEST(PrecisionTest, CpuidAgreesWithProcCpuinfo) {
  std::ifstream cpuinfo("/proc/cpuinfo");
  if (!cpuinfo) GTEST_SKIP() << "no /proc/cpuinfo";
  std::string line, flags;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("flags", 0) == 0) {
      flags = " " + line.substr(line.find(':') + 1) + " ";
      break;
    }
  }
  if (flags.empty()) GTEST_SKIP() << "no flags line";
  const CpuBf16 cpu = cpu_bf16_support();
  EXPECT_EQ(cpu.avx512_bf16, flags.find(" avx512_bf16 ") != std::string::npos) << flags;
  EXPECT_EQ(cpu.amx_bf16, flags.find(" amx_bf16 ") != std::string::npos) << flags;
}

// cmn's Linear is torch::nn::Linear as far as checkpoints and seeded training can tell.
TEST(PrecisionLinearTest, SameParametersAndInitialisationAsTorchLinear) {
  torch::manual_seed(3);
  torch::nn::Linear theirs(48, 20);
  torch::manual_seed(3);
  Linear ours(48, 20);
  const auto a = theirs->named_parameters(), b = ours->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& p : a) {
    ASSERT_TRUE(b.contains(p.key())) << p.key();
    EXPECT_TRUE(torch::equal(p.value(), b[p.key()])) << p.key();
  }
  const auto x = torch::randn({5, 48});
  EXPECT_TRUE(torch::equal(theirs(x), ours(x)));
}

TEST(PrecisionLinearTest, DerivedWeightsActInEvalWithoutGradAndStayCloseToFp32) {
  // One thread: OpenBLAS splits a GEMM by the OpenMP team it finds, and its sums (so torch::equal below) change
  // with the split; an OpenMP region run in between (a fused kernel's, QNNPACK's) can change that team.
  torch::set_num_threads(1);
  torch::manual_seed(5);
  Linear layer(512, 512);
  layer->eval();
  const auto x = torch::randn({3, 10, 512});               // [B,T,d]
  torch::Tensor exact, fused;
  {
    torch::NoGradGuard no_grad;
    fused = layer(x);                                       // [B,T,d] fused CPU kernel where there is one
    set_fused_kernels(false);                               // "exact" below means ATen's torch::linear
    exact = layer(x);
  }
  // The fused fp32 kernel (fused_kernels.h) differs from ATen's GEMM by summation order only.
  EXPECT_LT((fused - exact).abs().max().item<double>(), 1e-4);
  struct Restore {
    ~Restore() { set_fused_kernels(true); }
  } restore;
  for (Precision p : {Precision::kBf16, Precision::kInt8}) {
    layer->set_precision(p);
    torch::NoGradGuard no_grad;
    const auto y = layer(x);
    ASSERT_EQ(y.sizes(), exact.sizes()) << precision_name(p);
    EXPECT_EQ(y.scalar_type(), torch::kFloat) << precision_name(p);
    const double scale = exact.abs().max().item<double>();
    const double err = (y - exact).abs().max().item<double>();
    EXPECT_FALSE(torch::equal(y, exact)) << precision_name(p) << ": the derived weights were not used";
    // bf16 keeps 8 bits of mantissa (~0.4% per product, summed over 512); int8 per-channel weights and per-call
    // activations ~1%.
    EXPECT_LT(err, 0.03 * scale) << precision_name(p);
  }
  // With grad on (training, SCST) or in train mode the layer is fp32 whatever its precision.
  layer->set_precision(Precision::kBf16);
  EXPECT_TRUE(torch::equal(layer(x), exact));
  {
    torch::NoGradGuard no_grad;
    layer->train();
    EXPECT_TRUE(torch::equal(layer(x), exact));
    layer->eval();
  }
  // fp32 drops the copies: exact again.
  layer->set_precision(Precision::kFp32);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(layer(x), exact));
}

// The bf16 trunk (folded convolutions in bf16, channels_last) gives fp32 features close to the fp32 trunk's.
TEST(PrecisionTrunkTest, Bf16ResNetFeaturesAreCloseToFp32) {
  torch::manual_seed(11);
  VisualExtractor trunk;
  trunk->eval();
  torch::NoGradGuard no_grad;
  // Give batch norm non-trivial statistics, as a trained trunk has.
  for (auto& b : trunk->named_buffers()) {
    if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 2.0);
    if (b.key().find("running_mean") != std::string::npos) b.value().uniform_(-0.1, 0.1);
  }
  const auto images = torch::randn({2, 3, 224, 224});
  const auto [att, fc] = trunk->forward(images);            // [2,49,2048], [2,2048]
  trunk->set_precision(Precision::kBf16);
  const auto [att16, fc16] = trunk->forward(images);
  EXPECT_EQ(att16.scalar_type(), torch::kFloat);
  ASSERT_EQ(att16.sizes(), att.sizes());
  EXPECT_FALSE(torch::equal(att16, att));
  // Relative error of the whole feature map (a random 101-layer trunk: errors compound more than a trained one's).
  const double rel = ((att16 - att).norm() / att.norm()).item<double>();
  EXPECT_LT(rel, 0.05) << rel;
  EXPECT_LT(((fc16 - fc).norm() / fc.norm()).item<double>(), 0.05);
  trunk->set_precision(Precision::kFp32);
  EXPECT_TRUE(torch::equal(trunk->forward(images).first, att));
}

}  // namespace
}  // namespace cmn::model
