// cmn-generate's archive mode and merge (generate_archive.h).
#include "generate_archive.h"

#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "cmn/common/file_util.h"
#include "cmn/metrics/chexpert_ce.h"
#include "cmn/metrics/metrics.h"
#include "cmn/metrics/references.h"
#include "cmn/metrics/observations.h"
#include "cmn/model/tokenizer.h"
#include "cmn/pipeline/annotation.h"
#include "cmn/pipeline/dicom_sr.h"
#include "cmn/pipeline/findings_sr.h"
#include "generate_fhir.h"

namespace cmn::client {
namespace {

using pipeline::ModelIdentity;
using pipeline::ReportGenerator;

constexpr int kExitFailure = 1;

// The report's sentences as the SR wants them, by the one splitter (model::split_sentences).
std::vector<std::string> report_sentences(const std::string& report) {
  std::istringstream in(report);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  return model::split_sentences(words);
}

// What cmn-generate prints about a run, and writes with --summary.
nlohmann::ordered_json summary_json(const cmn::batch::BatchSummary& s, int64_t listed, int64_t not_in_shard,
                                    int64_t files_unusable, const std::string& shard) {
  nlohmann::ordered_json j;
  j["studies_listed"] = listed;
  j["shard"] = shard;
  j["not_in_shard"] = not_in_shard;
  j["to_run"] = s.total;
  j["done"] = s.done;
  j["skipped_already_in_output"] = s.skipped;
  j["failed"] = s.failed;
  j["failed_by_reason"] = s.failed_by_reason;
  j["files_unusable"] = files_unusable;
  j["elapsed_s"] = s.elapsed_s;
  j["studies_per_s"] = s.studies_per_s;
  return j;
}

// Scores every reported study of `lines` that has a reference, with the trainer's reference preparation
// (cmn_metrics: tokenizer(report)[:max_seq_length], decoded) and cmn-eval's metrics.
nlohmann::ordered_json score_lines(const std::vector<std::string>& lines,
                                   const std::unordered_map<std::string, std::string>& references,
                                   const cmn::model::Tokenizer& tokenizer, int64_t max_seq_length) {
  std::vector<cmn::metrics::Example> examples;
  std::set<std::string> scored;
  for (const auto& text : lines) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception&) {
      continue;
    }
    if (!j.contains("id") || !j["id"].is_string() || !j.contains("report") || !j["report"].is_string()) continue;
    const std::string id = j["id"].get<std::string>();
    const auto ref = references.find(id);
    if (ref == references.end() || !scored.insert(id).second) continue;
    examples.push_back({j["report"].get<std::string>(),
                        {cmn::metrics::r2gen_reference(tokenizer, ref->second, static_cast<size_t>(max_seq_length))}});
  }
  nlohmann::ordered_json out;
  out["scored"] = examples.size();
  out["references"] = references.size();
  if (examples.empty()) return out;
  const auto scores = cmn::metrics::evaluate(examples);
  for (const auto& [name, value] : scores.named()) out[name] = value;
  out["METEOR_method"] = cmn::metrics::kMeteorLabel;
  // Clinical efficacy on CheXpert's 14 observations, as cmn-eval --clinical (U-zeros, R2GenCMN's policy).
  std::vector<std::string> hyps, refs;
  for (const auto& ex : examples) {
    hyps.push_back(ex.hypothesis);
    refs.push_back(ex.references.front());
  }
  const auto policy = cmn::metrics::UncertainPolicy::kZeros;
  for (const auto& [name, value] : cmn::metrics::chexpert_ce(refs, hyps, policy).named()) {
    if (name.rfind("AUCROC_", 0) != 0) out["CE_" + name] = value;
  }
  out["CE_uncertain"] = cmn::metrics::uncertain_policy_description(policy);
  return out;
}

std::vector<std::string> read_lines(const std::string& path) {
  std::vector<std::string> lines;
  std::ifstream in(path, std::ios::binary);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}



