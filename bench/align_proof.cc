// cmn-align-proof: what a bundle's image-report alignment head (issue 14) can tell, measured on held-out phantom
// studies (cmn-phantom's annotation.json and manifest.jsonl, whose "findings" are the drawn ground truth):
//   1. ITM: P(match) of each study with its own report vs another study's report (any; and one with another
//      finding set), and vs a hard negative: a report of a study whose findings differ in exactly one -> ROC AUC
//   2. consistency of the generated drafts: ROC AUC with which it ranks drafts whose six finding labels are all
//      right above those with a wrong one; the drafts' CE macro-F1 against the truth
//   3. retrieval (with a retrieval index): share of studies whose top-1 similar training report states the
//      study's finding set
// One JSON object on stdout. Exit 1 with one line on stderr when the bundle has no alignment head or an input
// is unreadable.
//   build/bench/cmn-align-proof --bundle B --annotation D/annotation.json --manifest D/manifest.jsonl [--split test]
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cmn/common/main_init.h"
#include "cmn/engine/replica.h"
#include "cmn/metrics/labels.h"
#include "cmn/metrics/ranking.h"
#include "cmn/model/decoding_options.h"
#include "cmn/model/runtime.h"
#include "cmn/pipeline/annotation.h"
#include "cmn/pipeline/model_loader.h"
#include "cmn/pipeline/report_generator.h"
#include "cmn/preprocessing/image_pipeline.h"

namespace {

using cmn::metrics::ReportLabels;
using Findings = std::vector<bool>;  // the six, in cmn::metrics::all_findings() order

int fail(const std::string& message) {
  std::cerr << "cmn-align-proof: " << message << "\n";
  return 1;
}

Findings positives(const ReportLabels& labels) {
  Findings f;
  for (auto l : labels) f.push_back(cmn::metrics::is_positive(l));
  return f;
}

int differences(const Findings& a, const Findings& b) {
  int n = 0;
  for (size_t i = 0; i < a.size(); ++i) n += a[i] != b[i];
  return n;
}

nlohmann::json auc_json(const std::vector<double>& pos, const std::vector<double>& neg) {
  std::vector<double> scores = pos;
  scores.insert(scores.end(), neg.begin(), neg.end());
  std::vector<bool> label(pos.size(), true);
  label.resize(scores.size(), false);
  const auto auc = cmn::metrics::roc_auc(scores, label);
  return {{"auroc", auc ? nlohmann::json(*auc) : nlohmann::json(nullptr)}, {"pairs", neg.size()}};
}

}  // namespace

