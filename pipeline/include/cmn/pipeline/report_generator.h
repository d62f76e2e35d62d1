#pragma once
// Study (image files or a ready tensor) -> report text, shared by cmn-generate and, later, the server.
// Catches model errors at this seam and returns absl::Status (STYLE.md: catch once, at the seam).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cmn/model/decoding.h"
#include "cmn/model/r2gencmn.h"
#include "cmn/model/tokenizer.h"
#include "cmn/preprocessing/image_pipeline.h"

namespace cmn::pipeline {

// What every output says about the model that wrote it.
struct ModelIdentity {
  std::string name = "r2gencmn";
  std::string version;
  std::string digest;       // "sha256:..." of a bundle, or of the checkpoint file
  bool untrained = false;   // a randomly initialised model: its text is not a report
};

struct StageTimes {
  double preprocess_s = 0, visual_s = 0, encode_s = 0, decode_s = 0;
};

struct StudyReport {
  std::string report;                  // decoded text (the reference's tokenizer.decode)
  std::vector<int64_t> token_ids;      // generated ids without the final 0
  double log_prob = 0.0;               // summed log-prob of the generated ids and the final 0 (if reached)
  double score = 0.0;                  // beam score (penalised when a length penalty is set)
  StageTimes times;                    // for the batch this study was decoded in
  // Only with GeneratorOptions::attention: the decoder's cross-attention (src_attn) probabilities of the
  // decoding pass for the chosen hypothesis, heads averaged: [layers, T, V*49], row t = the step that
  // produced token_ids[t] (the final eos step is left out, as the reference's plot drops it). Undefined
  // otherwise. Patch index s = view * 49 + y * 7 + x (att_feats order).
  torch::Tensor token_attention;
};

struct GeneratorOptions {
  model::DecodingOptions decoding;             // beam size, max length, method, ...
  preprocessing::ImageOptions image;           // resize / normalisation (the reference test transform)
  int64_t batch_size = 8;                      // studies per visual-encoder batch and decode batch
  // Capture StudyReport::token_attention (attention maps). Off: decoding pays nothing for it. On: the
  // chosen hypotheses are replayed once through the incremental decoder with attention kept (one row
  // per study instead of beam_size), over the same encoder memory.
  bool attention = false;
};

class ReportGenerator {
 public:
  ReportGenerator(model::R2GenCMN model, model::Tokenizer tokenizer, ModelIdentity identity);

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
  // images [B,V,3,224,224] already transformed -> one report per study.
  // With `attention`, each report carries token_attention (see StudyReport).
  absl::StatusOr<std::vector<StudyReport>> generate_tensor(const torch::Tensor& images,
                                                           const model::DecodingOptions& decoding,
                                                           bool attention = false);

  const ModelIdentity& identity() const { return identity_; }
  const model::R2GenCMN& model() const { return model_; }
  const model::Tokenizer& tokenizer() const { return tokenizer_; }

 private:
  // Fills study s's input [V,3,H,W]; a non-OK status fails that study only.
  using StudyFiller = std::function<absl::Status(size_t, torch::Tensor&)>;
  // Runs `count` studies through generate_tensor, options.batch_size at a time.
  std::vector<absl::StatusOr<StudyReport>> generate_batched(size_t count, const StudyFiller& fill,
                                                            const GeneratorOptions& options);

  model::R2GenCMN model_;
  model::Tokenizer tokenizer_;
  ModelIdentity identity_;
};

// The decoder's cross-attention for given token sequences, as StudyReport::token_attention: runs the
// incremental decoder once over each study's ids (one row per study, without the final eos) with the
// cross-attention kept, over `memory` [B,S,d] -> per study [layers, T_s, S] (heads averaged; undefined when
// T_s = 0). These are the decoding pass's own numbers for that hypothesis (same memory, same prefixes).
// Throws c10::Error on shape errors (a seam function below catches them).
std::vector<torch::Tensor> replay_token_attention(model::BaseCMNImpl& model, const torch::Tensor& memory,
                                                  const std::vector<std::vector<int64_t>>& token_ids);

// For a server whose own engine decoded the study: images [B,V,3,H,W] (model inputs) and each study's
// generated ids -> per study [layers, T, V*49]. Recomputes the visual features and encoder memory (the
// engine does not keep them), so it costs about one more encode plus a one-row decode; call it where the
// model's other calls are serialised (the encoder records last_attention in eval mode).
// Words of a decoded report split after each "." token, as the report text writes them: the server's
// response.sentences, the SR's one TEXT item per sentence. A tail without "." is a sentence too.
std::vector<std::string> split_sentences(const std::vector<std::string>& words);

absl::StatusOr<std::vector<torch::Tensor>> capture_token_attention(model::R2GenCMN& model, const torch::Tensor& images,
                                                                   const std::vector<std::vector<int64_t>>& token_ids);

}  // namespace cmn::pipeline