// --sr-dir / --findings-sr-dir: the study's DICOM SR (cmn/pipeline/dicom_sr.h) from its line's report and slot
// instances, and its coded-findings SR (cmn/pipeline/findings_sr.h), written atomically as DIR/<key>.dcm before
// the line is appended (so a line in the output means its SRs exist). Adds "sr_file" / "findings_sr_file", or
// "sr_error" (the study itself still counts as reported).
void add_sr(const std::string& sr_dir, const std::string& findings_dir, const ModelIdentity& id,
            const std::vector<std::string>& parameters, double warn_below, nlohmann::json& line) {
  if (!line.contains("report") || !line.contains("instances")) return;  // failed or not a DICOM study
  std::vector<std::string> sources;
  std::set<std::string> seen;
  for (const auto& slot : line["instances"]) {
    const std::string path = slot.at("source").get<std::string>();
    if (!seen.insert(path).second) continue;
    std::ifstream in(path, std::ios::binary);
    std::ostringstream bytes;
    bytes << in.rdbuf();
    if (!in) {
      line["sr_error"] = "cannot read '" + path + "' again for the SR evidence";
      return;
    }
    sources.push_back(bytes.str());
  }
  cmn::pipeline::SrOptions options;
  options.model_name = id.name;
  options.model_version = id.version;
  options.model_digest = id.digest;
  options.untrained = id.untrained;
  options.algorithm_parameters = parameters;
  if (line.contains("consistency") && line["consistency"].is_number()) options.consistency = line["consistency"].get<double>();
  options.consistency_warn_below = warn_below;
  const std::string report = line["report"].get<std::string>();
  const std::string file_name = cmn::batch::safe_file_name(line["id"].get<std::string>()) + ".dcm";
  auto write = [&](const std::string& dir, const absl::StatusOr<std::string>& sr, const char* key) {
    if (!sr.ok()) {
      line["sr_error"] = std::string(sr.status().message());
      return;
    }
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    const std::string path = (std::filesystem::path(dir) / file_name).string();
    if (!cmn::write_file_atomically(path, *sr).ok()) {
      line["sr_error"] = "cannot write '" + path + "'";
      return;
    }
    line[key] = path;
  };
  if (!sr_dir.empty()) write(sr_dir, cmn::pipeline::write_report_sr(sources, report_sentences(report), options), "sr_file");
  if (!findings_dir.empty()) {
    write(findings_dir,
          cmn::pipeline::write_findings_sr(sources, cmn::metrics::stated_observations(report), options),
          "findings_sr_file");
  }
}

}  // namespace

int run_merge(const std::vector<std::string>& inputs, const std::string& output, bool force) {
  auto merged = cmn::batch::merge_outputs(inputs, output, force);
  if (!merged.ok()) {
    std::cerr << "cmn-generate merge: " << merged.status().message() << "\n";
    return kExitFailure;
  }
  for (const auto& p : merged->problems) std::cerr << "cmn-generate merge: " << p << "\n";
  nlohmann::ordered_json j;
  j["studies"] = merged->lines;
  j["failed"] = merged->failed;
  j["complete"] = merged->ok;
  j["written"] = merged->ok || force;
  std::cerr << "cmn-generate merge: summary: " << j.dump() << "\n";
  return merged->ok ? 0 : kExitFailure;
}

