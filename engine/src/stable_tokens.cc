#include "stable_tokens.h"

#include <algorithm>
#include <utility>

namespace cmn::engine {
namespace {

void shrink_to_common(std::vector<int64_t>* prefix, const std::vector<int64_t>& other) {
  size_t n = 0;
  while (n < prefix->size() && n < other.size() && (*prefix)[n] == other[n]) ++n;
  prefix->resize(n);
}

}  // namespace

void StableTokens::follow(const int64_t* tokens, size_t rows, bool first_step) {
  if (first_step) {
    rows_.assign(rows, Row{});
    return;
  }
  for (size_t i = 0; i < rows_.size() && i < rows; ++i) {
    Row& row = rows_[i];
    if (row.finished) continue;
    if (tokens[i] != 0) {
      row.ids.push_back(tokens[i]);
      continue;
    }
    row.finished = true;
    if (finished_lcp_) {
      shrink_to_common(&*finished_lcp_, row.ids);
    } else {
      finished_lcp_ = row.ids;
    }
  }
}

void StableTokens::select(const int64_t* parents, size_t rows) {
  std::vector<Row> next(rows);
  for (size_t i = 0; i < rows; ++i) next[i] = rows_[static_cast<size_t>(parents[i])];
  rows_ = std::move(next);
}

bool StableTokens::grew(std::vector<int64_t>* stable, size_t* new_from) {
  if (rows_.empty()) return false;
  *stable = rows_.front().ids;
  for (size_t r = 1; r < rows_.size(); ++r) shrink_to_common(stable, rows_[r].ids);
  if (finished_lcp_) shrink_to_common(stable, *finished_lcp_);
  if (stable->size() <= published_) return false;
  *new_from = published_;
  published_ = stable->size();
  return true;
}

ObservedStepModel::ObservedStepModel(model::StepModel& inner, StepObserver* observer, std::vector<bool> progress)
    : inner_(inner), observer_(observer), progress_(std::move(progress)) {
  progress_.resize(static_cast<size_t>(inner_.studies()), false);
  track_ = observer_ != nullptr && std::any_of(progress_.begin(), progress_.end(), [](bool p) { return p; });
  studies_.resize(progress_.size());
}

torch::Tensor ObservedStepModel::step(const torch::Tensor& tokens) {
  if (observer_ != nullptr && !observer_->keep_going(steps_)) throw BatchStopped{};
  if (track_) {
    const auto t = tokens.to(torch::kCPU).contiguous();                      // [B*rows]
    const auto* p = t.data_ptr<int64_t>();
    const auto per = static_cast<size_t>(rows_per_study_);
    std::vector<int64_t> stable;
    size_t new_from = 0;
    for (size_t s = 0; s < studies_.size(); ++s) {
      studies_[s].follow(p + s * per, per, steps_ == 0);
      if (progress_[s] && studies_[s].grew(&stable, &new_from)) {
        observer_->on_stable_tokens(s, stable, new_from, steps_);
      }
    }
  }
  ++steps_;
  return inner_.step(tokens);
}

void ObservedStepModel::select_rows(const torch::Tensor& rows, int64_t rows_per_study) {
  if (track_) {
    const auto idx = rows.to(torch::kCPU).contiguous();                      // [B*rows_per_study]
    const auto* p = idx.data_ptr<int64_t>();
    const auto before = static_cast<size_t>(rows_per_study_);
    const auto per = static_cast<size_t>(rows_per_study);
    std::vector<int64_t> local(per);
    for (size_t s = 0; s < studies_.size(); ++s) {
      // Beam search keeps each study's rows inside its own block: the global row s * before + k is row k.
      for (size_t k = 0; k < per; ++k) local[k] = p[s * per + k] - static_cast<int64_t>(s * before);
      studies_[s].select(local.data(), per);
    }
  }
  rows_per_study_ = rows_per_study;
  inner_.select_rows(rows, rows_per_study);
}

}  // namespace cmn::engine
