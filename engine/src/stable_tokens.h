#pragma once
// Tokens that became certain while a study decodes: the common prefix of its live rows and of the rows that
// already ended (no end token), reported as it grows, for the studies that asked for progress.
//   StableTokens         one study, fed the tokens its rows read and the rows each step keeps (the in-flight
//                        loop, engine/src/flight.cc, drives one per study);
//   ObservedStepModel    a StepModel between a batch search and the network that (1) asks the StepObserver before
//                        every step whether the batch is still wanted and (2) drives a StableTokens per study.
#include <cstdint>
#include <optional>
#include <vector>

#include <torch/torch.h>

#include "cmn/engine/observer.h"
#include "cmn/model/decoding.h"

namespace cmn::engine {

// Thrown out of the search when the observer stops the batch; caught by Replica::run.
struct BatchStopped {};

class StableTokens {
 public:
  // Before a step: tokens[r] is what row r reads (bos = 0 at the study's first step).
  void follow(const int64_t* tokens, size_t rows, bool first_step);
  // After it: row r of the next step continues row parents[r] of this one.
  void select(const int64_t* parents, size_t rows);
  // The stable tokens when they grew since the last call that returned true; `new_from`: where the new ones start.
  bool grew(std::vector<int64_t>* stable, size_t* new_from);

 private:
  struct Row {
    std::vector<int64_t> ids;  // tokens after bos, up to (not including) the end token
    bool finished = false;     // fed the end token
  };
  std::vector<Row> rows_;
  std::optional<std::vector<int64_t>> finished_lcp_;
  size_t published_ = 0;
};

class ObservedStepModel : public model::StepModel {
 public:
  // progress[s]: study s wants StepObserver::on_stable_tokens. observer may be null (then this only counts).
  ObservedStepModel(model::StepModel& inner, StepObserver* observer, std::vector<bool> progress);

  int64_t studies() const override { return inner_.studies(); }
  torch::Tensor step(const torch::Tensor& tokens) override;               // tokens [rows] -> log-probs [rows,V]
  void select_rows(const torch::Tensor& rows, int64_t rows_per_study) override;

 private:
  model::StepModel& inner_;
  StepObserver* observer_;
  std::vector<bool> progress_;
  bool track_ = false;
  std::vector<StableTokens> studies_;
  int64_t rows_per_study_ = 1;
  int64_t steps_ = 0;
};

}  // namespace cmn::engine
