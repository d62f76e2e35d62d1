#pragma once
// A StepModel between the search and the network that (1) asks the StepObserver before every step whether the
// batch is still wanted, and (2) follows every row through select_rows so that the tokens all hypotheses that
// can still win agree on (the common prefix of the live rows and of the finished ones) are reported as they
// settle, for the studies that asked for progress.
#include <cstdint>
#include <optional>
#include <vector>

#include <torch/torch.h>

#include "cmn/engine/observer.h"
#include "cmn/model/decoding.h"

namespace cmn::engine {

// Thrown out of the search when the observer stops the batch; caught by Replica::run.
struct BatchStopped {};

class ObservedStepModel : public model::StepModel {
 public:
  // progress[s]: study s wants StepObserver::on_stable_tokens. observer may be null (then this only counts).
  ObservedStepModel(model::StepModel& inner, StepObserver* observer, std::vector<bool> progress);

  int64_t studies() const override { return inner_.studies(); }
  torch::Tensor step(const torch::Tensor& tokens) override;               // tokens [rows] -> log-probs [rows,V]
  void select_rows(const torch::Tensor& rows, int64_t rows_per_study) override;

 private:
  struct Row {
    std::vector<int64_t> ids;  // tokens after bos, up to (not including) the end token
    bool finished = false;     // fed the end token
  };
  void follow(const torch::Tensor& tokens);
  void publish();

  model::StepModel& inner_;
  StepObserver* observer_;
  std::vector<bool> progress_;
  bool track_ = false;
  std::vector<Row> rows_;
  int64_t rows_per_study_ = 1;
  std::vector<std::optional<std::vector<int64_t>>> finished_lcp_;  // per study
  std::vector<size_t> published_;                                  // per study: stable tokens reported
  int64_t steps_ = 0;
};

}  // namespace cmn::engine
