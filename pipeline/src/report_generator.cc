#include "cmn/pipeline/report_generator.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cmn/common/status_macros.h"

namespace cmn::pipeline {

std::vector<std::string> split_sentences(const std::vector<std::string>& words) {
  std::vector<std::string> sentences;
  std::vector<std::string> current;
  for (const auto& w : words) {
    current.push_back(w);
    if (w == ".") {
      sentences.push_back(absl::StrJoin(current, " "));
      current.clear();
    }
  }
  if (!current.empty()) sentences.push_back(absl::StrJoin(current, " "));
  return sentences;
}

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

ReportGenerator::ReportGenerator(model::R2GenCMN model, model::Tokenizer tokenizer, ModelIdentity identity)
    : model_(std::move(model)), tokenizer_(std::move(tokenizer)), identity_(std::move(identity)) {
  model_->eval();
}

// Re-runs the decoder over the chosen ids of each study (one row per study) with the cross-attention kept,
// and returns per study [layers, T_s, S] (heads averaged). The steps are the decoding pass's own
// computation for that hypothesis: same memory, same prefixes, same incremental decoder.
std::vector<torch::Tensor> replay_token_attention(model::BaseCMNImpl& model, const torch::Tensor& memory,
                                            const std::vector<std::vector<int64_t>>& ids) {
  const int64_t b = static_cast<int64_t>(ids.size());
  size_t longest = 0;
  for (const auto& s : ids) longest = std::max(longest, s.size());
  model::CmnStepModel stepper(model, memory, /*keep_attention=*/true);
  std::vector<std::vector<torch::Tensor>> steps(ids.size());  // [study][t] -> [layers, S]
  auto tokens = torch::zeros({b}, torch::kLong);              // bos = 0
  for (size_t t = 0; t < longest; ++t) {
    stepper.step(tokens);
    const auto& kept = stepper.cache().cross_attention;      // per layer [B,h,S]
    auto per_layer = torch::stack(kept).mean(2).to(torch::kCPU);  // [layers,B,S]
    auto next = torch::zeros({b}, torch::kLong);
    for (int64_t s = 0; s < b; ++s) {
      const auto& seq = ids[static_cast<size_t>(s)];
      if (t >= seq.size()) continue;  // this study ended: its rows keep running on pads, unused
      steps[static_cast<size_t>(s)].push_back(per_layer.select(1, s).clone());  // [layers,S]
      next[s] = seq[t];
    }
    tokens = next;
  }
  std::vector<torch::Tensor> out;
  for (auto& s : steps) {
    out.push_back(s.empty() ? torch::Tensor() : torch::stack(s, 1));  // [layers,T,S]
  }
  return out;
}

absl::StatusOr<std::vector<torch::Tensor>> capture_token_attention(model::R2GenCMN& model, const torch::Tensor& images,
                                                                   const std::vector<std::vector<int64_t>>& token_ids) {
  if (images.dim() != 5 || images.size(0) != static_cast<int64_t>(token_ids.size())) {
    return absl::InvalidArgumentError(absl::StrCat("capture_token_attention: images ", c10::str(images.sizes()),
                                                   " for ", token_ids.size(), " token sequences"));
  }
  try {
    c10::InferenceMode guard;
    auto feats = model->extract(images);                                  // att [B,V*49,2048]
    auto memory = model->encoder_decoder->encode(feats.att);              // [B,S,d]
    return replay_token_attention(*model->encoder_decoder, memory, token_ids);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("attention capture failed: ", e.msg()));
  }
}

