#pragma once
// The trainer's loss is the model's (cmn/model/loss.h); these names keep cmn::train code and tests unchanged.
#include "cmn/model/loss.h"

namespace cmn::train {

using model::language_model_loss;
using model::LossOptions;

}  // namespace cmn::train
