#pragma once
// Replica: a Model on one torch device, and the ONE place a batch of studies runs
//   images -> visual extractor -> encoder -> decode loop (beam / greedy / sample)
// for every caller: the server's scheduler, cmn-generate / cmn-pacs (pipeline::ReportGenerator), cmn-bench.
// Attention maps are taken in the same pass: the encoder memory of the batch is kept, and only the decoder is
// replayed once (one row per study) over the chosen hypothesis with its cross-attention recorded.
// Model errors (c10::Error) end here and become absl::Status.
//
// One thread at a time per replica: the network keeps weight-derived caches (folded batch norm, memory
// key/value projections) that it fills on first use. On the CPU a replica shares the Model's weights.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cmn/engine/model.h"
#include "cmn/engine/observer.h"
#include "cmn/model/decoding_options.h"
#include "cmn/model/precision.h"
#include "cmn/preprocessing/image_pipeline.h"

namespace at {
class Tensor;  // the replica's tensor entry takes LibTorch tensors; its other callers need no torch header
}

namespace cmn::engine {

struct ReplicaImpl;  // engine/src/replica_impl.h

// The decoder's cross-attention (src_attn) for the chosen hypothesis, heads averaged, in the decoding pass's own
// numbers: values[l][t][s] (row-major [layers, tokens, patches]), row t = the step that produced token t (the
// final end token's step left out). Patch s = view * 49 + y * 7 + x.
struct TokenAttention {
  int64_t layers = 0, tokens = 0, patches = 0;
  std::vector<float> values;
  bool empty() const { return values.empty(); }
  float at(int64_t layer, int64_t token, int64_t patch) const {
    return values[static_cast<size_t>((layer * tokens + token) * patches + patch)];
  }
};

// What a study of a batch asks for beyond its report.
struct StudyOptions {
  bool attention = false;  // fill StudyResult::attention
  bool progress = false;   // StepObserver::on_stable_tokens for this study
  int64_t similar = 0;     // fill StudyResult::similar with this many stored reports (needs a retrieval index)
};

// A training report from the model's retrieval index (model/alignment.h), for "similar prior cases".
struct SimilarReport {
  std::vector<int64_t> ids;    // its token ids
  double similarity = 0.0;     // ITC cosine similarity to the study (best query)
};

struct StudyResult {
  std::vector<int64_t> ids;              // generated ids; ends with 0 (eos) unless max_length was reached
  std::vector<float> token_log_probs;    // log-prob of each id in `ids`
  double score = 0.0;                    // beam: the (penalised) summed log-prob; else the sum of the above
  TokenAttention attention;              // only with StudyOptions::attention
  // ITM probability that the report matches the study's images (model/alignment.h); absent when the model has
  // no alignment head: never a made-up value.
  std::optional<double> consistency;
  std::vector<SimilarReport> similar;    // only with StudyOptions::similar, best first
};

// A given report scored against a study (Replica::score): what the model thinks of a text it did not write.
struct ScoredReport {
  std::vector<float> token_log_probs;    // teacher-forced log-prob of each given id, then of the end token
  double log_prob = 0.0;                 // their sum
  std::optional<double> consistency;     // as StudyResult::consistency
};

struct BatchResult {
  std::vector<StudyResult> studies;      // in input order
  double visual_s = 0, encode_s = 0, decode_s = 0, attention_s = 0;  // wall time of each stage of the batch
  int64_t steps = 0;                     // decoder steps run
};

// InvalidArgument naming the field when a decoding option is out of range (model::validate_decoding_options).
absl::Status validate_decoding(const model::DecodingOptions& decoding);

class Replica {
 public:
  // device: "cpu", "cuda" or "cuda:N". On a LibTorch without CUDA, or with no GPU visible, a CUDA device is
  // FailedPrecondition naming CUDA. precision (model/precision.h): a precision this host cannot run (bf16 without
  // AVX512_BF16 / AMX, int8 on CUDA) is FailedPrecondition naming what is missing. An fp32 replica on the CPU
  // shares the Model's weights; any other replica copies them (and adds its bf16 / int8 derived weights).
  static absl::StatusOr<std::unique_ptr<Replica>> create(std::shared_ptr<const Model> model,
                                                         const std::string& device = "cpu",
                                                         model::Precision precision = model::Precision::kFp32);
  ~Replica();
  Replica(const Replica&) = delete;
  Replica& operator=(const Replica&) = delete;

  const Model& model() const { return *model_; }
  const std::shared_ptr<const Model>& shared_model() const { return model_; }
  std::string device() const;
  model::Precision precision() const;
  // Intra-op threads of the decode loop (0, the default: as the rest of the batch). 1 keeps decoding fast on a
  // CPU shared with other work (model::PassHooks::decode_threads). Set before the replica is used.
  void set_decode_threads(int n) { decode_threads_ = n; }
  int decode_threads() const { return decode_threads_; }

  // studies[b] = the model's V views in slot order, each [3, H, W] as preprocessing gives them. `options` is
  // empty (nothing extra) or one entry per study. Errors: InvalidArgument (wrong view count or image shape,
  // decoding options out of range), Cancelled (the observer stopped the batch), Internal (the model failed).
  absl::StatusOr<BatchResult> run(const std::vector<std::vector<preprocessing::FloatImage>>& studies,
                                  const model::DecodingOptions& decoding, const std::vector<StudyOptions>& options = {},
                                  StepObserver* observer = nullptr);
  // The same from a ready batch: images [B, V, 3, H, W] on any device.
  absl::StatusOr<BatchResult> run(const at::Tensor& images, const model::DecodingOptions& decoding,
                                  const std::vector<StudyOptions>& options = {}, StepObserver* observer = nullptr);
  // Scores given reports instead of writing them (CTranslate2's "score"): reports[b] = token ids of study b's
  // report (the tokenizer's encode; no bos, no end token). One visual + encoder pass and one teacher-forced
  // decoder pass. Errors as run(); a report longer than the model's positions is InvalidArgument.
  absl::StatusOr<std::vector<ScoredReport>> score(const std::vector<std::vector<preprocessing::FloatImage>>& studies,
                                                  const std::vector<std::vector<int64_t>>& reports);

 private:
  friend class Flight;  // the in-flight decode loop (flight.h) runs on the replica's network
  struct Impl;
  Replica(std::shared_ptr<const Model> model, std::unique_ptr<Impl> impl);
  ReplicaImpl& internals();
  std::shared_ptr<const Model> model_;
  std::unique_ptr<Impl> impl_;
  int decode_threads_ = 0;
};

}  // namespace cmn::engine
