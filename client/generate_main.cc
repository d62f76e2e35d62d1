// cmn-generate: offline report generation in process (no server).
//   cmn-generate --r2gencmn MODEL.pth --args config.json --annotation annotation.json --images A.png B.png ...
//   cmn-generate --bundle DIR --images ...
//   cmn-generate --bundle DIR --dicom FILE_OR_FOLDER ... [--output out.jsonl] [--shard i/n] [--attention-dir D]
//                [--sr-dir D] [--fhir-dir D]
//   cmn-generate --bundle DIR --manifest studies.csv|studies.jsonl --output out.jsonl
//   cmn-generate --bundle DIR --annotation annotation.json --split test --image-root IMAGES --output out.jsonl
//   cmn-generate merge --output all.jsonl shard-0.jsonl shard-1.jsonl ...
// --images: each consecutive group of `views` images is one study (one JSON line each, --output written
// atomically). Archive mode (--dicom, --manifest, --split; cmn/pipeline/batch.h): studies are keyed
// (StudyInstanceUID / manifest id / annotation id), optionally sharded by a stable hash of the key, read and
// decoded on a thread ahead of the batched model, and each study's line is appended to --output and synced
// as soon as its batch is done; a rerun skips the studies already there (a torn last line from a kill is
// dropped and redone). Bad files and studies are recorded (stderr, and an "error" line) and never stop the
// run. A summary JSON line (done, skipped, failed by reason, studies/s; with --split the BLEU/METEOR/
// ROUGE-L/CIDEr scores of cmn_metrics and CheXpert-14 clinical efficacy CE_*, U-zeros, named in CE_uncertain)
// ends stderr. Logs and progress carry no patient identifiers.
// Exit codes: 0 ok; 1 a study or file failed (stdout output, --images, or --fail-on-error) or the model or
// output failed; 2 bad command line.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cmn/common/main_init.h"
#include "cmn/common/file_util.h"
#include "cmn/metrics/chexpert_ce.h"
#include "cmn/metrics/metrics.h"
#include "cmn/metrics/references.h"
#include "cmn/model/runtime.h"
#include "cmn/pipeline/annotation.h"
#include "cmn/pipeline/batch.h"
#include "cmn/pipeline/bundle.h"
#include "cmn/pipeline/model_loader.h"
#include "cmn/pipeline/dicom_sr.h"
#include "cmn/pipeline/findings_sr.h"
#include "cmn/pipeline/report_generator.h"
#include "cmn/preprocessing/dicom.h"
#include "generate_fhir.h"

