#include <string>
#include <utility>
#include <vector>

#include "cmn/metrics/metrics.h"

namespace cmn::metrics {

std::vector<std::pair<std::string, double>> Scores::named() const {
  return {{"BLEU_1", bleu1},  {"BLEU_2", bleu2},    {"BLEU_3", bleu3}, {"BLEU_4", bleu4},
          {"METEOR", meteor}, {"ROUGE_L", rouge_l}, {"CIDEr", cider}};
}

Scores evaluate(const std::vector<Example>& examples, const MeteorOptions& meteor_options) {
  Scores s;
  const BleuResult b = bleu(examples, 4);
  s.bleu1 = b.scores[0];
  s.bleu2 = b.scores[1];
  s.bleu3 = b.scores[2];
  s.bleu4 = b.scores[3];
  s.meteor = meteor(examples, meteor_options).score;
  s.rouge_l = rouge_l(examples).score;
  s.cider = cider_d(examples).score;
  return s;
}

}  // namespace cmn::metrics
