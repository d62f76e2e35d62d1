#include "cmn/server/request_intake.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "cmn/common/status_macros.h"
#include "cmn/engine/replica.h"
#include "cmn/server/request_memory.h"

namespace cmn::server {

absl::StatusOr<model::DecodingOptions> resolve_decoding(const model::ModelConfig& model_config,
                                                        const v1::DecodingOverrides& o, const LimitsOptions& limits,
                                                        std::vector<std::string>* warnings) {
  // A bundle's sample_method is checked when it loads; checked here too so decoding_options_from cannot throw.
  if (!model::parse_decoding_method(model_config.sample_method).has_value()) {
    return absl::InvalidArgumentError(absl::StrCat("sample_method '", model_config.sample_method,
                                                   "' is not one of beam_search, greedy, sample"));
  }
  model::DecodingOptions d = model::decoding_options_from(model_config);
  d.beam_size = std::min<int64_t>(d.beam_size, limits.max_beam_size);
  d.max_length = std::min<int64_t>(d.max_length, limits.max_length);
  switch (o.method()) {
    case v1::DECODING_METHOD_UNSPECIFIED: break;
    case v1::DECODING_METHOD_BEAM_SEARCH: d.method = model::DecodingMethod::kBeamSearch; break;
    case v1::DECODING_METHOD_GREEDY: d.method = model::DecodingMethod::kGreedy; break;
    case v1::DECODING_METHOD_SAMPLE: d.method = model::DecodingMethod::kSample; break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("decoding.method: unknown value ", o.method()));
  }
  auto clamp = [&](const char* name, int32_t requested, int64_t limit, int64_t* field) -> absl::Status {
    if (requested < 0) {
      return absl::InvalidArgumentError(absl::StrCat("decoding.", name, ": must be >= 0 (0 = default), got ", requested));
    }
    if (requested == 0) return absl::OkStatus();
    *field = std::min<int64_t>(requested, limit);
    if (requested > limit) warnings->push_back(absl::StrCat("decoding.", name, " ", requested, " clamped to ", limit));
    return absl::OkStatus();
  };
  CMN_RETURN_IF_ERROR(clamp("beam_size", o.beam_size(), limits.max_beam_size, &d.beam_size));
  CMN_RETURN_IF_ERROR(clamp("max_length", o.max_length(), limits.max_length, &d.max_length));
  if (std::isnan(o.temperature()) || o.temperature() < 0) {
    return absl::InvalidArgumentError("decoding.temperature: must be >= 0 (0 = default)");
  }
  if (o.temperature() > 0) d.temperature = o.temperature();
  if (o.seed() != 0) d.seed = o.seed();
  if (absl::Status valid = engine::validate_decoding(d); !valid.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("decoding: ", valid.message()));
  }
  return d;
}

preprocessing::StudyOptions study_options_for(const pipeline::BundleInfo& model, const StudyConfig& study,
                                              const LimitsOptions& limits) {
  preprocessing::StudyOptions options;
  options.views = model.config.effective_views();
  options.allowed_modalities = study.allowed_modalities.empty() ? model.allowed_modalities : study.allowed_modalities;
  options.read.max_pixels = limits.max_pixels;
  options.read.max_dimension = limits.max_dimension;
  options.image = model.image;
  if (study.draft_decode) options.read.draft_min_side = options.image.size;
  return options;
}

absl::StatusOr<RequestPlan> plan_request(const v1::GenerateReportRequest& request, const pipeline::BundleInfo& model,
                                         const preprocessing::StudyOptions& study, const LimitsOptions& limits) {
  if (request.instances_size() == 0) return absl::InvalidArgumentError("the request has no DICOM instances");
  if (request.instances_size() > limits.max_instances) {
    return absl::ResourceExhaustedError(absl::StrCat("the request has ", request.instances_size(),
                                                     " instances; this server takes at most ", limits.max_instances,
                                                     " per study"));
  }
  if (request.require_trained_model() && model.untrained) {
    return absl::FailedPreconditionError(absl::StrCat("require_trained_model is set but the server's model '",
                                                      model.name, "' is untrained (random weights)"));
  }
  RequestPlan plan;
  CMN_ASSIGN_OR_RETURN(plan.decoding, resolve_decoding(model.config, request.decoding(), limits, &plan.warnings));

  // What the request will hold at its peak, against limits.max_request_mb (request_memory.h): the request and
  // the model state here, decoding its largest chosen image inside preprocessing, before any pixel is decoded.
  const int64_t request_bytes = static_cast<int64_t>(request.ByteSizeLong());
  const ModelStateEstimate state = estimate_model_state(model.config, plan.decoding, study.views, study.image.size,
                                                        request.output().attention_maps());
  if (const std::string over = over_memory_ceiling(request_bytes, state, limits.max_request_mb); !over.empty()) {
    return absl::ResourceExhaustedError(over);
  }
  // At least 1 byte: 0 would mean "no ceiling" to assemble_study.
  plan.decode_budget = std::max<int64_t>(1, limits.max_request_mb * (int64_t{1} << 20) - request_bytes - state.total());
  return plan;
}

absl::StatusOr<preprocessing::AssembledStudy> assemble_request_study(const v1::GenerateReportRequest& request,
                                                                     const preprocessing::StudyOptions& study,
                                                                     int64_t decode_budget,
                                                                     const LimitsOptions& limits) {
  std::vector<preprocessing::InstanceInput> inputs;
  inputs.reserve(static_cast<size_t>(request.instances_size()));
  for (int i = 0; i < request.instances_size(); ++i) {
    inputs.push_back({absl::StrCat("instance[", i, "]"), request.instances(i).data()});
  }
  preprocessing::StudyOptions options = study;
  options.max_decode_bytes = decode_budget;
  auto assembled = preprocessing::assemble_study(inputs, options);
  if (!assembled.ok()) {
    if (assembled.status().code() == absl::StatusCode::kResourceExhausted) {
      return absl::ResourceExhaustedError(
          absl::StrCat(assembled.status().message(), " (limits.max_request_mb ", limits.max_request_mb, ")"));
    }
    return assembled.status();
  }
  const size_t want = static_cast<size_t>(3 * study.image.size * study.image.size);
  for (size_t v = 0; v < assembled->images.size(); ++v) {
    if (assembled->images[v].data.size() != want) {
      return absl::InternalError(
          absl::StrCat("preprocessing gave view ", v, " with ", assembled->images[v].data.size(), " values"));
    }
  }
  return assembled;
}

}  // namespace cmn::server
