// cmn-eval: scores generated reports against an annotation split, as R2GenCMN's trainer scores them.
//   cmn-eval --annotation annotation.json --split test --predictions preds.jsonl
//            [--dataset iu_xray|mimic_cxr] [--threshold 3] [--max-seq-length 60] [--vocab FILE]
//            [--meteor-function-words FILE] [--clinical [--uncertain zeros|ones]]
//   cmn-eval --res-labels R.csv --gts-labels G.csv [--uncertain zeros|ones]
// preds.jsonl: one {"id": "...", "report": "..."} per line, every id of the split exactly once; the reports
// are used as given (already decoded text). References: tokenizer(report)[:max_seq_length], decoded — so
// cleaned, <unk>-mapped and truncated — with the tokenizer rebuilt from the train split (or --vocab).
// Prints one JSON line: {"BLEU_1".."BLEU_4", "METEOR", "ROUGE_L", "CIDEr", "METEOR_method"}; METEOR is the
// exact+stem approximation named in "METEOR_method", not METEOR 1.5. --clinical adds clinical efficacy on
// CheXpert's 14 observations (cmn/metrics/chexpert_ce.h; both sides labelled by cmn-label's labeler) as
// CE_F1_MACRO, CE_F1_MICRO, CE_PRECISION_*, CE_RECALL_*, CE_AVG_AUCROC, CE_AUCROC_<observation> and
// "CE_uncertain" naming the uncertainty policy. --res-labels/--gts-labels score two CheXpert-format label files
// (e.g. from the original labeler) as R2GenCMN's compute_ce.py: F1_MACRO, ..., AUCROC_<observation>, with
// "uncertain" naming the policy; an AUROC undefined (one class in the references) is null. --phantom-findings
// (with --clinical) adds the phantom benchmark's six findings as CE_phantom_*. --consistency [--worst K] adds
// "consistency" (eval_consistency.h): the predictions' image-report consistency summarised, its worst drafts, and
// with --clinical how well it ranks drafts with right labels above wrong ones.
// Exit codes: 0 ok, 1 bad input (one line on stderr naming it), 2 bad command line.
#include <CLI/CLI.hpp>

#include "cmn/common/cli.h"
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "cmn/metrics/chexpert_ce.h"
#include "cmn/metrics/chexpert_csv.h"
#include "cmn/metrics/labels.h"
#include "cmn/metrics/metrics.h"
#include "cmn/metrics/references.h"
#include "cmn/model/tokenizer.h"
#include "cmn/pipeline/annotation.h"
#include "eval_consistency.h"

namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

using cmn::one_line;

int fail(const std::string& message) {
  std::cerr << "cmn-eval: " << one_line(message) << "\n";
  return kExitFailure;
}

bool blank(const std::string& line) {
  for (char c : line) {
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n') return false;
  }
  return true;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw std::runtime_error("cannot read " + path);
  return ss.str();
}

