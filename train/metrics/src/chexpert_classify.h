#pragma once
// Mention classification of the CheXpert-style labeler (internal to cmn_metrics): the surface stand-in for
// the labeler's dependency patterns (see cmn/metrics/chexpert.h, step 2).
#include <cstddef>
#include <string>
#include <vector>

#include "cmn/metrics/chexpert.h"

namespace cmn::metrics::chexpert_detail {

struct Token {
  std::string word;        // a word ([a-z0-9] with inner '-' or '\'') or one punctuation character
  std::size_t begin = 0;   // byte offsets in the sentence
  std::size_t end = 0;
};
std::vector<Token> tokenize(const std::string& sentence);

struct Verdict {
  Mention label = Mention::kPositive;
  std::string cue;  // what decided it; "" for positive
};

// Classifies the mention covering tokens [first, last) of `tokens`; `text` is the matched phrase.
Verdict classify_mention(const std::vector<Token>& tokens, std::size_t first, std::size_t last,
                         const std::string& text);

}  // namespace cmn::metrics::chexpert_detail
