// cmn-kernel-bench: each fused CPU kernel of the decode step (model/src/fused_ops.h) against the ATen ops it
// replaces, on the step's shapes (beam 5 x 2 studies = 10 rows, d 512, 8 heads, 2048 memory slots, 98 patches),
// interleaved in one run; one JSON line per op: {"op", "aten_us", "fused_us", "speedup", "max_abs_diff"}.
//   cmn-kernel-bench [--threads 1] [--rows 10] [--repeat 500]
// Builds on cmn_model alone. Internal headers: this is the kernels' own bench, as their test is.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "bench_util.h"
#include "cmn/model/fused_kernels.h"
#include "fused_ops.h"

namespace {

namespace fused = cmn::model::fused;
using Clock = std::chrono::steady_clock;

// Median microseconds of `repeat` calls of each, the two alternating in blocks of 10 so both see the same noise.
std::pair<double, double> time_pair(const std::function<torch::Tensor()>& a, const std::function<torch::Tensor()>& b,
                                    int64_t repeat) {
  std::vector<double> ta, tb;
  for (int i = 0; i < 20; ++i) {  // warm up
    a();
    b();
  }
  for (int64_t r = 0; r < repeat; r += 10) {
    for (auto [f, out] : {std::pair{&a, &ta}, std::pair{&b, &tb}}) {
      const auto t0 = Clock::now();
      for (int i = 0; i < 10; ++i) (*f)();
      out->push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / 10.0);
    }
  }
  return {cmn::bench::median(ta), cmn::bench::median(tb)};
}

void report(const std::string& op, const std::function<torch::Tensor()>& aten,
            const std::function<torch::Tensor()>& fused_op, int64_t repeat) {
  const auto want = aten(), got = fused_op();
  if (!got.defined()) {
    std::cout << "{\"op\": \"" << op << "\", \"fused\": \"not applicable on this CPU\"}\n";
    return;
  }
  const auto [ta, tf] = time_pair(aten, fused_op, repeat);
  std::printf("{\"op\": \"%s\", \"aten_us\": %.1f, \"fused_us\": %.1f, \"speedup\": %.2f, \"max_abs_diff\": %.2g}\n",
              op.c_str(), ta, tf, ta / tf, (want - got).abs().max().item<double>());
}

}  // namespace

int main(int argc, char** argv) {
  int64_t threads = 1, rows = 10, repeat = 500;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    const int64_t value = i + 1 < argc ? cmn::bench::non_negative_int(argv[i + 1]).value_or(0) : 0;
    if ((flag != "--threads" && flag != "--rows" && flag != "--repeat") || value == 0) {
      std::cerr << "cmn-kernel-bench: usage: cmn-kernel-bench [--threads N] [--rows N] [--repeat N] (N >= 1)\n";
      return 2;
    }
    (flag == "--threads" ? threads : flag == "--rows" ? rows : repeat) = value;
    ++i;
  }
  torch::set_num_threads(static_cast<int>(threads));
  torch::NoGradGuard no_grad;
  torch::manual_seed(0);
  std::cout << "{\"kernels_isa\": \"" << cmn::model::fused_kernels_isa() << "\", \"threads\": " << threads
            << ", \"rows\": " << rows << "}\n";
  const int64_t d = 512, h = 8, dk = 64, slots = 2048, topk = 32, patches = 98, cached = 30, r = 5;

  auto x = torch::randn({rows, d}), w = torch::randn({d, d}) * 0.05, b = torch::randn({d});
  report("linear [rows,512]x[512,512]", [&] { return torch::linear(x, w, b); }, [&] { return fused::linear(x, w, b); },
         repeat);

  auto a = torch::randn({d}), c = torch::randn({d});
  report(
      "layer_norm [rows,512]",
      [&] { return a * (x - x.mean(-1, true)) / (x.std(-1, /*unbiased=*/true, true) + 1e-6) + c; },
      [&] { return fused::layer_norm(x, a, c, 1e-6); }, repeat);

  auto ck = torch::randn({rows, h, 64, dk}), cv = torch::randn({rows, h, 64, dk});
  report(
      "self_attention (30 cached positions)",
      [&] {
        auto q = x.view({rows, 1, h, dk}).transpose(1, 2);                                    // [N,h,1,dk]
        auto p = torch::softmax(torch::matmul(q, ck.narrow(2, 0, cached).transpose(-2, -1)) / 8.0, -1);
        return torch::matmul(p, cv.narrow(2, 0, cached)).transpose(1, 2).reshape({rows, d});  // [N,d]
      },
      [&] { return fused::self_attention(x, ck, cv, cached, h); }, repeat);

  const int64_t studies = std::max<int64_t>(1, rows / r);
  auto memory = torch::randn({studies, patches, d});
  auto xk = torch::randn({studies * r, d});
  auto keys = memory.view({studies, patches, h, dk}).transpose(1, 2);          // [B,h,S,dk] (a view)
  auto values = (memory * 0.5).view({studies, patches, h, dk}).transpose(1, 2);
  report(
      "cross_attention (98 patches)",
      [&] {
        auto q = xk.view({studies, r, h, dk}).permute({0, 2, 1, 3});                       // [B,h,r,dk]
        auto p = torch::softmax(torch::matmul(q, keys.transpose(-2, -1)) / 8.0, -1);        // [B,h,r,S]
        return torch::matmul(p, values).permute({0, 2, 1, 3}).reshape({studies * r, d});   // [N,d]
      },
      [&] { return fused::cross_attention(xk, keys, values, r, nullptr); }, repeat);

  auto mkeys = torch::randn({h, slots, dk}), mvalues = torch::randn({h, slots, dk});
  auto packed = fused::pack_memory_keys(mkeys);
  report(
      "memory_read (top 32 of 2048, 8 heads)",
      [&] {
        auto q = x.view({rows, h, dk}).transpose(0, 1);                                     // [h,R,dk]
        auto scores = torch::bmm(q, mkeys.transpose(1, 2)) / 8.0;                           // [h,R,M]
        auto [top, idx] = scores.topk(topk);                                                // [h,R,k]
        auto offset = torch::arange(h, idx.options()).mul_(slots).view({h, 1, 1});
        auto sel = mvalues.view({h * slots, dk}).index_select(0, (idx + offset).view({-1})).view({h, rows, topk, dk});
        auto out = torch::matmul(torch::softmax(top, -1).unsqueeze(2), sel).squeeze(2);     // [h,R,dk]
        return out.transpose(0, 1).reshape({rows, d});                                      // [R,d]
      },
      [&] { return fused::memory_read(x, packed, mvalues, topk); }, repeat / 5 + 10);
  return 0;
}
