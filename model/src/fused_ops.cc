#include "fused_ops.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#include <ATen/Parallel.h>

#include "cmn/model/fused_kernels.h"
#include "cmn/model/precision.h"
#include "cpu_kernels.h"

namespace cmn::model {
namespace kernels {

const Table* best_table() {
#if defined(__x86_64__) && defined(CMN_HAVE_CPU_KERNELS)
  // __builtin_cpu_supports checks the OS saves the wider registers too (XCR0), not only CPUID.
  static const Table* chosen = [] () -> const Table* {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma")) return &avx512::table();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &avx2::table();
    return nullptr;
  }();
  return chosen;
#else
  return nullptr;
#endif
}

LinearBf16 best_linear_bf16() {
#if defined(__x86_64__) && defined(CMN_HAVE_CPU_KERNELS)
  static const LinearBf16 chosen = cpu_bf16_support().avx512_bf16 ? &avx512bf16::linear : nullptr;
  return chosen;
#else
  return nullptr;
#endif
}

}  // namespace kernels

namespace {
std::atomic<bool> g_enabled{true};
}

const char* fused_kernels_isa() {
  const auto* t = kernels::best_table();
  return t ? t->name : "none";
}

void set_fused_kernels(bool on) { g_enabled.store(on); }

bool fused_kernels_enabled() { return g_enabled.load() && kernels::best_table() != nullptr; }

namespace fused {
namespace {

// The kernels' table when a fused op may run on these tensors, else null.
const kernels::Table* usable(std::initializer_list<const torch::Tensor*> tensors) {
  if (!fused_kernels_enabled() || torch::GradMode::is_enabled()) return nullptr;
  for (const auto* t : tensors) {
    if (!t->defined()) continue;
    // Parameters keep requires_grad in eval; with grad mode off nothing is recorded, which is all that matters.
    if (!t->device().is_cpu() || t->scalar_type() != torch::kFloat) return nullptr;
  }
  return kernels::best_table();
}

// Units of work per task so that one task is worth waking a thread for (~64k multiply-adds).
int64_t grain(int64_t work_per_unit) { return std::max<int64_t>(1, 65536 / std::max<int64_t>(1, work_per_unit)); }

// at::parallel_for, except under ThreadSanitizer: libgomp hands work to its team and waits for it with futexes
// TSan cannot see, so instrumented kernel code on the team would read as racing with the caller (ATen's own
// kernels run there too, but uninstrumented). Serial there, the kernels stay checked against cmn's threads.
template <typename F>
void parallel(int64_t begin, int64_t end, int64_t grain_size, const F& f) {
#if defined(__SANITIZE_THREAD__)
  (void)grain_size;
  if (begin < end) f(begin, end);
#else
  at::parallel_for(begin, end, grain_size, f);
#endif
}

// The shape checks both Linears share: x [..., K] against w [N,K] (contiguous), b [N] or undefined, at most
// kMaxLinearRows rows. The row count, or 0 when the fused path does not apply.
int64_t linear_rows(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  if (w.dim() != 2 || !w.is_contiguous() || x.size(-1) != w.size(1)) return 0;
  if (b.defined() && (!b.is_contiguous() || b.numel() != w.size(0))) return 0;
  const int64_t m = x.numel() / std::max<int64_t>(1, w.size(1));
  return m <= kMaxLinearRows ? m : 0;
}

// y [..., N] fp32, filled by `columns(y, c0, c1)` for column ranges: blocks of four output columns (the kernels'
// unit) split across threads.
template <typename Columns>
torch::Tensor linear_columns(const torch::Tensor& x, int64_t m, int64_t n, int64_t k, const Columns& columns) {
  auto sizes = x.sizes().vec();
  sizes.back() = n;
  auto y = torch::empty(sizes, x.options());  // [..., N]
  float* yp = y.data_ptr<float>();
  parallel(0, (n + 3) / 4, grain(4 * m * k),
           [&](int64_t c0, int64_t c1) { columns(yp, c0 * 4, std::min(n, c1 * 4)); });
  return y;
}

}  // namespace

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  const auto* t = usable({&x, &w, &b});
  const int64_t m = t ? linear_rows(x, w, b) : 0;
  if (m == 0) return {};
  const int64_t n = w.size(0), k = w.size(1);
  const auto xc = x.contiguous();
  const float* xp = xc.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  const float* bp = b.defined() ? b.data_ptr<float>() : nullptr;
  return linear_columns(x, m, n, k, [&](float* yp, int64_t c0, int64_t c1) {
    t->linear(xp, wp, bp, yp, m, n, k, c0, c1);
  });
}

torch::Tensor linear_bf16(const torch::Tensor& x, const torch::Tensor& w_bf16, const torch::Tensor& b) {
  const auto fn = kernels::best_linear_bf16();
  if (!fn || !usable({&x, &b}) || !w_bf16.defined() || w_bf16.scalar_type() != torch::kBFloat16) return {};
  if (!w_bf16.device().is_cpu() || w_bf16.dim() != 2 || w_bf16.size(1) % 32 != 0) return {};
  const int64_t m = linear_rows(x, w_bf16, b);
  if (m == 0) return {};
  const int64_t n = w_bf16.size(0), k = w_bf16.size(1);
  const auto xb = x.to(torch::kBFloat16).contiguous();  // [..., K] rounded to nearest even, as torch::linear's input
  const auto* xp = reinterpret_cast<const uint16_t*>(xb.data_ptr<at::BFloat16>());
  const auto* wp = reinterpret_cast<const uint16_t*>(w_bf16.data_ptr<at::BFloat16>());
  const float* bp = b.defined() ? b.data_ptr<float>() : nullptr;
  return linear_columns(x, m, n, k, [&](float* yp, int64_t c0, int64_t c1) {
    fn(xp, wp, bp, yp, m, n, k, c0, c1);                // [..., N] fp32
  });
}

torch::Tensor layer_norm(const torch::Tensor& x, const torch::Tensor& a, const torch::Tensor& b, double eps) {
  const auto* t = usable({&x, &a, &b});
  if (!t || !a.defined() || !b.defined() || !a.is_contiguous() || !b.is_contiguous()) return {};
  const int64_t d = x.size(-1);
  if (d < 2 || a.numel() != d || b.numel() != d) return {};
  const auto xc = x.contiguous();
  auto y = torch::empty_like(xc);
  const int64_t rows = xc.numel() / d;
  const float* xp = xc.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  parallel(0, rows, grain(4 * d), [&](int64_t r0, int64_t r1) {
    t->layer_norm(xp, a.data_ptr<float>(), b.data_ptr<float>(), yp, d, static_cast<float>(eps), r0, r1);
  });
  return y;
}

torch::Tensor self_attention(const torch::Tensor& q, const torch::Tensor& keys, const torch::Tensor& values,
                             int64_t t, int64_t heads) {
  const auto* k = usable({&q, &keys, &values});
  if (!k || keys.dim() != 4 || !keys.is_contiguous() || !values.is_contiguous() || keys.sizes() != values.sizes())
    return {};
  const int64_t n = keys.size(0), h = keys.size(1), cap = keys.size(2), dk = keys.size(3);
  if (h != heads || t < 1 || t > cap || q.numel() != n * h * dk) return {};
  const auto qc = q.contiguous();
  auto out = torch::empty({n, h * dk}, q.options());  // [N, h*dk]
  const float* qp = qc.data_ptr<float>();
  const float* kp = keys.data_ptr<float>();
  const float* vp = values.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const float scale = 1.0f / std::sqrt(static_cast<float>(dk));
  parallel(0, n * h, grain(2 * t * dk), [&](int64_t i0, int64_t i1) {
    std::vector<float> p(t);
    for (int64_t i = i0; i < i1; ++i) {  // i = row * h + head
      const int64_t row = i / h, head = i % h;
      const int64_t base = (row * h + head) * cap * dk;  // keys[row, head, 0, 0]
      k->attend(qp + row * h * dk + head * dk, kp + base, vp + base, dk, t, dk, scale, p.data(),
                op + row * h * dk + head * dk);
    }
  });
  return out;
}

torch::Tensor cross_attention(const torch::Tensor& q, const torch::Tensor& keys, const torch::Tensor& values,
                              int64_t rows_per_study, torch::Tensor* probabilities) {
  const auto* k = usable({&q, &keys, &values});
  if (!k || keys.dim() != 4 || keys.sizes() != values.sizes() || keys.strides() != values.strides()) return {};
  if (keys.stride(3) != 1) return {};
  const int64_t b = keys.size(0), h = keys.size(1), s = keys.size(2), dk = keys.size(3);
  const int64_t r = rows_per_study, n = b * r;
  if (q.numel() != n * h * dk) return {};
  const auto qc = q.contiguous();
  auto out = torch::empty({n, h * dk}, q.options());    // [N, h*dk]
  auto p = torch::empty({n, h, s}, q.options());        // [N,h,S]
  const float* qp = qc.data_ptr<float>();
  const float* kp = keys.data_ptr<float>();
  const float* vp = values.data_ptr<float>();
  float* op = out.data_ptr<float>();
  float* pp = p.data_ptr<float>();
  const auto st = keys.strides();  // study, head, position (the image keys are views split by head)
  const float scale = 1.0f / std::sqrt(static_cast<float>(dk));
  parallel(0, n * h, grain(2 * s * dk), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {  // i = row * h + head; row = study * r + beam
      const int64_t row = i / h, head = i % h, study = row / r;
      const int64_t base = study * st[0] + head * st[1];
      k->attend(qp + row * h * dk + head * dk, kp + base, vp + base, st[2], s, dk, scale, pp + i * s,
                op + row * h * dk + head * dk);
    }
  });
  if (probabilities) *probabilities = p;
  return out;
}

