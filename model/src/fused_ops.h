#pragma once
// Tensor-level entry points to the fused CPU kernels (cpu_kernels.h): each checks that it applies (CPU, fp32,
// grad off, kernels enabled, the layout it needs) and returns an undefined tensor when it does not, so the
// caller runs its ATen ops instead. Work is split over ATen's intra-op threads (at::parallel_for), so
// decode_threads and model.threads govern these kernels as they govern ATen's.
#include <cstdint>

#include <torch/torch.h>

namespace cmn::model::fused {

// The most rows a fused Linear takes. Measured here ([M,512] x [512,512], 1 thread, OpenBLAS 0.3.21): M = 10
// 44 us vs 108, M = 64 253 vs 318, M = 256 1.07 ms vs 1.18. Up to it a row's result does not depend on how many
// rows share the call (each row's sums run in the same order), so a decode batch of up to 51 studies at beam 5
// gives each study the tokens it gets alone.
constexpr int64_t kMaxLinearRows = 256;

// x [..., K] (at most kMaxLinearRows rows), w [N,K], b [N] or undefined -> [..., N]
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b);
// The bf16 Linear (AVX512_BF16): x [..., K] fp32 (rounded to bf16 here), w_bf16 [N,K] bf16 with K % 32 == 0,
// b [N] fp32 -> [..., N] fp32, accumulated and biased in fp32 (ATen's bf16 linear also rounds its output to bf16).
torch::Tensor linear_bf16(const torch::Tensor& x, const torch::Tensor& w_bf16, const torch::Tensor& b);
// The reference's LayerNorm over the last dimension: a * (x - mean) / (std_unbiased + eps) + b
torch::Tensor layer_norm(const torch::Tensor& x, const torch::Tensor& a, const torch::Tensor& b, double eps);
// One new token per row: q [N, h*dk] against the first t positions of keys/values [N,h,capacity,dk]
// (contiguous) -> [N, h*dk], heads side by side as the output projection wants them.
torch::Tensor self_attention(const torch::Tensor& q, const torch::Tensor& keys, const torch::Tensor& values,
                             int64_t t, int64_t heads);
// q [B*r, h*dk] (r rows per study) against keys/values [B,h,S,dk] (dk contiguous) -> [B*r, h*dk]. When
// `probabilities` is not null it receives the attention [B*r,h,S].
torch::Tensor cross_attention(const torch::Tensor& q, const torch::Tensor& keys, const torch::Tensor& values,
                              int64_t rows_per_study, torch::Tensor* probabilities);
// The memory's keys [h,M,dk] packed for memory_read: [h, ceil(M/P), dk, P] (cpu_kernels.h, kMemoryPanel).
// Once per loaded model, beside the keys themselves; undefined on a CPU without the kernels.
torch::Tensor pack_memory_keys(const torch::Tensor& keys);
// The memory read: q [R, h*dk] (already projected) against the packed keys and the values [h,M,dk]
// (contiguous): per head the top-k slots, softmax over them, their values -> [R, h*dk]
torch::Tensor memory_read(const torch::Tensor& q, const torch::Tensor& keys_packed, const torch::Tensor& values,
                          int64_t topk);

}  // namespace cmn::model::fused
