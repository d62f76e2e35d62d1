#include "cmn/pipeline/report_generator.h"

#include <chrono>

#include "absl/strings/str_cat.h"

namespace cmn::pipeline {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

ReportGenerator::ReportGenerator(model::R2GenCMN model, model::Tokenizer tokenizer, ModelIdentity identity)
    : model_(std::move(model)), tokenizer_(std::move(tokenizer)), identity_(std::move(identity)) {
  model_->eval();
}

absl::StatusOr<std::vector<StudyReport>> ReportGenerator::generate_tensor(const torch::Tensor& images,
                                                                          const model::DecodingOptions& decoding) {
  try {
    model::validate_decoding_options(decoding);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(e.msg());
  }
  const int64_t views = model_->config().effective_views();
  if (images.dim() != 5 || images.size(1) != views || images.size(2) != 3) {
    return absl::InvalidArgumentError(absl::StrCat("expected images [B,", views, ",3,H,W] for this model, got ",
                                                   c10::str(images.sizes())));
  }
  try {
    c10::InferenceMode guard;
    StageTimes times;
    auto start = std::chrono::steady_clock::now();
    auto feats = model_->extract(images);                                     // att [B,V*49,2048]
    times.visual_s = seconds_since(start);
    start = std::chrono::steady_clock::now();
    auto memory = model_->encoder_decoder->encode(feats.att);                 // [B,S,d]
    times.encode_s = seconds_since(start);
    start = std::chrono::steady_clock::now();
    model::CmnStepModel stepper(*model_->encoder_decoder, memory);
    auto decoded = model::decode(stepper, decoding);
    times.decode_s = seconds_since(start);

    std::vector<StudyReport> out;
    for (const auto& h : decoded.best) {
      StudyReport r;
      r.token_ids = h.ids;
      if (!r.token_ids.empty() && r.token_ids.back() == 0) r.token_ids.pop_back();
      r.report = tokenizer_.decode(r.token_ids);
      for (float lp : h.token_log_probs) r.log_prob += lp;
      r.score = h.score;
      r.times = times;
      out.push_back(std::move(r));
    }
    return out;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("model failed: ", e.msg()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("model failed: ", e.what()));
  }
}

std::vector<absl::StatusOr<StudyReport>> ReportGenerator::generate_files(
    const std::vector<std::vector<std::string>>& studies, const GeneratorOptions& options) {
  std::vector<absl::StatusOr<StudyReport>> results(studies.size(), absl::UnknownError("not run"));
  const int64_t views = model_->config().effective_views();
  const int64_t size = options.image.size;
  const int64_t batch = std::max<int64_t>(1, options.batch_size);

  for (size_t first = 0; first < studies.size(); first += static_cast<size_t>(batch)) {
    const size_t last = std::min(studies.size(), first + static_cast<size_t>(batch));
    auto start = std::chrono::steady_clock::now();
    // Decode this batch's images; studies with a bad image drop out of the batch with their error.
    std::vector<size_t> ok;
    std::vector<torch::Tensor> tensors;
    for (size_t s = first; s < last; ++s) {
      if (static_cast<int64_t>(studies[s].size()) != views) {
        results[s] = absl::InvalidArgumentError(absl::StrCat("study has ", studies[s].size(),
                                                             " images but the model takes ", views));
        continue;
      }
      auto study = torch::empty({views, 3, size, size});                     // [V,3,H,W]
      absl::Status status;
      for (int64_t v = 0; v < views && status.ok(); ++v) {
        auto image = preprocessing::load_model_input(studies[s][static_cast<size_t>(v)], options.image);
        if (!image.ok()) {
          status = image.status();
          break;
        }
        std::memcpy(study[v].data_ptr<float>(), image->data.data(), image->data.size() * sizeof(float));
      }
      if (!status.ok()) {
        results[s] = status;
        continue;
      }
      ok.push_back(s);
      tensors.push_back(study);
    }
    if (ok.empty()) continue;
    const double preprocess_s = seconds_since(start);
    auto reports = generate_tensor(torch::stack(tensors), options.decoding);  // [B,V,3,H,W]
    for (size_t i = 0; i < ok.size(); ++i) {
      if (!reports.ok()) {
        results[ok[i]] = reports.status();
        continue;
      }
      (*reports)[i].times.preprocess_s = preprocess_s;
      results[ok[i]] = std::move((*reports)[i]);
    }
  }
  return results;
}

}  // namespace cmn::pipeline