torch::Tensor pack_memory_keys(const torch::Tensor& keys) {
  TORCH_CHECK(keys.dim() == 3, "pack_memory_keys: keys [h,M,dk], got ", keys.sizes());
  if (!kernels::best_table()) return {};  // no kernel would read them: no second copy of the keys
  const int64_t h = keys.size(0), m = keys.size(1), dk = keys.size(2);
  const int64_t panels = kernels::memory_padded_slots(m) / kernels::kMemoryPanel;
  auto padded = torch::zeros({h, panels * kernels::kMemoryPanel, dk}, keys.options());
  padded.narrow(1, 0, m).copy_(keys);
  return padded.view({h, panels, kernels::kMemoryPanel, dk}).transpose(2, 3).contiguous();  // [h,M/P,dk,P]
}

torch::Tensor memory_read(const torch::Tensor& q, const torch::Tensor& keys_packed, const torch::Tensor& values,
                          int64_t topk) {
  const auto* k = usable({&q, &keys_packed, &values});
  if (!k || keys_packed.dim() != 4 || values.dim() != 3 || !keys_packed.is_contiguous() || !values.is_contiguous())
    return {};
  const int64_t h = values.size(0), m = values.size(1), dk = values.size(2);
  if (keys_packed.size(0) != h || keys_packed.size(1) * kernels::kMemoryPanel != kernels::memory_padded_slots(m) ||
      keys_packed.size(2) != dk || keys_packed.size(3) != kernels::kMemoryPanel)
    return {};
  if (topk < 1 || topk > m || topk > kernels::kMaxTopk || q.size(-1) != h * dk) return {};
  const auto qc = q.contiguous();
  const int64_t rows = qc.numel() / (h * dk);
  auto out = torch::empty({rows, h * dk}, q.options());  // [R, h*dk]
  const float* qp = qc.data_ptr<float>();
  const float* kp = keys_packed.data_ptr<float>();
  const float* vp = values.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const float scale = 1.0f / std::sqrt(static_cast<float>(dk));
  const int64_t head_keys = keys_packed.size(1) * dk * kernels::kMemoryPanel;
  // Units: (head, group of four rows), the kernel's unit: the four rows share every key load.
  const int64_t groups = (rows + 3) / 4;
  parallel(0, h * groups, grain(4 * m * dk), [&](int64_t i0, int64_t i1) {
    std::vector<float> scratch(kernels::memory_scratch(m));
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t head = i / groups, r0 = (i % groups) * 4;
      k->memory_read(qp + r0 * h * dk + head * dk, h * dk, std::min<int64_t>(4, rows - r0), kp + head * head_keys,
                     vp + head * m * dk, m, dk, topk, scale, scratch.data(), op + r0 * h * dk + head * dk, h * dk);
    }
  });
  return out;
}

}  // namespace fused
}  // namespace cmn::model
