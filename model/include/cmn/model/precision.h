#pragma once
// Numeric precision of an inference replica (issue 15 item 1). The weights on disk are always fp32; a replica
// keeps derived copies in the precision it runs in:
//   fp32 - the default and the exact path: every parity fixture is checked in it.
//   bf16 - the ResNet trunk (BN-folded convolutions, channels_last, oneDNN) and every Linear of the
//          encoder / decoder / memory in bfloat16, accumulating in fp32; LayerNorm, softmax, top-k, the attention
//          products and the log-softmax stay fp32. Needs a CPU with AVX512_BF16 or AMX-BF16 (or CUDA).
//   int8 - dynamic quantisation of every Linear (weights int8 per output channel, activations quantised per call,
//          quantized::linear_dynamic on the onednn or qnnpack engine); the trunk stays fp32. CPU only.
// Training never uses these copies: they act only in eval mode with grad off.
#include <optional>
#include <string>

namespace cmn::model {

enum class Precision { kFp32, kBf16, kInt8 };

const char* precision_name(Precision p);                       // "fp32", "bf16", "int8"
std::optional<Precision> parse_precision(const std::string& s);  // the names above; nullopt otherwise

// What this CPU offers for bf16 (CPUID leaf 7: AVX512_BF16 = subleaf 1 EAX bit 5, AMX-BF16 = subleaf 0 EDX bit
// 22, and the OS must save the AVX-512 state: XCR0 bits 5-7).
struct CpuBf16 {
  bool avx512_bf16 = false;
  bool amx_bf16 = false;
};
CpuBf16 cpu_bf16_support();

// "" when `p` can run on `device` ("cpu", "cuda", "cuda:N") here, else one sentence naming what is missing
// (the instruction set, the quantized engine, the device kind). `cpu` is what cpu_bf16_support() says; tests
// pass others.
std::string precision_unavailable(Precision p, const std::string& device, const CpuBf16& cpu);
std::string precision_unavailable(Precision p, const std::string& device);

}  // namespace cmn::model
