// cmn-annotation-fuzzer: any bytes as R2Gen's annotation.json (read_annotation, the real path reader, over a
// file in /dev/shm) must give an Annotation or an error status: no crash, exception, leak or sanitizer report.
#include <cstddef>
#include <cstdint>

#include "cmn/pipeline/annotation.h"
#include "fuzz_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = cmn::fuzz::write_input("annotation.json", reinterpret_cast<const char*>(data), size);
  auto annotation = cmn::pipeline::read_annotation(path);
  if (annotation.ok()) {
    for (const auto* split : {&annotation->train, &annotation->val, &annotation->test}) {
      for (const auto& e : *split) (void)e.image_paths.size();
    }
  }
  return 0;
}
