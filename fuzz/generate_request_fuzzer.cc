// cmn-generate-request-fuzzer: any bytes as a serialized cmn.v1.GenerateReportRequest, taken through what
// ReportServiceImpl does with a request before the engine, with the very functions it calls
// (server/request_intake.h): the protobuf parse gRPC does, plan_request (instance limits, require_trained_model,
// resolve_decoding's overrides and clamps, the request memory estimate against limits.max_request_mb) and
// assemble_request_study (every instance's DICOM bytes -> view slots, skipped instances, model inputs, decoding
// within the memory budget). Each must give a result or an error status; an accepted study's views must be the
// model input size (a wrong size comes back as INTERNAL from assemble_request_study, which traps here).
//
// Settings: the server's default `limits:` (server/config.h: 16 instances, 50 megapixels, max_request_mb 2048)
// and the untrained demo bundle's model (full-size R2GenCMN, iu_xray, 2 views, CR/DX/DR). The memory ceiling is
// what bounds one input's decoding here, as in the server: run with -rss_limit_mb=3072 (fuzz/README.md).
//
// Not here, because they read the gRPC call rather than its bytes: authentication (metadata), the deadline,
// the engine's admission slot and the preprocess concurrency gate (tests/server cover them).
#include <cstddef>
#include <cstdint>

#include "absl/strings/match.h"
#include "cmn/server/request_intake.h"

namespace {

struct Server {
  cmn::pipeline::BundleInfo model;
  cmn::server::LimitsOptions limits;
  cmn::preprocessing::StudyOptions study;
};

const Server& server() {
  static const Server* s = [] {
    auto* out = new Server;
    out->model.name = "fuzz-demo";
    out->model.untrained = true;
    out->model.config.views = 2;
    out->study = cmn::server::study_options_for(out->model, cmn::server::StudyConfig(), out->limits);
    return out;
  }();
  return *s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  cmn::v1::GenerateReportRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;  // gRPC answers INTERNAL/INVALID_ARGUMENT
  const Server& s = server();
  auto plan = cmn::server::plan_request(request, s.model, s.study, s.limits);
  if (!plan.ok()) return 0;
  if (plan->decoding.beam_size < 1 || plan->decoding.beam_size > s.limits.max_beam_size ||
      plan->decoding.max_length < 1 || plan->decoding.max_length > s.limits.max_length || plan->decode_budget < 1) {
    __builtin_trap();  // the limits must hold for every request the engine is given
  }
  auto study = cmn::server::assemble_request_study(request, s.study, plan->decode_budget, s.limits);
  // assemble_request_study checks every view's size itself and answers INTERNAL naming it ("preprocessing gave
  // view ..."): for the fuzzer that answer is the finding, not a refusal.
  if (!study.ok() && study.status().code() == absl::StatusCode::kInternal &&
      absl::StartsWith(study.status().message(), "preprocessing gave view")) {
    __builtin_trap();
  }
  if (study.ok() && study->images.size() != static_cast<size_t>(s.study.views)) __builtin_trap();
  return 0;
}
