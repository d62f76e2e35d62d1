#pragma once
// The fused fp32 CPU kernels of the decode step (model/src/cpu_kernels.h): small-row Linear, LayerNorm, one-token
// self- and cross-attention, the memory read with its top-k. On by default where the CPU has AVX2 + FMA or
// AVX-512F; elsewhere (and on CUDA, and with grad on) the same modules run ATen's ops. Both paths give the same
// tokens; log-probs differ by float rounding only (summation order).
namespace cmn::model {

// "avx512", "avx2", or "none" (this CPU runs ATen's ops only).
const char* fused_kernels_isa();
// Process-wide switch, for A/B timing in one run (cmn-bench --kernels aten) and for tests that compare the
// two paths. Turning it on where the ISA is "none" leaves it off.
void set_fused_kernels(bool on);
bool fused_kernels_enabled();

}  // namespace cmn::model
