// roc_auc (cmn/metrics/ranking.h): sklearn's roc_auc_score for a binary target, values worked out by hand.
#include "cmn/metrics/ranking.h"

#include <stdexcept>

#include <gtest/gtest.h>

namespace cmn::metrics {
namespace {

TEST(RocAuc, CountsOrderedPairsAndHalfTies) {
  // roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) = 0.75: of the 4 (positive, negative) pairs, 0.35 < 0.4.
  EXPECT_DOUBLE_EQ(*roc_auc({0.1, 0.4, 0.35, 0.8}, {false, false, true, true}), 0.75);
  // Ties count one half: positives 0.5 and 0.9, negatives 0.5 and 0.5 -> (0.5 + 0.5 + 1 + 1) / 4.
  EXPECT_DOUBLE_EQ(*roc_auc({0.5, 0.5, 0.5, 0.9}, {false, true, false, true}), 0.75);
  EXPECT_DOUBLE_EQ(*roc_auc({0.2, 0.9}, {false, true}), 1.0);
  EXPECT_DOUBLE_EQ(*roc_auc({0.2, 0.9}, {true, false}), 0.0);
  EXPECT_DOUBLE_EQ(*roc_auc({0.3, 0.3, 0.3}, {true, false, true}), 0.5);
  // One class only: undefined (sklearn raises).
  EXPECT_FALSE(roc_auc({0.1, 0.2}, {true, true}).has_value());
  EXPECT_FALSE(roc_auc({}, {}).has_value());
  EXPECT_THROW(roc_auc({0.1}, {true, false}), std::invalid_argument);
}

}  // namespace
}  // namespace cmn::metrics