// --dicom / --manifest / --split: list studies, keep this shard's, skip those already in --output, run the
// rest appending one synced line each, then print (and --summary) the summary, with scores for --split.
int run_archive(pipeline::ReportGenerator& generator, const pipeline::GeneratorOptions& options,
                const ArchiveRequest& req) {
  namespace pl = cmn::batch;
  // 1. Studies.
  pl::StudyList list;
  std::unordered_map<std::string, std::string> references;
  if (!req.dicom_paths.empty()) {
    list = pl::list_dicom_studies(req.dicom_paths);
  } else if (!req.manifest.empty()) {
    auto listed = pl::list_manifest_studies(req.manifest);
    if (!listed.ok()) {
      std::cerr << "cmn-generate: " << listed.status().message() << "\n";
      return kExitFailure;
    }
    list = std::move(*listed);
  } else {
    auto ann = cmn::pipeline::read_annotation(req.annotation);
    if (!ann.ok()) {
      std::cerr << "cmn-generate: " << ann.status().message() << "\n";
      return kExitFailure;
    }
    const auto& entries = req.split == "train" ? ann->train : req.split == "val" ? ann->val : ann->test;
    const std::string root = req.image_root.empty()
                                 ? std::filesystem::path(req.annotation).parent_path().string()
                                 : req.image_root;
    list = pl::annotation_studies(entries, root);
  }
  for (const auto& e : list.file_errors) std::cerr << "cmn-generate: " << e << "\n";
  if (list.studies.empty() && list.file_errors.empty()) {
    std::cerr << "cmn-generate: no studies found\n";
    return kExitFailure;
  }

  std::map<std::string, std::string> given;  // --score-reports
  if (!req.score_reports.empty()) {
    auto read = pl::read_given_reports(req.score_reports);
    if (!read.ok()) {
      std::cerr << "cmn-generate: --score-reports: " << read.status().message() << "\n";
      return 2;
    }
    given = std::move(*read);
  }

  // 2. This shard's studies (each key once), and the ones the output already has.
  std::vector<pl::BatchStudy> mine;
  std::vector<std::string> keys;
  std::set<std::string> seen;
  int64_t not_in_shard = 0;
  for (auto& s : list.studies) {
    if (!pl::in_shard(s.key, req.shard)) {
      ++not_in_shard;
      continue;
    }
    if (!seen.insert(s.key).second) {
      std::cerr << "cmn-generate: study key listed twice, second one ignored (" << (req.manifest.empty() ? "input" : req.manifest)
                << ")\n";
      continue;
    }
    if (s.reference) references[s.key] = *s.reference;
    keys.push_back(s.key);
    mine.push_back(std::move(s));
  }
  std::optional<pl::JsonlAppender> appender;
  int64_t already = 0;
  if (!req.output.empty()) {
    pl::ExistingOutput existing;
    if (!req.overwrite) {
      auto scanned = pl::scan_output(req.output);
      if (!scanned.ok()) {
        std::cerr << "cmn-generate: " << scanned.status().message() << "\n";
        return kExitFailure;
      }
      existing = std::move(*scanned);
      if (existing.torn_tail) std::cerr << "cmn-generate: dropping a torn last line of '" << req.output << "'\n";
    }
    auto opened = pl::JsonlAppender::open(req.output, existing.valid_bytes);
    if (!opened.ok()) {
      std::cerr << "cmn-generate: " << opened.status().message() << "\n";
      return kExitFailure;
    }
    appender.emplace(std::move(*opened));
    if (auto st = pl::write_keys_file(req.output, req.shard, keys); !st.ok()) {
      std::cerr << "cmn-generate: " << st.message() << "\n";
      return kExitFailure;
    }
    std::vector<pl::BatchStudy> todo;
    for (auto& s : mine) {
      if (existing.keys.count(s.key)) {
        ++already;
      } else {
        todo.push_back(std::move(s));
      }
    }
    mine = std::move(todo);
  }

  // 3. The run.
  pl::BatchOptions batch;
  batch.generator = options;
  batch.study.views = generator.config().effective_views();
  batch.study.allowed_modalities = req.modalities;
  batch.study.image = options.image;
  if (req.draft_decode) batch.study.read.draft_min_side = options.image.size;
  batch.read_ahead = req.read_ahead;
  batch.attention_dir = req.attention_dir;
  batch.progress = req.progress;
  batch.consistency_warn_below = req.consistency_warn_below;
  if (!req.score_reports.empty()) batch.score_reports = &given;
  std::vector<std::string> new_lines;
  auto emit = [&](const std::string& text) -> absl::Status {
    std::string line = text;
    if (!req.sr_dir.empty() || !req.findings_sr_dir.empty() || !req.fhir_dir.empty()) {
      auto j = nlohmann::json::parse(text);
      if (!req.sr_dir.empty() || !req.findings_sr_dir.empty()) {
        const auto& d = options.decoding;  // TID 4019 Algorithm Parameters of the findings SR
        add_sr(req.sr_dir, req.findings_sr_dir, generator.identity(),
               {std::string("method=") + cmn::model::method_name(d.method), "beam_size=" + std::to_string(d.beam_size),
                "max_length=" + std::to_string(d.max_length), "temperature=" + std::to_string(d.temperature),
                "seed=" + std::to_string(d.seed)},
               req.consistency_warn_below, j);
      }
      if (!req.fhir_dir.empty()) add_fhir(req.fhir_dir, generator.identity(), req.consistency_warn_below, j);
      line = j.dump();
    }
    if (!references.empty()) new_lines.push_back(line);
    if (appender) return appender->append(line);
    std::cout << line << "\n" << std::flush;
    return absl::OkStatus();
  };
  auto summary = pl::run_batch(generator, mine, batch, emit);
  if (!summary.ok()) {
    std::cerr << "cmn-generate: " << summary.status().message() << "\n";
    return kExitFailure;
  }
  summary->skipped = already;
  auto j = summary_json(*summary, static_cast<int64_t>(list.studies.size()), not_in_shard,
                        static_cast<int64_t>(list.file_errors.size()), req.shard.text());

  // 4. Scores against the annotation's reports (the whole output, so a resumed run scores everything).
  if (!references.empty()) {
    const auto all = req.output.empty() ? new_lines : read_lines(req.output);
    j["scores"] = score_lines(all, references, generator.tokenizer(), generator.config().max_seq_length);
  }
  std::cerr << "cmn-generate: summary: " << j.dump() << "\n";
  if (!req.summary_path.empty() && !cmn::write_file_atomically(req.summary_path, j.dump(2) + "\n").ok()) {
    std::cerr << "cmn-generate: cannot write '" << req.summary_path << "'\n";
    return kExitFailure;
  }
  const bool any_failed = summary->failed > 0 || !list.file_errors.empty();
  // Writing to stdout keeps the tool's old contract (1 when anything failed); an archive run into a file
  // records failures in its lines and fails only when asked.
  if (any_failed && (req.fail_on_error || req.output.empty())) return kExitFailure;
  return 0;
}

}  // namespace cmn::client
