#pragma once
// Study (image files or a ready tensor) -> report text, for cmn-generate and cmn-pacs (in process): fills
// batches from files or decoded images and runs them through the engine's Replica (cmn/engine/replica.h), the
// one inference path every caller shares. Errors come back as absl::Status.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cmn/engine/model.h"
#include "cmn/engine/replica.h"
#include "cmn/model/decoding.h"
#include "cmn/model/r2gencmn.h"
#include "cmn/model/tokenizer.h"
#include "cmn/preprocessing/image_pipeline.h"

namespace cmn::pipeline {

using ModelIdentity = engine::ModelIdentity;
using model::split_sentences;

struct StageTimes {
  double preprocess_s = 0, visual_s = 0, encode_s = 0, decode_s = 0;
};

struct StudyReport {
  std::string report;                  // decoded text (the reference's tokenizer.decode)
  std::vector<int64_t> token_ids;      // generated ids without the final 0
  double log_prob = 0.0;               // summed log-prob of the generated ids and the final 0 (if reached)
  double score = 0.0;                  // beam score (penalised when a length penalty is set)
  std::optional<double> consistency;   // image-report consistency (ITM); absent without an alignment head
  struct Similar {
    std::string report;                // a training report from the bundle's retrieval index
    double similarity = 0.0;           // ITC cosine similarity to the study
  };
  std::vector<Similar> similar;        // only with GeneratorOptions::similar, best first
  StageTimes times;                    // for the batch this study was decoded in
  // Only with GeneratorOptions::attention: the decoder's cross-attention (src_attn) of the decoding pass for
  // the chosen hypothesis, heads averaged: [layers, T, V*49], row t = the step that produced token_ids[t] (the
  // final eos step is left out, as the reference's plot drops it). Empty otherwise.
  engine::TokenAttention token_attention;
};

struct GeneratorOptions {
  model::DecodingOptions decoding;             // beam size, max length, method, ...
  preprocessing::ImageOptions image;           // resize / normalisation (the reference test transform)
  int64_t batch_size = 8;                      // studies per visual-encoder batch and decode batch
  // Capture StudyReport::token_attention (attention maps). Off: decoding pays nothing for it. On: the
  // engine replays only the decoder over the chosen hypotheses (one row per study), over the batch's kept
  // encoder memory.
  bool attention = false;
  // The K most similar training reports of the bundle's retrieval index (StudyReport::similar); 0 = none.
  int64_t similar = 0;
};

class ReportGenerator {
 public:
  // A CPU replica of the network.
  ReportGenerator(model::R2GenCMN model, model::Tokenizer tokenizer, ModelIdentity identity);
  // Any replica (e.g. on a GPU: engine::Replica::create(model, "cuda")).
  explicit ReportGenerator(std::unique_ptr<engine::Replica> replica);

  // Each study is `views` image paths (the model's view count). A bad image fails only its study, with a
  // status naming the file. Results are in input order.
  std::vector<absl::StatusOr<StudyReport>> generate_files(const std::vector<std::vector<std::string>>& studies,
                                                          const GeneratorOptions& options);
  // Each study is `views` already-decoded model inputs in slot order (preprocessing::assemble_study's
  // `images`), each [3, options.image.size, options.image.size]. A study with the wrong count or shape fails
  // alone (InvalidArgument); studies are decoded `options.batch_size` at a time; results are in input order.
  // times.preprocess_s is the time spent packing the batch into a tensor (decoding happened before).
  std::vector<absl::StatusOr<StudyReport>> generate_images(
      const std::vector<std::vector<preprocessing::FloatImage>>& studies, const GeneratorOptions& options);
  // Scores given reports instead of writing them (cmn-generate --score-reports): studies as generate_images,
  // reports[s] = study s's report text (the tokenizer's cleaning applies; words outside the vocabulary are
  // <unk>). `options.batch_size` studies per pass; results in input order, a bad study fails alone.
  std::vector<absl::StatusOr<engine::ScoredReport>> score_images(
      const std::vector<std::vector<preprocessing::FloatImage>>& studies, const std::vector<std::string>& reports,
      const GeneratorOptions& options);
  // images [B,V,3,224,224] already transformed -> one report per study.
  // With `attention`, each report carries token_attention (see StudyReport).
  absl::StatusOr<std::vector<StudyReport>> generate_tensor(const torch::Tensor& images,
                                                           const model::DecodingOptions& decoding,
                                                           bool attention = false, int64_t similar = 0);

  const ModelIdentity& identity() const { return replica_->model().identity(); }
  const model::Tokenizer& tokenizer() const { return replica_->model().tokenizer(); }
  const model::ModelConfig& config() const { return replica_->model().config(); }
  engine::Replica& replica() { return *replica_; }

 private:
  // Fills study s's input [V,3,H,W]; a non-OK status fails that study only.
  using StudyFiller = std::function<absl::Status(size_t, torch::Tensor&)>;
  // Runs `count` studies through generate_tensor, options.batch_size at a time.
  std::vector<absl::StatusOr<StudyReport>> generate_batched(size_t count, const StudyFiller& fill,
                                                            const GeneratorOptions& options);

  std::unique_ptr<engine::Replica> replica_;
};

}  // namespace cmn::pipeline
