#pragma once
// The R2GenCMN tokenizer: report cleaning (iu_xray and mimic_cxr rules), a vocabulary rebuilt from the train
// split's reports with a count threshold, and encode/decode. Id 0 is bos = eos = pad; token ids start at 1;
// `<unk>` is part of the sorted vocabulary.
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace cmn::model {

enum class CleaningRule { kIuXray, kMimicCxr };

// "iu_xray" -> kIuXray; anything else -> kMimicCxr (as R2GenCMN's Tokenizer does).
CleaningRule cleaning_rule_for_dataset(const std::string& dataset_name);

// The reference's clean_report_iu_xray / clean_report_mimic_cxr, byte for byte on ASCII text.
std::string clean_report(const std::string& report, CleaningRule rule);

class Tokenizer {
 public:
  // Builds the vocabulary as the reference does: clean each report, split on whitespace, keep tokens seen at
  // least `threshold` times, add "<unk>", sort (code-point order); id = index + 1.
  static Tokenizer build(const std::vector<std::string>& train_reports, CleaningRule rule, int threshold);
  // A vocabulary file: one token per line, line i (from 0) is id i+1. The cleaning rule is given separately.
  static Tokenizer from_vocab_file(const std::string& path, CleaningRule rule);
  void save_vocab_file(const std::string& path) const;

  // clean -> split -> ids (unknown tokens -> id of "<unk>"), with 0 at both ends, as Tokenizer.__call__.
  std::vector<int64_t> encode(const std::string& report) const;
  // ids -> words joined by ' ', stopping at the first 0, as Tokenizer.decode.
  std::string decode(const std::vector<int64_t>& ids) const;
  // The words of generated ids, stopping at the first 0; an id outside the vocabulary is "<unk>" (never throws:
  // for responses and SRs). decode() joins the same words.
  std::vector<std::string> words(const std::vector<int64_t>& ids) const;

  int64_t vocab_size() const { return static_cast<int64_t>(idx2token_.size()); }  // without id 0
  const std::vector<std::string>& tokens() const { return idx2token_; }            // tokens()[id - 1]
  CleaningRule rule() const { return rule_; }
  int64_t id_of(const std::string& token) const;  // unknown -> id of "<unk>"

 private:
  CleaningRule rule_ = CleaningRule::kIuXray;
  std::vector<std::string> idx2token_;
  std::unordered_map<std::string, int64_t> token2idx_;
};

// A report's sentences: words up to and including each "." word, joined by ' ' (a tail without "." is a sentence
// too). The one splitter for the server's response.sentences, the SR's TEXT items, cmn-pacs and the CLIs.
std::vector<std::string> split_sentences(const std::vector<std::string>& words);

}  // namespace cmn::model
