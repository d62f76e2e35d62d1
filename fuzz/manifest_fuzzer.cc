// cmn-manifest-fuzzer: any bytes as a cmn-generate manifest, read both as CSV and as JSONL by parse_manifest
// (client/batch/src/manifest.cc: what list_manifest_studies parses before it resolves paths and walks folders;
// the walk is left out so that a fuzzed "/" does not list the file system). Must give studies or an error
// status; every study has a non-empty id and at least one path.
#include <cstddef>
#include <cstdint>
#include <string>

#include "batch_internal.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (bool jsonl : {false, true}) {
    auto studies = cmn::batch::detail::parse_manifest(text, jsonl, "fuzz");
    if (!studies.ok()) continue;
    for (const auto& s : *studies) {
      if (s.id.empty() || s.paths.empty()) __builtin_trap();
    }
  }
  return 0;
}
