#pragma once
// What ReportServiceImpl does with a GenerateReport request before the engine, as functions of the request and
// the server's fixed settings (no gRPC context, no engine): the limits, the decoding it resolves to, the memory
// estimate, and DICOM -> the model's view slots. The service calls these; so does fuzz/generate_request_fuzzer.cc,
// which is why nothing here may pull LibTorch's headers or the engine.
//
// Around them the service adds only what needs the call itself: authentication (metadata, not request bytes),
// the deadline, the engine's admission slot and the preprocess concurrency gate.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cmn/model/decoding_options.h"
#include "cmn/pipeline/bundle_info.h"
#include "cmn/preprocessing/dicom.h"
#include "cmn/server/config.h"
#include "cmn/v1/report_service.pb.h"

namespace cmn::server {

// Request decoding overrides -> the options a study is decoded with (bundle defaults, overrides, clamped to
// the limits). INVALID_ARGUMENT for negative values or an unknown method; `warnings` gets one line per clamp.
absl::StatusOr<model::DecodingOptions> resolve_decoding(const model::ModelConfig& model_config,
                                                        const v1::DecodingOverrides& overrides,
                                                        const LimitsOptions& limits,
                                                        std::vector<std::string>* warnings);

// How the server assembles studies for `model`: its views, image options and modalities (the `study:` section's
// list when set), and the pixel limits.
preprocessing::StudyOptions study_options_for(const pipeline::BundleInfo& model, const StudyConfig& study,
                                              const LimitsOptions& limits);

// A request that passed the checks below.
struct RequestPlan {
  model::DecodingOptions decoding;
  std::vector<std::string> warnings;  // clamped overrides
  int64_t decode_budget = 0;          // bytes decoding may take (limits.max_request_mb less the rest), >= 1
};

// 1. The request against the server's limits: instances (none: INVALID_ARGUMENT; too many: RESOURCE_EXHAUSTED),
// require_trained_model, the decoding overrides (resolve_decoding), and its estimated peak memory
// (request_memory.h) against limits.max_request_mb (RESOURCE_EXHAUSTED with the figures).
absl::StatusOr<RequestPlan> plan_request(const v1::GenerateReportRequest& request, const pipeline::BundleInfo& model,
                                         const preprocessing::StudyOptions& study, const LimitsOptions& limits);

// 3. Every instance's DICOM bytes -> the study (slots, skipped instances, one model input per view), decoding
// at most `decode_budget` bytes at once. Instances are named by position only ("instance[2]"): a caller's names
// could carry patient data. RESOURCE_EXHAUSTED over the budget names limits.max_request_mb; INTERNAL if a view
// is not the model's input size.
absl::StatusOr<preprocessing::AssembledStudy> assemble_request_study(const v1::GenerateReportRequest& request,
                                                                     const preprocessing::StudyOptions& study,
                                                                     int64_t decode_budget,
                                                                     const LimitsOptions& limits);

}  // namespace cmn::server
