// cmn-checkpoint-fuzzer: any bytes as a torch.save archive (zip container + pickle + storage records) must
// give a CheckpointInfo or a c10::Error: no crash, no sanitizer report, no leak, no allocation beyond what the
// bytes can justify (-malloc_limit_mb), no stack overflow from nesting. Any other exception escaping is a
// finding too (libFuzzer reports it as a crash).
//
// read_checkpoint_bytes is read_checkpoint's implementation over a string stream (the path API only adds the
// ifstream). Seeds (corpus/checkpoint/) are archives written by cmn's own write_checkpoint, see
// make_checkpoint_seeds.cc. Run: fuzz/README.md.
#include <cstddef>
#include <cstdint>
#include <string>

#include "cmn/model/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    const cmn::model::CheckpointInfo info = cmn::model::read_checkpoint_bytes(bytes);
    for (const auto& [key, tensor] : info.state_dict) {
      // A tensor handed out must be usable without reading outside its record; touching one element of a
      // non-empty tensor makes ASan check that (sizes were validated against the storage).
      if (!tensor.defined()) __builtin_trap();
      if (tensor.numel() > 0) (void)tensor.flatten()[0].item<double>();
    }
  } catch (const c10::Error&) {
    // the documented failure
  }
  return 0;
}