absl::StatusOr<std::vector<StudyReport>> ReportGenerator::generate_tensor(const torch::Tensor& images,
                                                                          const model::DecodingOptions& decoding,
                                                                          bool attention) {
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

    std::vector<torch::Tensor> attention_maps;
    if (attention) {
      std::vector<std::vector<int64_t>> chosen;  // without the final eos: its step is not plotted
      for (const auto& h : decoded.best) {
        chosen.push_back(h.ids);
        if (!chosen.back().empty() && chosen.back().back() == 0) chosen.back().pop_back();
      }
      attention_maps = replay_token_attention(*model_->encoder_decoder, memory, chosen);
    }

    std::vector<StudyReport> out;
    for (const auto& h : decoded.best) {
      StudyReport r;
      r.token_ids = h.ids;
      if (!r.token_ids.empty() && r.token_ids.back() == 0) r.token_ids.pop_back();
      r.report = tokenizer_.decode(r.token_ids);
      for (float lp : h.token_log_probs) r.log_prob += lp;
      r.score = h.score;
      r.times = times;
      if (attention) r.token_attention = attention_maps[out.size()];
      out.push_back(std::move(r));
    }
    return out;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("model failed: ", e.msg()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("model failed: ", e.what()));
  }
}

std::vector<absl::StatusOr<StudyReport>> ReportGenerator::generate_batched(size_t count, const StudyFiller& fill,
                                                                           const GeneratorOptions& options) {
  std::vector<absl::StatusOr<StudyReport>> results(count, absl::UnknownError("not run"));
  const int64_t views = model_->config().effective_views();
  const int64_t size = options.image.size;
  const size_t batch = static_cast<size_t>(std::max<int64_t>(1, options.batch_size));

  for (size_t first = 0; first < count; first += batch) {
    const size_t last = std::min(count, first + batch);
    auto start = std::chrono::steady_clock::now();
    // Fill this batch's inputs; a study that fails drops out of the batch with its error.
    std::vector<size_t> ok;
    std::vector<torch::Tensor> tensors;
    for (size_t s = first; s < last; ++s) {
      auto study = torch::empty({views, 3, size, size});                     // [V,3,H,W]
      if (absl::Status status = fill(s, study); !status.ok()) {
        results[s] = status;
        continue;
      }
      ok.push_back(s);
      tensors.push_back(study);
    }
    if (ok.empty()) continue;
    const double preprocess_s = seconds_since(start);
    auto reports = generate_tensor(torch::stack(tensors), options.decoding, options.attention);  // [B,V,3,H,W]
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

namespace {

absl::Status check_view_count(size_t got, int64_t views) {
  if (static_cast<int64_t>(got) == views) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("study has ", got, " images but the model takes ", views));
}

}  // namespace

std::vector<absl::StatusOr<StudyReport>> ReportGenerator::generate_files(
    const std::vector<std::vector<std::string>>& studies, const GeneratorOptions& options) {
  const int64_t views = model_->config().effective_views();
  auto fill = [&](size_t s, torch::Tensor& study) -> absl::Status {
    CMN_RETURN_IF_ERROR(check_view_count(studies[s].size(), views));
    for (int64_t v = 0; v < views; ++v) {
      CMN_ASSIGN_OR_RETURN(auto image,
                           preprocessing::load_model_input(studies[s][static_cast<size_t>(v)], options.image));
      std::memcpy(study[v].data_ptr<float>(), image.data.data(), image.data.size() * sizeof(float));
    }
    return absl::OkStatus();
  };
  return generate_batched(studies.size(), fill, options);
}

std::vector<absl::StatusOr<StudyReport>> ReportGenerator::generate_images(
    const std::vector<std::vector<preprocessing::FloatImage>>& studies, const GeneratorOptions& options) {
  const int64_t views = model_->config().effective_views();
  const int64_t size = options.image.size;
  auto fill = [&](size_t s, torch::Tensor& study) -> absl::Status {
    CMN_RETURN_IF_ERROR(check_view_count(studies[s].size(), views));
    for (int64_t v = 0; v < views; ++v) {
      const auto& image = studies[s][static_cast<size_t>(v)];
      if (image.channels != 3 || image.height != size || image.width != size ||
          image.data.size() != static_cast<size_t>(3 * size * size)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "view ", v, " is ", image.channels, "x", image.height, "x", image.width, " (", image.data.size(),
            " values) but the model takes 3x", size, "x", size));
      }
      std::memcpy(study[v].data_ptr<float>(), image.data.data(), image.data.size() * sizeof(float));
    }
    return absl::OkStatus();
  };
  return generate_batched(studies.size(), fill, options);
}

}  // namespace cmn::pipeline
