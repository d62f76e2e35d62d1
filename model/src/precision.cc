#include "cmn/model/precision.h"

#include <cpuid.h>

#include <ATen/Context.h>

namespace cmn::model {

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::kFp32: return "fp32";
    case Precision::kBf16: return "bf16";
    case Precision::kInt8: return "int8";
  }
  return "fp32";
}

std::optional<Precision> parse_precision(const std::string& s) {
  if (s == "fp32") return Precision::kFp32;
  if (s == "bf16") return Precision::kBf16;
  if (s == "int8") return Precision::kInt8;
  return std::nullopt;
}

CpuBf16 cpu_bf16_support() {
  CpuBf16 out;
#if defined(__x86_64__) || defined(__i386__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_max(0, nullptr) < 7) return out;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || (ecx & (1u << 27)) == 0) return out;  // OSXSAVE
  unsigned xcr0_lo = 0, xcr0_hi = 0;
  __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  const bool avx512_state = (xcr0_lo & 0xE6u) == 0xE6u;          // SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM
  const bool amx_state = (xcr0_lo & (3u << 17)) == (3u << 17);     // XTILECFG, XTILEDATA
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  out.amx_bf16 = amx_state && (edx & (1u << 22)) != 0;
  __cpuid_count(7, 1, eax, ebx, ecx, edx);
  out.avx512_bf16 = avx512_state && (eax & (1u << 5)) != 0;
#endif
  return out;
}

std::string precision_unavailable(Precision p, const std::string& device, const CpuBf16& cpu) {
  const bool cuda = device.rfind("cuda", 0) == 0;
  switch (p) {
    case Precision::kFp32: return "";
    case Precision::kBf16:
      if (cuda || cpu.avx512_bf16 || cpu.amx_bf16) return "";
      return "precision bf16 needs a CPU with AVX512_BF16 or AMX-BF16 instructions and this CPU has neither "
             "(without them bf16 is emulated and slower than fp32): use fp32, or int8";
    case Precision::kInt8: {
      if (cuda) return "precision int8 (dynamic quantisation) runs on the CPU only: use bf16 or fp32 on CUDA";
      for (auto engine : at::globalContext().supportedQEngines()) {
        if (engine == at::QEngine::ONEDNN || engine == at::QEngine::QNNPACK || engine == at::QEngine::FBGEMM) return "";
      }
      return "precision int8 needs a quantized engine (onednn, fbgemm or qnnpack) and this LibTorch has none: use fp32";
    }
  }
  return "";
}

std::string precision_unavailable(Precision p, const std::string& device) {
  return precision_unavailable(p, device, cpu_bf16_support());
}

}  // namespace cmn::model