int main(int argc, char** argv) {
  cmn::init_logging(argv[0]);
  CLI::App app{"cmn-align-proof: ITM, consistency and retrieval of a bundle's alignment head on phantom studies"};
  std::string bundle, annotation_path, manifest_path, split = "test", image_root;
  uint64_t seed = 8;
  int64_t batch = 32;
  app.add_option("--bundle", bundle, "model bundle with an alignment head")->required()->check(CLI::ExistingDirectory);
  app.add_option("--annotation", annotation_path, "cmn-phantom's annotation.json")->required()->check(CLI::ExistingFile);
  app.add_option("--manifest", manifest_path, "cmn-phantom's manifest.jsonl (ground-truth findings)")
      ->required()->check(CLI::ExistingFile);
  app.add_option("--split", split, "split to measure on")->check(CLI::IsMember({"val", "test"}))->capture_default_str();
  app.add_option("--image-root", image_root, "root of the image paths (default: images/ beside the annotation)");
  app.add_option("--seed", seed, "seed of the negative draws")->capture_default_str();
  app.add_option("--batch", batch, "studies per pass")->check(CLI::PositiveNumber)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  cmn::model::set_threads(1);

  auto loaded = cmn::pipeline::load_model({bundle, "", "", "", "--bundle", "", "", ""});
  if (!loaded.ok()) return fail(std::string(loaded.status().message()));
  const auto& config = loaded->model->config();
  if (config.align_queries == 0) return fail("bundle '" + bundle + "' has no alignment head (model.align_queries 0)");
  auto replica = cmn::engine::Replica::create(loaded->model);
  if (!replica.ok()) return fail(std::string(replica.status().message()));
  cmn::pipeline::ReportGenerator generator(std::move(*replica));

  auto annotation = cmn::pipeline::read_annotation(annotation_path);
  if (!annotation.ok()) return fail(std::string(annotation.status().message()));
  const auto& studies = split == "val" ? annotation->val : annotation->test;
  if (studies.size() < 3) return fail("the " + split + " split has fewer than 3 studies");
  std::map<std::string, Findings> truth;
  {
    std::ifstream in(manifest_path);
    std::string line;
    while (std::getline(in, line)) {
      const auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.contains("id") || !j.contains("findings")) continue;
      Findings f;
      for (auto finding : cmn::metrics::all_findings()) {
        f.push_back(j["findings"].value(cmn::metrics::finding_name(finding), false));
      }
      truth[j["id"].get<std::string>()] = f;
    }
  }
  // cmn-phantom's layout: the image paths are relative to images/ beside annotation.json.
  const std::string root =
      image_root.empty() ? (std::filesystem::path(annotation_path).parent_path() / "images").string() : image_root;

  // Images and truth of every study.
  std::vector<std::vector<cmn::preprocessing::FloatImage>> images;
  std::vector<Findings> findings;
  std::vector<std::string> reports;
  for (const auto& s : studies) {
    const auto t = truth.find(s.id);
    if (t == truth.end()) return fail("study '" + s.id + "' is not in the manifest");
    std::vector<cmn::preprocessing::FloatImage> views;
    for (const auto& p : s.image_paths) {
      auto image = cmn::preprocessing::load_model_input((std::filesystem::path(root) / p).string(), loaded->info.image);
      if (!image.ok()) return fail(std::string(image.status().message()));
      views.push_back(std::move(*image));
    }
    images.push_back(std::move(views));
    findings.push_back(t->second);
    reports.push_back(s.report);
  }
  const size_t n = studies.size();

  // 1. Negatives: for study i, another study's report (any), one with another finding set, one differing in one.
  std::mt19937_64 rng(seed);
  std::vector<std::string> any_other(n), other_findings, one_finding;
  std::vector<size_t> other_rows, hard_rows;
  for (size_t i = 0; i < n; ++i) {
    size_t j = i;
    while (j == i) j = std::uniform_int_distribution<size_t>(0, n - 1)(rng);
    any_other[i] = reports[j];
    std::vector<size_t> different, one;
    for (size_t k = 0; k < n; ++k) {
      const int d = differences(findings[i], findings[k]);
      if (d > 0) different.push_back(k);
      if (d == 1) one.push_back(k);
    }
    if (!different.empty()) {
      other_rows.push_back(i);
      other_findings.push_back(reports[different[std::uniform_int_distribution<size_t>(0, different.size() - 1)(rng)]]);
    }
    if (!one.empty()) {
      hard_rows.push_back(i);
      one_finding.push_back(reports[one[std::uniform_int_distribution<size_t>(0, one.size() - 1)(rng)]]);
    }
  }
  cmn::pipeline::GeneratorOptions options;
  options.decoding = cmn::model::decoding_options_from(config);
  options.batch_size = batch;
  auto consistency_of = [&](const std::vector<size_t>& rows, const std::vector<std::string>& given,
                            std::vector<double>& out) -> bool {
    std::vector<std::vector<cmn::preprocessing::FloatImage>> chosen;
    for (size_t r : rows) chosen.push_back(images[r]);
    for (const auto& s : generator.score_images(chosen, given, options)) {
      if (!s.ok() || !s->consistency) return false;
      out.push_back(*s->consistency);
    }
    return true;
  };
  std::vector<size_t> all(n);
  for (size_t i = 0; i < n; ++i) all[i] = i;
  std::vector<double> own, vs_any, vs_other, vs_hard;
  if (!consistency_of(all, reports, own) || !consistency_of(all, any_other, vs_any) ||
      !consistency_of(other_rows, other_findings, vs_other) || !consistency_of(hard_rows, one_finding, vs_hard)) {
    return fail("scoring failed");
  }

  // 2. Drafts: consistency vs the drafts' labels against the truth; 3. retrieval.
  const bool index = config.align_index_size > 0;
  options.similar = index ? 1 : 0;
  const auto drafts = generator.generate_images(images, options);
  std::vector<double> draft_consistency;
  std::vector<bool> right;
  std::vector<ReportLabels> hyp_labels, truth_labels;
  int64_t retrieval_same = 0, retrieval_n = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!drafts[i].ok()) return fail(std::string(drafts[i].status().message()));
    const auto labels = cmn::metrics::extract_labels(drafts[i]->report);
    draft_consistency.push_back(drafts[i]->consistency.value_or(0.0));
    right.push_back(differences(positives(labels), findings[i]) == 0);
    hyp_labels.push_back(labels);
    ReportLabels t{};
    for (size_t f = 0; f < t.size(); ++f) {
      t[f] = findings[i][f] ? cmn::metrics::Label::kPositive : cmn::metrics::Label::kNotMentioned;
    }
    truth_labels.push_back(t);
    if (index && !drafts[i]->similar.empty()) {
      ++retrieval_n;
      retrieval_same += differences(positives(cmn::metrics::extract_labels(drafts[i]->similar.front().report)),
                                    findings[i]) == 0;
    }
  }
  const auto ce = cmn::metrics::clinical_efficacy(hyp_labels, truth_labels);
  const auto right_auc = cmn::metrics::roc_auc(draft_consistency, right);
  const auto n_right = std::count(right.begin(), right.end(), true);

  nlohmann::ordered_json out;
  out["bundle"] = loaded->info.name + " " + loaded->info.version;
  out["split"] = split;
  out["studies"] = n;
  out["itm_own_vs_any_other_report"] = auc_json(own, vs_any);
  std::vector<double> own_other, own_hard;
  for (size_t r : other_rows) own_other.push_back(own[r]);
  for (size_t r : hard_rows) own_hard.push_back(own[r]);
  out["itm_own_vs_report_with_other_findings"] = auc_json(own_other, vs_other);
  out["itm_own_vs_report_one_finding_apart"] = auc_json(own_hard, vs_hard);
  out["drafts"] = {{"CE_macro_F1_vs_truth", ce.macro_f1},
                   {"all_findings_right", n_right},
                   {"some_finding_wrong", static_cast<int64_t>(n) - n_right},
                   {"consistency_auroc_right_vs_wrong", right_auc ? nlohmann::json(*right_auc) : nlohmann::json(nullptr)}};
  if (index) {
    out["retrieval_top1_same_findings"] =
        retrieval_n > 0 ? nlohmann::json(static_cast<double>(retrieval_same) / static_cast<double>(retrieval_n)) : nlohmann::json(nullptr);
  }
  std::cout << out.dump() << std::endl;
  return 0;
}
