#include "cmn/pipeline/report_generator.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cmn/common/status_macros.h"

namespace cmn::pipeline {

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

ReportGenerator::ReportGenerator(model::R2GenCMN model, model::Tokenizer tokenizer, ModelIdentity identity) {
  auto shared = std::make_shared<const engine::Model>(model.ptr(), std::move(tokenizer), std::move(identity));
  auto replica = engine::Replica::create(std::move(shared), "cpu");
  TORCH_CHECK(replica.ok(), replica.status().ToString());  // a CPU replica of a built network cannot fail
  replica_ = std::move(*replica);
}

ReportGenerator::ReportGenerator(std::unique_ptr<engine::Replica> replica) : replica_(std::move(replica)) {}

absl::StatusOr<std::vector<StudyReport>> ReportGenerator::generate_tensor(const torch::Tensor& images,
                                                                          const model::DecodingOptions& decoding,
                                                                          bool attention, int64_t similar) {
  std::vector<engine::StudyOptions> options;
  if ((attention || similar > 0) && images.dim() >= 1) {
    options.assign(static_cast<size_t>(images.size(0)), {attention, false, similar});
  }
  CMN_ASSIGN_OR_RETURN(engine::BatchResult batch, replica_->run(images, decoding, options));
  StageTimes times;
  times.visual_s = batch.visual_s;
  times.encode_s = batch.encode_s;
  times.decode_s = batch.decode_s + batch.attention_s;
  std::vector<StudyReport> out;
  for (auto& h : batch.studies) {
    StudyReport r;
    r.token_ids = h.ids;
    if (!r.token_ids.empty() && r.token_ids.back() == 0) r.token_ids.pop_back();
    r.report = tokenizer().decode(r.token_ids);
    for (float lp : h.token_log_probs) r.log_prob += lp;
    r.score = h.score;
    r.consistency = h.consistency;
    r.times = times;
    r.token_attention = std::move(h.attention);
    for (const auto& f : h.similar) r.similar.push_back({tokenizer().decode(f.ids), f.similarity});
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<absl::StatusOr<StudyReport>> ReportGenerator::generate_batched(size_t count, const StudyFiller& fill,
                                                                           const GeneratorOptions& options) {
  std::vector<absl::StatusOr<StudyReport>> results(count, absl::UnknownError("not run"));
  const int64_t views = config().effective_views();
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
    auto reports = generate_tensor(torch::stack(tensors), options.decoding, options.attention,
                                   options.similar);  // [B,V,3,H,W]
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
  const int64_t views = config().effective_views();
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

std::vector<absl::StatusOr<engine::ScoredReport>> ReportGenerator::score_images(
    const std::vector<std::vector<preprocessing::FloatImage>>& studies, const std::vector<std::string>& reports,
    const GeneratorOptions& options) {
  std::vector<absl::StatusOr<engine::ScoredReport>> results(studies.size(), absl::UnknownError("not run"));
  if (reports.size() != studies.size()) {
    for (auto& r : results) r = absl::InvalidArgumentError(absl::StrCat(reports.size(), " reports for ", studies.size(), " studies"));
    return results;
  }
  const size_t batch = static_cast<size_t>(std::max<int64_t>(1, options.batch_size));
  for (size_t first = 0; first < studies.size(); first += batch) {
    const size_t last = std::min(studies.size(), first + batch);
    const std::vector<std::vector<preprocessing::FloatImage>> chunk(studies.begin() + static_cast<std::ptrdiff_t>(first),
                                                                    studies.begin() + static_cast<std::ptrdiff_t>(last));
    std::vector<std::vector<int64_t>> ids;
    for (size_t s = first; s < last; ++s) {
      const auto encoded = tokenizer().encode(reports[s]);         // 0, ids..., 0 (R2Gen's tokenizer call)
      ids.emplace_back(encoded.begin() + 1, encoded.end() - 1);     // the words alone: score() adds bos and end
    }
    auto scored = replica_->score(chunk, ids);
    for (size_t s = first; s < last; ++s) {
      if (scored.ok()) {
        results[s] = std::move((*scored)[s - first]);
      } else {
        results[s] = scored.status();
      }
    }
  }
  return results;
}

std::vector<absl::StatusOr<StudyReport>> ReportGenerator::generate_images(
    const std::vector<std::vector<preprocessing::FloatImage>>& studies, const GeneratorOptions& options) {
  const int64_t views = config().effective_views();
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