// compute_ce.py on two label files.
int score_label_files(const std::string& res_path, const std::string& gts_path, cmn::metrics::UncertainPolicy policy) {
  std::vector<cmn::metrics::ChexpertLabels> res, gts;
  for (auto [path, into] : {std::pair{&res_path, &res}, std::pair{&gts_path, &gts}}) {
    try {
      *into = cmn::metrics::read_labeled_csv(read_all(*path));
    } catch (const std::exception& e) {
      return fail(*path + ": " + e.what());
    }
  }
  if (res.size() != gts.size()) {
    return fail(res_path + " has " + std::to_string(res.size()) + " rows but " + gts_path + " has " +
                std::to_string(gts.size()));
  }
  if (res.empty()) return fail(res_path + ": no label rows");
  const auto ce = cmn::metrics::chexpert_ce(gts, res, policy);
  nlohmann::ordered_json out;
  for (const auto& [name, value] : ce.named()) out[name] = value;
  out["examples"] = ce.examples;
  out["uncertain"] = cmn::metrics::uncertain_policy_description(policy);
  std::cout << out.dump() << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cmn-eval: BLEU-1..4, METEOR (exact+stem approximation), ROUGE-L and CIDEr-D of predicted reports",
               "cmn-eval"};
  std::string annotation_path, split = "test", predictions_path, dataset = "iu_xray", vocab_path, function_words_path;
  int threshold = 3;
  int max_seq_length = 60;
  std::string res_labels_path, gts_labels_path, uncertain = "zeros";
  auto* annotation_opt = app.add_option("--annotation", annotation_path, "annotation.json (R2Gen format)");
  app.add_option("--split", split, "split to score")
      ->check(CLI::IsMember({"train", "val", "test"}))
      ->capture_default_str();
  auto* predictions_opt = app.add_option("--predictions", predictions_path, "JSONL of {\"id\", \"report\"}");
  auto* res_opt = app.add_option("--res-labels", res_labels_path,
                                 "CheXpert-format labels of the predictions (Reports + 14 columns), with --gts-labels");
  auto* gts_opt = app.add_option("--gts-labels", gts_labels_path, "CheXpert-format labels of the references");
  app.add_option("--dataset", dataset, "report cleaning rule and vocabulary dataset")
      ->check(CLI::IsMember({"iu_xray", "mimic_cxr"}))
      ->capture_default_str();
  app.add_option("--threshold", threshold, "vocabulary count threshold (R2GenCMN: 3 IU X-Ray, 10 MIMIC-CXR)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max-seq-length", max_seq_length, "reference truncation, as the dataset's max_seq_length")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--vocab", vocab_path, "vocabulary file (one token per line) instead of rebuilding it");
  app.add_option("--meteor-function-words", function_words_path,
                 "METEOR's English function-word list (function/english.words); default: none");
  bool clinical = false, uncertain_positive = false;
  app.add_flag("--clinical", clinical,
               "also print clinical efficacy (CE_*) on CheXpert's 14 observations, as R2GenCMN's compute_ce.py, with "
               "predictions and references labelled by cmn-label's labeler");
  app.add_option("--uncertain", uncertain, "uncertain (-1) labels count as zeros (R2GenCMN) or ones")
      ->check(CLI::IsMember({"zeros", "ones"}))
      ->capture_default_str();
  app.add_flag("--uncertain-positive", uncertain_positive, "the same as --uncertain ones");
  bool consistency = false;
  size_t worst = 10;
  app.add_flag("--consistency", consistency,
               "also summarise the predictions' image-report consistency (issue 14): mean, the --worst lowest drafts, "
               "and with --clinical the ROC AUC with which it ranks drafts whose labels match the reference above "
               "those whose labels do not");
  app.add_option("--worst", worst, "with --consistency: how many of the lowest drafts to list")->capture_default_str();
  bool phantom_findings = false;
  app.add_flag("--phantom-findings", phantom_findings,
               "with --clinical: also CE on the phantom benchmark's six findings (cmn/metrics/labels.h) as "
               "CE_phantom_macro_F1, CE_phantom_micro_F1, ..., CE_phantom_<finding>_F1");
  try {
    app.parse(argc, argv);
    const bool label_mode = res_opt->count() > 0 || gts_opt->count() > 0;
    if (label_mode && (res_opt->count() == 0 || gts_opt->count() == 0)) {
      throw CLI::ValidationError("--res-labels and --gts-labels go together");
    }
    if (label_mode && (annotation_opt->count() > 0 || predictions_opt->count() > 0)) {
      throw CLI::ValidationError("--res-labels/--gts-labels do not take --annotation/--predictions");
    }
    if (!label_mode && (annotation_opt->count() == 0 || predictions_opt->count() == 0)) {
      throw CLI::ValidationError("--annotation and --predictions are required (or --res-labels and --gts-labels)");
    }
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    std::cerr << "cmn-eval: " << one_line(e.what()) << " (run with --help for usage)\n";
    return kExitUsage;
  }
  const cmn::metrics::UncertainPolicy policy = uncertain_positive ? cmn::metrics::UncertainPolicy::kOnes
                                                                  : cmn::metrics::parse_uncertain_policy(uncertain);
  if (res_opt->count() > 0) return score_label_files(res_labels_path, gts_labels_path, policy);

  const auto annotation = cmn::pipeline::read_annotation(annotation_path);
  if (!annotation.ok()) return fail(std::string(annotation.status().message()));
  const cmn::model::CleaningRule rule = cmn::model::cleaning_rule_for_dataset(dataset);

  cmn::metrics::MeteorOptions meteor_options;
  cmn::model::Tokenizer tokenizer;
  try {
    if (vocab_path.empty()) {
      std::vector<std::string> train_reports;
      train_reports.reserve(annotation->train.size());
      for (const auto& ex : annotation->train) train_reports.push_back(ex.report);
      tokenizer = cmn::model::Tokenizer::build(train_reports, rule, threshold);
    } else {
      tokenizer = cmn::model::Tokenizer::from_vocab_file(vocab_path, rule);
    }
    if (!function_words_path.empty()) meteor_options.function_words = cmn::metrics::read_word_list(function_words_path);
  } catch (const std::exception& e) {
    return fail(e.what());
  }

  const auto& studies = split == "train" ? annotation->train : split == "val" ? annotation->val : annotation->test;
  std::unordered_map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < studies.size(); ++i) {
    if (!index.emplace(studies[i].id, i).second) {
      return fail(annotation_path + ": duplicate id '" + studies[i].id + "' in the " + split + " split");
    }
  }

  // Predictions.
  std::ifstream in(predictions_path, std::ios::binary);
  if (!in) return fail("cannot open predictions file " + predictions_path);
  std::vector<std::string> hypothesis(studies.size());
  std::vector<double> consistency_of(studies.size(), 0.0);
  std::vector<bool> seen(studies.size(), false);
  std::string line;
  for (std::size_t line_no = 1; std::getline(in, line); ++line_no) {
    if (blank(line)) continue;
    const std::string where = predictions_path + ":" + std::to_string(line_no);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      return fail(where + ": malformed line (not JSON)");
    }
    // Numeric ids are accepted as the annotation reader accepts them (their JSON text).
    if (!j.is_object() || !j.contains("id") || !j.contains("report") || !(j["id"].is_string() || j["id"].is_number()) ||
        !j["report"].is_string()) {
      return fail(where + ": malformed line (want {\"id\": string, \"report\": string})");
    }
    const std::string id = j["id"].is_string() ? j["id"].get<std::string>() : j["id"].dump();
    const auto it = index.find(id);
    if (it == index.end()) return fail(where + ": unknown id '" + id + "' (not in the " + split + " split)");
    if (seen[it->second]) return fail(where + ": duplicate prediction for id '" + id + "'");
    seen[it->second] = true;
    hypothesis[it->second] = j["report"].get<std::string>();
    if (consistency) {
      if (!j.contains("consistency") || !j["consistency"].is_number()) {
        return fail(where + ": no \"consistency\" number (was the model trained with an alignment head?)");
      }
      consistency_of[it->second] = j["consistency"].get<double>();
    }
  }
  if (in.bad()) return fail("cannot read predictions file " + predictions_path);
  for (std::size_t i = 0; i < studies.size(); ++i) {
    if (!seen[i]) return fail("missing prediction for id '" + studies[i].id + "' of the " + split + " split");
  }
  if (studies.empty()) return fail("the " + split + " split of " + annotation_path + " is empty");

  // Split order, as the trainer's data loader (shuffle=False) feeds the scorer.
  std::vector<cmn::metrics::Example> examples;
  examples.reserve(studies.size());
  try {
    for (std::size_t i = 0; i < studies.size(); ++i) {
      examples.push_back(
          {hypothesis[i],
           {cmn::metrics::r2gen_reference(tokenizer, studies[i].report, static_cast<std::size_t>(max_seq_length))}});
    }
  } catch (const std::exception& e) {
    return fail(e.what());
  }

  const cmn::metrics::Scores scores = cmn::metrics::evaluate(examples, meteor_options);
  nlohmann::ordered_json out;
  for (const auto& [name, value] : scores.named()) out[name] = value;
  out["METEOR_method"] = cmn::metrics::kMeteorLabel;
  if (clinical) {
    std::vector<std::string> hyps, refs;
    for (const auto& ex : examples) {
      hyps.push_back(ex.hypothesis);
      refs.push_back(ex.references.front());
    }
    for (const auto& [name, value] : cmn::metrics::chexpert_ce(refs, hyps, policy).named()) out["CE_" + name] = value;
    out["CE_uncertain"] = cmn::metrics::uncertain_policy_description(policy);
    if (phantom_findings) {
      const bool ones = policy == cmn::metrics::UncertainPolicy::kOnes;
      for (const auto& [name, value] : cmn::metrics::clinical_efficacy(hyps, refs, ones).named()) {
        out["CE_phantom_" + name.substr(3)] = value;
      }
    }
  }
  if (consistency) {
    std::vector<cmn::eval::ScoredDraft> drafts;
    for (std::size_t i = 0; i < studies.size(); ++i) {
      drafts.push_back({studies[i].id, hypothesis[i], consistency_of[i], examples[i].references.front()});
    }
    out["consistency"] = cmn::eval::consistency_summary(drafts, worst, clinical, phantom_findings);
  }
  std::cout << out.dump() << std::endl;
  return 0;
}
