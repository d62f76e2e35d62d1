// engine::validate_decoding, apart from replica.cc so that code without LibTorch's headers (the server's request
// checks and their fuzzer) can link it.
#include "cmn/engine/replica.h"

#include "cmn/model/decoding_rules.h"

namespace cmn::engine {

absl::Status validate_decoding(const model::DecodingOptions& decoding) {
  const std::string problem = model::decoding_options_problem(decoding);
  if (!problem.empty()) return absl::InvalidArgumentError(problem);
  return absl::OkStatus();
}

}  // namespace cmn::engine