namespace {

using cmn::pipeline::ModelIdentity;
using cmn::pipeline::ReportGenerator;

// Exit codes: 0 every study reported; 1 a study or the model failed; 2 bad command line.
constexpr int kExitFailure = 1;

nlohmann::json model_json(const ModelIdentity& id) {
  return {{"name", id.name}, {"version", id.version}, {"digest", id.digest}, {"untrained", id.untrained}};
}

// Adds the report (or the error) of one study to its JSON line; returns false for an error.
bool add_result(const absl::StatusOr<cmn::pipeline::StudyReport>& result, const std::string& study_name,
                nlohmann::json& line) {
  if (!result.ok()) {
    line["error"] = std::string(result.status().message());
    std::cerr << "cmn-generate: study " << study_name << ": " << result.status().message() << "\n";
    return false;
  }
  const auto& r = *result;
  line["report"] = r.report;
  line["token_ids"] = r.token_ids;
  line["log_prob"] = r.log_prob;
  line["timings"] = {{"preprocess_s", r.times.preprocess_s}, {"visual_s", r.times.visual_s},
                     {"encode_s", r.times.encode_s}, {"decode_s", r.times.decode_s}};
  return true;
}

// --- archive mode: --dicom / --manifest / --split ---

// What cmn-generate prints about a run, and writes with --summary.
nlohmann::ordered_json summary_json(const cmn::pipeline::BatchSummary& s, int64_t listed, int64_t not_in_shard,
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

int run_merge(const std::vector<std::string>& inputs, const std::string& output, bool force) {
  auto merged = cmn::pipeline::merge_outputs(inputs, output, force);
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

struct ArchiveRequest {
  std::vector<std::string> dicom_paths;
  std::string manifest, annotation, split, image_root;
  std::vector<std::string> modalities;
  std::string output;
  bool overwrite = false;
  cmn::pipeline::Shard shard;
  bool sharded = false;
  bool fail_on_error = false;
  bool read_ahead = true;
  std::string progress, attention_dir, summary_path, sr_dir, findings_sr_dir, fhir_dir;
};

// The report's sentences as the SR wants them: words up to and including each "." (joined: the report).
std::vector<std::string> report_sentences(const std::string& report) {
  std::vector<std::string> sentences;
  std::string current;
  std::istringstream words(report);
  std::string w;
  while (words >> w) {
    current += (current.empty() ? "" : " ") + w;
    if (w == ".") {
      sentences.push_back(current);
      current.clear();
    }
  }
  if (!current.empty()) sentences.push_back(current);
  return sentences;
}

// --sr-dir / --findings-sr-dir: the study's DICOM SR (cmn/pipeline/dicom_sr.h) from its line's report and slot
// instances, and its coded-findings SR (cmn/pipeline/findings_sr.h), written atomically as DIR/<key>.dcm before
// the line is appended (so a line in the output means its SRs exist). Adds "sr_file" / "findings_sr_file", or
// "sr_error" (the study itself still counts as reported).
void add_sr(const std::string& sr_dir, const std::string& findings_dir, const ModelIdentity& id,
            const std::vector<std::string>& parameters, nlohmann::json& line) {
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
  const std::string report = line["report"].get<std::string>();
  const std::string file_name = cmn::pipeline::safe_file_name(line["id"].get<std::string>()) + ".dcm";
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

// --dicom / --manifest / --split: list studies, keep this shard's, skip those already in --output, run the
// rest appending one synced line each, then print (and --summary) the summary, with scores for --split.
int run_archive(ReportGenerator& generator, const cmn::pipeline::GeneratorOptions& options, const ArchiveRequest& req) {
  namespace pl = cmn::pipeline;
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
  batch.read_ahead = req.read_ahead;
  batch.attention_dir = req.attention_dir;
  batch.progress = req.progress;
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
               j);
      }
      if (!req.fhir_dir.empty()) cmn::client::add_fhir(req.fhir_dir, generator.identity(), j);
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

}  // namespace

int main(int argc, char** argv) {
  cmn::init_logging(argv[0]);  // LibTorch logs through glog
  CLI::App app{"cmn-generate: write draft chest X-ray reports for studies given as image or DICOM files (in process)"};
  std::string checkpoint, args_json, annotation, bundle_dir, output, manifest, split, image_root, shard_text;
  std::string attention_dir, summary_path, sr_dir, findings_sr_dir, fhir_dir, progress = "auto";
  std::vector<std::string> images, dicom_paths;
  std::vector<std::string> modalities = cmn::preprocessing::StudyOptions{}.allowed_modalities;
  std::optional<int64_t> beam_size, max_length;
  std::optional<std::string> sample_method;
  std::optional<double> temperature;
  int threads = 2;
  std::string device = "cpu";
  int64_t batch_size = 8;
  bool overwrite = false, fail_on_error = false, no_read_ahead = false;
  auto* ckpt_opt = app.add_option("--r2gencmn", checkpoint, "R2GenCMN checkpoint (.pth, torch.save format)")
                       ->check(CLI::ExistingFile);
  app.add_option("--args", args_json, "R2GenCMN arguments as JSON (num_layers, d_model, ..., views)")
      ->check(CLI::ExistingFile)->needs(ckpt_opt);
  app.add_option("--annotation", annotation,
                 "annotation.json: its train split rebuilds the vocabulary (--r2gencmn); with --split, the studies")
      ->check(CLI::ExistingFile);
  auto* bundle_opt = app.add_option("--bundle", bundle_dir, "model bundle directory (model.yaml, weights, vocab)")
                         ->check(CLI::ExistingDirectory)->excludes(ckpt_opt);
  auto* images_opt =
      app.add_option("--images", images, "image files (PNG/JPEG); each consecutive group of `views` is one study")
          ->check(CLI::ExistingFile);
  auto* dicom_opt = app.add_option("--dicom", dicom_paths,
                                   "DICOM files or folders (recursive); grouped into studies by StudyInstanceUID")
                        ->check(CLI::ExistingPath)->excludes(images_opt);
  auto* manifest_opt = app.add_option("--manifest", manifest,
                                      "CSV (columns id,path) or JSONL ({id, path|paths}) of study folders or files")
                           ->check(CLI::ExistingFile)->excludes(images_opt)->excludes(dicom_opt);
  auto* split_opt = app.add_option("--split", split, "annotation.json split to generate (and score): train|val|test")
                        ->check(CLI::IsMember({"train", "val", "test"}))
                        ->excludes(images_opt)->excludes(dicom_opt)->excludes(manifest_opt);
  app.add_option("--image-root", image_root, "folder the annotation's image_path entries are relative to")
      ->check(CLI::ExistingDirectory)->needs(split_opt);
  auto* modalities_opt =
      app.add_option("--modalities", modalities,
                     "modalities --dicom accepts, others are skipped saying so (default: the bundle's "
                     "preprocessing.allowed_modalities, else CR,DX,DR)")
          ->delimiter(',')->capture_default_str();
  app.add_option("--beam-size", beam_size, "beams (default: the model's)")->check(CLI::Range(1, 64));
  app.add_option("--max-length", max_length, "tokens at most (default: the model's)")->check(CLI::Range(1, 1000));
  app.add_option("--sample-method", sample_method, "beam_search | greedy | sample")
      ->check(CLI::IsMember({"beam_search", "greedy", "sample"}));
  app.add_option("--temperature", temperature, "sampling temperature")->check(CLI::PositiveNumber);
  app.add_option("--threads", threads, "intra-op threads (0 = the process's CPU budget: affinity, cgroup cpu.max)")
      ->check(CLI::Range(0, 256));
  app.add_option("--device", device, "where the model runs: cpu, cuda or cuda:N (needs a CUDA LibTorch)");
  app.add_option("--batch-size", batch_size, "studies decoded together")->check(CLI::Range(1, 256));
  app.add_option("--output", output,
                 "JSON lines file. --images: written atomically. --dicom/--manifest/--split: appended and synced "
                 "per study; studies already in it are skipped (resume)");
  app.add_flag("--overwrite", overwrite, "start --output afresh instead of resuming it");
  app.add_option("--shard", shard_text, "i/n: only the studies whose key hashes (FNV-1a 64) to i mod n");
  app.add_flag("--fail-on-error", fail_on_error,
               "archive mode with --output: exit 1 when a study or file failed (default: recorded, exit 0)");
  app.add_flag("--no-read-ahead", no_read_ahead, "read and decode DICOM/images on the model's thread");
  app.add_option("--progress", progress, "progress bar on stderr: auto (a terminal) | always | never")
      ->check(CLI::IsMember({"auto", "always", "never"}));
  app.add_option("--attention-dir", attention_dir,
                 "write per-sentence cross-attention PNGs (each layer and view) into DIR/<study key>/");
  app.add_option("--sr-dir", sr_dir,
                 "DICOM studies: also write each report as a DICOM SR (TID 2000, UNVERIFIED) DIR/<study key>.dcm");
  app.add_option("--findings-sr-dir", findings_sr_dir,
                 "DICOM studies: also write the CheXpert observations each report states as a coded TID 1500 SR "
                 "DIR/<study key>.dcm");
  app.add_option("--fhir-dir", fhir_dir,
                 "DICOM studies: also write each report as a FHIR R4 DiagnosticReport (preliminary) DIR/<study key>.json");
  app.add_option("--summary", summary_path, "also write the run's summary JSON (and scores) here");

  // `cmn-generate merge --output all.jsonl shard-*.jsonl`
  auto* merge = app.add_subcommand("merge", "join shard outputs, checking that no study is missing or duplicated");
  std::vector<std::string> merge_inputs;
  std::string merge_output;
  bool merge_force = false;
  merge->add_option("inputs", merge_inputs, "shard output files (JSONL; their .keys.json beside them)")
      ->required()->check(CLI::ExistingFile);
  merge->add_option("--output,-o", merge_output, "merged JSONL (written atomically)")->required();
  merge->add_flag("--force", merge_force, "write the merged output even when studies are missing or duplicated");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints --help, or the problem
    return code == 0 ? 0 : 2;      // the documented exit code for a bad command line (CLI11 uses 1xx)
  }
  if (merge->parsed()) return run_merge(merge_inputs, merge_output, merge_force);

  const bool archive_mode = !dicom_paths.empty() || !manifest.empty() || !split.empty();
  if (images.empty() && !archive_mode) {
    std::cerr << "cmn-generate: give --images FILE..., --dicom PATH..., --manifest FILE or --annotation FILE --split NAME\n";
    return 2;
  }
  if (checkpoint.empty() && bundle_dir.empty()) {
    std::cerr << "cmn-generate: give --bundle DIR or --r2gencmn MODEL.pth --args config.json --annotation annotation.json\n";
    return 2;
  }
  if (!checkpoint.empty() && (args_json.empty() || annotation.empty())) {
    std::cerr << "cmn-generate: --r2gencmn needs --args and --annotation (the vocabulary is rebuilt from it)\n";
    return 2;
  }
  if (!split.empty() && annotation.empty()) {
    std::cerr << "cmn-generate: --split needs --annotation annotation.json\n";
    return 2;
  }
  if (!bundle_dir.empty() && !annotation.empty() && split.empty()) {
    std::cerr << "cmn-generate: --annotation with --bundle is only for --split (the bundle has its vocabulary)\n";
    return 2;
  }
  if (!archive_mode && (!shard_text.empty() || !attention_dir.empty() || !sr_dir.empty() || !findings_sr_dir.empty() ||
                        !fhir_dir.empty() || overwrite)) {
    std::cerr << "cmn-generate: --shard, --attention-dir, --sr-dir, --findings-sr-dir, --fhir-dir and --overwrite go "
                 "with --dicom, --manifest or --split\n";
    return 2;
  }
  cmn::pipeline::Shard shard;
  if (!shard_text.empty()) {
    auto parsed = cmn::pipeline::parse_shard(shard_text);
    if (!parsed.ok()) {
      std::cerr << "cmn-generate: " << parsed.status().message() << "\n";
      return 2;
    }
    shard = *parsed;
  }
  (void)bundle_opt;

  cmn::model::warn_if_slow_blas();
  cmn::model::set_threads(threads);

  // The one loader (bundle, or checkpoint + args + annotation), then a replica on the asked device.
  cmn::pipeline::ModelSource source;
  source.bundle = bundle_dir;
  source.r2gencmn = checkpoint;
  source.args = args_json;
  source.annotation = checkpoint.empty() ? "" : annotation;
  source.bundle_key = "--bundle";
  source.r2gencmn_key = "--r2gencmn";
  source.args_key = "--args";
  source.annotation_key = "--annotation";
  auto loaded = cmn::pipeline::load_model(source);
  if (!loaded.ok()) {
    std::cerr << "cmn-generate: " << loaded.status().message() << "\n";
    return kExitFailure;
  }
  if (!bundle_dir.empty() && !loaded->info.allowed_modalities.empty() && modalities_opt->count() == 0) {
    modalities = loaded->info.allowed_modalities;
  }
  auto replica = cmn::engine::Replica::create(loaded->model, device);
  if (!replica.ok()) {
    std::cerr << "cmn-generate: --device: " << replica.status().message() << "\n";
    return 2;
  }
  std::optional<ReportGenerator> generator;
  generator.emplace(std::move(*replica));

  const auto& config = generator->config();
  cmn::pipeline::GeneratorOptions options;
  options.decoding = cmn::model::decoding_options_from(config);
  if (beam_size) options.decoding.beam_size = *beam_size;
  if (max_length) options.decoding.max_length = *max_length;
  if (sample_method) options.decoding.method = *cmn::model::parse_decoding_method(*sample_method);  // IsMember-checked
  if (temperature) options.decoding.temperature = *temperature;
  if (sample_method && *sample_method != "beam_search" && !beam_size) options.decoding.beam_size = 1;
  options.batch_size = batch_size;

  const auto& id = generator->identity();
  if (id.untrained) {
    std::cerr << "cmn-generate: NOTE: model '" << id.name << "' is UNTRAINED (random weights): its text is not a report\n";
  }
  if (archive_mode) {
    return run_archive(*generator, options, ArchiveRequest{dicom_paths, manifest, annotation, split, image_root, modalities,
                                                           output, overwrite, shard, !shard_text.empty(),
                                                           fail_on_error, !no_read_ahead, progress, attention_dir,
                                                           summary_path, sr_dir, findings_sr_dir, fhir_dir});
  }

  std::ostringstream lines;
  int failures = 0;
  {
    const int64_t views = config.effective_views();
    if (images.size() % static_cast<size_t>(views) != 0) {
      std::cerr << "cmn-generate: " << images.size() << " images is not a multiple of the model's " << views
                << " views per study\n";
      return 2;
    }
    std::vector<std::vector<std::string>> studies;
    for (size_t i = 0; i < images.size(); i += static_cast<size_t>(views)) {
      studies.emplace_back(images.begin() + static_cast<std::ptrdiff_t>(i),
                           images.begin() + static_cast<std::ptrdiff_t>(i) + views);
    }
    auto results = generator->generate_files(studies, options);
    for (size_t s = 0; s < results.size(); ++s) {
      nlohmann::json line;
      line["study"] = s;
      line["images"] = studies[s];
      line["model"] = model_json(id);
      if (!add_result(results[s], std::to_string(s), line)) ++failures;
      if (id.untrained) line["warning"] = "untrained model: random weights, not a report";
      lines << line.dump() << "\n";
    }
  }

  if (output.empty()) {
    std::cout << lines.str();
  } else if (!cmn::write_file_atomically(output, lines.str()).ok()) {
    // Atomic: a reader never sees half a file, and an interrupted run leaves the old output in place.
    std::cerr << "cmn-generate: cannot write '" << output << "'\n";
    return kExitFailure;
  }
  return failures == 0 ? 0 : kExitFailure;
}
