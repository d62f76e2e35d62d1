#pragma once
// Decoding strategies of R2GenCMN (CaptionModel.beam_search, AttModel._sample), written against a small
// step interface so they can be tested with scripted log-probabilities and reused by the server's batcher.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "cmn/model/decoding_options.h"

namespace cmn::model {

class BaseCMNImpl;
struct DecoderCache;

// Throws c10::Error naming the field when an option is out of range.
void validate_decoding_options(const DecodingOptions& options);

struct Hypothesis {
  std::vector<int64_t> ids;              // generated ids; ends with the 0 (eos) unless max_length was reached
  std::vector<float> token_log_probs;    // log-prob of each id in `ids` under the model
  double score = 0.0;                    // beam: the (penalised) summed log-prob; greedy/sample: sum of the above
};

struct DecodeResult {
  std::vector<Hypothesis> best;  // one per study
  int64_t steps = 0;             // decoder steps actually run
};

// What a search needs from a decoder: B studies, each with `rows_per_study` rows.
class StepModel {
 public:
  virtual ~StepModel() = default;
  virtual int64_t studies() const = 0;
  // tokens [B*rows] -> log-probs [B*rows, V]
  virtual torch::Tensor step(const torch::Tensor& tokens) = 0;
  // keep rows `rows` [B*rows_per_study] (indices into the current rows; grouped by study)
  virtual void select_rows(const torch::Tensor& rows, int64_t rows_per_study) = 0;
};

// One study's search, advanced one decoder step at a time: the unit of in-flight batching, where studies join a
// running decode loop between its steps and leave it as soon as they finish. Each study's state is its own (a
// sampled study draws from its own generator seeded with DecodingOptions::seed), so its tokens do not depend on
// which studies share its steps. beam_search() runs one BeamSearch per study of a batch.
class StudySearch {
 public:
  virtual ~StudySearch() = default;
  // The token each of the study's decoder rows reads at the next step (bos = 0 at the first; rows = size).
  virtual const std::vector<int64_t>& tokens() const = 0;
  // After advance(): the row (index into the previous step's rows) each of tokens()'s rows continues, i.e. the
  // select_rows argument for this study's decoder cache.
  virtual const std::vector<int64_t>& parents() const = 0;
  // step_output: what the decoder gave for tokens() [rows, V] (decode_step's log-probs, any device).
  virtual void advance(const torch::Tensor& step_output) = 0;
  // Nothing later can change best(): max_length steps ran, or every hypothesis ended (greedy / sample), or no
  // live beam can beat the best finished one (beam search with early_stop and no length penalty).
  virtual bool finished() const = 0;
  virtual int64_t steps() const = 0;  // advance() calls so far
  virtual Hypothesis best() const = 0;  // once finished()
};

// BeamSearch when beam_size > 1 and method is beam_search or greedy (as decode()), else greedy / sampling.
// Throws c10::Error naming the field when an option is out of range.
std::unique_ptr<StudySearch> start_search(const DecodingOptions& options);

// The reference's beam search (group size 1): candidates sorted by summed log-prob; a beam that emits eos is
// recorded and keeps its slot with -1000 added; at max_length every beam is recorded; the result is the
// best recorded beam (stable order on ties). With early_stop and no length penalty, decoding ends as soon as
// every beam's sum is <= the best recorded score: log-probs are <= 0, so nothing later can win.
DecodeResult beam_search(StepModel& model, const DecodingOptions& options);

// The reference's _sample for beam size 1: greedy argmax or sampling with temperature, optional trigram
// blocking, finished rows padded with 0.
DecodeResult sample(StepModel& model, const DecodingOptions& options);

// beam_search when beam_size > 1 and method is beam_search or greedy (as the reference), else sample.
DecodeResult decode(StepModel& model, const DecodingOptions& options);

// StepModel over BaseCMN's incremental decoder (KV caches), for studies whose encoder memory is given.
class CmnStepModel : public StepModel {
 public:
  CmnStepModel(BaseCMNImpl& model, const torch::Tensor& memory, bool keep_attention = false);
  ~CmnStepModel() override;
  int64_t studies() const override;
  torch::Tensor step(const torch::Tensor& tokens) override;
  void select_rows(const torch::Tensor& rows, int64_t rows_per_study) override;
  const DecoderCache& cache() const;

 private:
  BaseCMNImpl& model_;
  std::unique_ptr<DecoderCache> cache_;
};

}  // namespace cmn::model
