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

ObservedStepModel::ObservedStepModel(model::StepModel& inner, StepObserver* observer, std::vector<bool> progress)
    : inner_(inner), observer_(observer), progress_(std::move(progress)) {
  progress_.resize(static_cast<size_t>(inner_.studies()), false);
  track_ = observer_ != nullptr && std::any_of(progress_.begin(), progress_.end(), [](bool p) { return p; });
  finished_lcp_.resize(progress_.size());
  published_.assign(progress_.size(), 0);
}

torch::Tensor ObservedStepModel::step(const torch::Tensor& tokens) {
  if (observer_ != nullptr && !observer_->keep_going(steps_)) throw BatchStopped{};
  if (track_) {
    follow(tokens);
    publish();
  }
  ++steps_;
  return inner_.step(tokens);
}

void ObservedStepModel::select_rows(const torch::Tensor& rows, int64_t rows_per_study) {
  if (track_) {
    const auto idx = rows.to(torch::kCPU).contiguous();                      // [rows]
    const auto* p = idx.data_ptr<int64_t>();
    std::vector<Row> next(static_cast<size_t>(idx.numel()));
    for (size_t i = 0; i < next.size(); ++i) next[i] = rows_[static_cast<size_t>(p[i])];
    rows_ = std::move(next);
    rows_per_study_ = rows_per_study;
  }
  inner_.select_rows(rows, rows_per_study);
}

// tokens [rows]: the token each row consumes now (bos = 0 at the first step).
void ObservedStepModel::follow(const torch::Tensor& tokens) {
  const auto t = tokens.to(torch::kCPU).contiguous();
  const auto* p = t.data_ptr<int64_t>();
  if (steps_ == 0) {
    rows_.assign(static_cast<size_t>(t.numel()), Row{});
    rows_per_study_ = 1;
    return;
  }
  for (size_t i = 0; i < rows_.size(); ++i) {
    Row& row = rows_[i];
    if (row.finished) continue;
    if (p[i] != 0) {
      row.ids.push_back(p[i]);
      continue;
    }
    row.finished = true;
    auto& lcp = finished_lcp_[i / static_cast<size_t>(rows_per_study_)];
    if (lcp) {
      shrink_to_common(&*lcp, row.ids);
    } else {
      lcp = row.ids;
    }
  }
}

void ObservedStepModel::publish() {
  const auto per = static_cast<size_t>(rows_per_study_);
  for (size_t s = 0; s < progress_.size(); ++s) {
    if (!progress_[s]) continue;
    std::vector<int64_t> stable = rows_[s * per].ids;
    for (size_t r = s * per + 1; r < (s + 1) * per; ++r) shrink_to_common(&stable, rows_[r].ids);
    if (finished_lcp_[s]) shrink_to_common(&stable, *finished_lcp_[s]);
    if (stable.size() <= published_[s]) continue;
    const size_t new_from = published_[s];
    published_[s] = stable.size();
    observer_->on_stable_tokens(s, stable, new_from, steps_);
  }
}

}  // namespace cmn::engine
