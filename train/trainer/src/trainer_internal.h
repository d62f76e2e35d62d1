#pragma once
// What the parts of the Trainer share (trainer.cc: construction, the epoch loop and run(); trainer_eval.cc:
// evaluation; trainer_checkpoint.cc: save and resume; trainer_logs.cc: metrics logs, plot, best.json, bundle).
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cmn/model/tokenizer.h"
#include "cmn/train/trainer.h"

namespace cmn::train::trainer_detail {

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// A reference report as R2GenCMN scores it: decode(reports_ids[:, 1:]) (trainer_eval.cc).
std::string reference_text(const model::Tokenizer& tokenizer, const std::vector<int64_t>& ids);

// An epoch's log line as metrics.jsonl and the resume state hold it; non-finite values are null (trainer_logs.cc).
nlohmann::json log_to_json(const EpochLog& log);
EpochLog log_from_json(const nlohmann::json& j);

}  // namespace cmn::train::trainer_detail
