// cmn-bundle-fuzzer: the three text files of a model bundle that cmn parses (pipeline/bundle.h):
//   model.yaml  -> parse_model_yaml (field table, ModelConfig validation)
//   SHA256SUMS  -> parse_sha256sums
//   vocab.txt   -> model::Tokenizer::from_vocab_file (the real path reader, over a file in /dev/shm)
// Every input is given to all three (a seed of one kind mutates into the others' territory); each must give
// a value or an error (absl::Status; std::runtime_error for the vocab, as tokenizer.h documents), nothing else.
// read_bundle_info checks SHA256SUMS against the files before parsing model.yaml, so fuzzing it whole would
// almost never reach the YAML parser; the parsers are what it runs on the bytes.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "bundle_internal.h"
#include "cmn/model/tokenizer.h"
#include "fuzz_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  namespace bd = cmn::pipeline::bundle_detail;
  auto info = bd::parse_model_yaml(text, "fuzz/model.yaml");
  if (info.ok()) {
    // What was accepted must be written back and read again to the same fields (bundle_write.cc relies on it).
    auto again = bd::parse_model_yaml(bd::emit_model_yaml(*info), "fuzz/emitted.yaml");
    if (!again.ok() || again->weights_file != info->weights_file || again->name != info->name) __builtin_trap();
  }
  auto sums = bd::parse_sha256sums(text, "fuzz/SHA256SUMS");
  if (sums.ok()) {
    for (const auto& e : *sums) {
      if (e.hex.size() != 64 || !bd::is_plain_file_name(e.file)) __builtin_trap();
    }
  }
  const std::string path = cmn::fuzz::write_input("vocab.txt", text.data(), text.size());
  try {
    const auto tok = cmn::model::Tokenizer::from_vocab_file(path, cmn::model::CleaningRule::kIuXray);
    (void)tok.decode({1, 2, 3});
  } catch (const std::runtime_error&) {
    // the documented failure (empty line, duplicate token, no <unk>)
  } catch (const std::out_of_range&) {
    // decode of an id beyond a small vocabulary: documented
  }
  return 0;
}
