#pragma once
// Hand-written fp32 CPU kernels for the shapes of one decode step, where ATen's general ops cost more than
// their arithmetic: a [10,512] x [512,512] Linear through OpenBLAS packs the whole weight for ten rows
// (128 us here, 52 us as plain dot products), a [8,10,64] x [8,64,2048] bmm plus topk(32) takes 1.1 ms
// (0.3 ms fused). One source (cpu_kernels_isa.inc) is compiled once per instruction set, each copy in its own
// namespace with its own -m flags; the table of the best one this CPU runs is chosen once at start.
// Raw pointers, row-major, no threads here: fused_ops.cc splits the work and checks tensors.
#include <cstdint>

namespace cmn::model::kernels {

constexpr int64_t kMaxTopk = 256;
// The memory's keys packed for the scores: [ceil(M/P), dk, P] per head, slot j's key in panel j / P at column
// j % P (zeros past M), so a pass over P slots reads one contiguous panel.
constexpr int64_t kMemoryPanel = 32;
constexpr int64_t memory_padded_slots(int64_t m) { return (m + kMemoryPanel - 1) / kMemoryPanel * kMemoryPanel; }
// Floats of scratch memory_read needs: scores [4, padded m], candidates [m] (score, slot).
constexpr int64_t memory_scratch(int64_t m) { return 4 * memory_padded_slots(m) + 2 * m; }

struct Table {
  const char* name;  // "avx512", "avx2"
  // y[m, n] = b[n] + sum_k x[m, k] w[n, k] for n in [n0, n1): nn.Linear's layout (w [N,K]); b may be null.
  void (*linear)(const float* x, const float* w, const float* b, float* y, int64_t m, int64_t n, int64_t k,
                 int64_t n0, int64_t n1);
  // Rows [r0, r1) of x [rows, d]: y = a * (x - mean) / (std + eps) + b, std unbiased (the reference's LayerNorm).
  void (*layer_norm)(const float* x, const float* a, const float* b, float* y, int64_t d, float eps, int64_t r0,
                     int64_t r1);
  // One query q [dk] over t keys/values (key j at k + j * stride, value j at v + j * stride):
  // out [dk] = softmax(q . k_j * scale) . v_j; the probabilities go to p [t] (also the scratch space).
  void (*attend)(const float* q, const float* k, const float* v, int64_t stride, int64_t t, int64_t dk,
                 float scale, float* p, float* out);
  // The memory read (MultiThreadMemory) of `rows` queries (query r at q + r * q_stride, dk floats) and one head:
  // scores against the packed keys (kMemoryPanel, one head's [ceil(m/P), dk, P]), the top `topk` (at most kMaxTopk), softmax over those, weighted
  // sum of their values [m, dk] -> out + r * out_stride. scratch: memory_scratch(m) floats.
  void (*memory_read)(const float* q, int64_t q_stride, int64_t rows, const float* keys_packed, const float* values,
                      int64_t m, int64_t dk, int64_t topk, float scale, float* scratch, float* out,
                      int64_t out_stride);
};

// The best table this CPU runs (AVX-512F, else AVX2 + FMA), or null: then every caller uses ATen's ops.
const Table* best_table();

namespace avx512 {
const Table& table();
}
// The bf16 Linear with AVX512_BF16 (cpu_kernels_bf16.cc): x [m,k] and w [n,k] in bf16 (k % 32 == 0), fp32 bias
// and output, fp32 accumulation; columns [n0, n1) as the fp32 kernel.
namespace avx512bf16 {
void linear(const uint16_t* x, const uint16_t* w, const float* b, float* y, int64_t m, int64_t n, int64_t k,
            int64_t n0, int64_t n1);
}
// avx512bf16::linear where this CPU runs it (cpu_bf16_support().avx512_bf16) and the build has it, else null.
using LinearBf16 = void (*)(const uint16_t*, const uint16_t*, const float*, float*, int64_t, int64_t, int64_t,
                            int64_t, int64_t);
LinearBf16 best_linear_bf16();
namespace avx2 {
const Table& table();
}

}  // namespace cmn::model::kernels
