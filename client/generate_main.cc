// cmn-generate: offline report generation in process (no server).
//   cmn-generate --r2gencmn MODEL.pth --args config.json --annotation annotation.json --images A.png B.png ...
//   cmn-generate --bundle DIR --images ...
//   cmn-generate --bundle DIR --dicom FILE_OR_FOLDER ... [--output out.jsonl] [--shard i/n] [--attention-dir D]
//                [--sr-dir D] [--fhir-dir D]
//   cmn-generate --bundle DIR --manifest studies.csv|studies.jsonl --output out.jsonl
//   cmn-generate --bundle DIR --annotation annotation.json --split test --image-root IMAGES --output out.jsonl
//   cmn-generate merge --output all.jsonl shard-0.jsonl shard-1.jsonl ...
//   (archive mode) --score-reports R.jsonl: score given reports {"id", "report"} instead of generating
// --images: each consecutive group of `views` images is one study (one JSON line each, --output written
// atomically). Archive mode (--dicom, --manifest, --split; generate_archive.h over cmn/batch/batch.h): studies are keyed
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
#include "cmn/batch/batch.h"
#include "cmn/pipeline/bundle.h"
#include "cmn/pipeline/model_loader.h"
#include "cmn/pipeline/dicom_sr.h"
#include "cmn/pipeline/findings_sr.h"
#include "cmn/pipeline/report_generator.h"
#include "cmn/preprocessing/dicom.h"
#include "generate_archive.h"
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
  if (r.consistency) line["consistency"] = *r.consistency;  // absent without an alignment head
  if (!r.similar.empty()) {
    auto similar = nlohmann::json::array();
    for (const auto& f : r.similar) similar.push_back({{"report", f.report}, {"similarity", f.similarity}});
    line["similar"] = std::move(similar);
  }
  line["timings"] = {{"preprocess_s", r.times.preprocess_s}, {"visual_s", r.times.visual_s},
                     {"encode_s", r.times.encode_s}, {"decode_s", r.times.decode_s}};
  return true;
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
  std::string precision = "fp32";
  int decode_threads = 0;
  int64_t batch_size = 8;
  bool overwrite = false, fail_on_error = false, no_read_ahead = false, draft_decode = false;
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
  app.add_option("--precision", precision,
                 "fp32 (exact, default), bf16 (needs AVX512_BF16/AMX or CUDA) or int8 (dynamic quantisation, CPU)")
      ->check(CLI::IsMember({"fp32", "bf16", "int8"}));
  app.add_option("--decode-threads", decode_threads,
                 "intra-op threads of the decode loop (0 = --threads); 1 on a CPU shared with other work")
      ->check(CLI::Range(0, 256));
  app.add_option("--batch-size", batch_size, "studies decoded together")->check(CLI::Range(1, 256));
  app.add_option("--output", output,
                 "JSON lines file. --images: written atomically. --dicom/--manifest/--split: appended and synced "
                 "per study; studies already in it are skipped (resume)");
  app.add_flag("--overwrite", overwrite, "start --output afresh instead of resuming it");
  app.add_option("--shard", shard_text, "i/n: only the studies whose key hashes (FNV-1a 64) to i mod n");
  app.add_flag("--fail-on-error", fail_on_error,
               "archive mode with --output: exit 1 when a study or file failed (default: recorded, exit 0)");
  app.add_flag("--no-read-ahead", no_read_ahead, "read and decode DICOM/images on the model's thread");
  app.add_flag("--draft-decode", draft_decode,
               "decode JPEG 2000 / 8-bit JPEG DICOM at the smallest size still covering the model input (faster, "
               "not bit-exact; other codecs decode exactly)");
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
  double consistency_warn_below = 0.0;
  std::string score_reports;
  int64_t similar = 0;
  app.add_option("--similar", similar,
                 "also list the K most similar training reports of the bundle's retrieval index per study "
                 "(\"similar\": [{\"report\", \"similarity\"}]; needs a bundle trained with align.retrieval_index)")
      ->check(CLI::Range(int64_t{0}, int64_t{100}));
  app.add_option("--consistency-warn-below", consistency_warn_below,
                 "flag drafts whose image-report consistency is below this (\"consistency_warning\" in the line, and "
                 "in its SR / FHIR); needs a model with an alignment head")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--score-reports", score_reports,
                 "JSONL of {\"id\", \"report\"} keyed like the studies: score each given report (teacher-forced "
                 "log-prob, consistency) instead of generating one")
      ->check(CLI::ExistingFile);

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
  if (merge->parsed()) return cmn::client::run_merge(merge_inputs, merge_output, merge_force);

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
                        !fhir_dir.empty() || overwrite || draft_decode || !score_reports.empty())) {
    std::cerr << "cmn-generate: --shard, --attention-dir, --sr-dir, --findings-sr-dir, --fhir-dir, --overwrite, "
                 "--score-reports and --draft-decode go with --dicom, --manifest or --split\n";
    return 2;
  }
  if (!score_reports.empty() && !attention_dir.empty()) {
    std::cerr << "cmn-generate: --score-reports scores given reports; --attention-dir draws a generated one's\n";
    return 2;
  }
  cmn::batch::Shard shard;
  if (!shard_text.empty()) {
    auto parsed = cmn::batch::parse_shard(shard_text);
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
  const auto replica_precision = *cmn::model::parse_precision(precision);  // CLI::IsMember checked the name
  if (const auto missing = cmn::model::precision_unavailable(replica_precision, device); !missing.empty()) {
    std::cerr << "cmn-generate: --precision: " << missing << "\n";
    return 2;
  }
  auto replica = cmn::engine::Replica::create(loaded->model, device, replica_precision);
  if (!replica.ok()) {
    std::cerr << "cmn-generate: --device: " << replica.status().message() << "\n";
    return 2;
  }
  (*replica)->set_decode_threads(decode_threads);
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
  options.similar = similar;
  if (similar > 0 && (!config.align_queries || !config.align_index_size)) {
    std::cerr << "cmn-generate: --similar: this model has no retrieval index (a bundle trained with "
                 "model.align_queries > 0 and align.retrieval_index: true has one)\n";
    return 2;
  }

  const auto& id = generator->identity();
  if (id.untrained) {
    std::cerr << "cmn-generate: NOTE: model '" << id.name << "' is UNTRAINED (random weights): its text is not a report\n";
  }
  if (archive_mode) {
    return cmn::client::run_archive(*generator, options, cmn::client::ArchiveRequest{dicom_paths, manifest, annotation, split, image_root, modalities,
                                                           output, overwrite, shard, !shard_text.empty(),
                                                           fail_on_error, !no_read_ahead, progress, attention_dir,
                                                           summary_path, sr_dir, findings_sr_dir, fhir_dir,
                                                           draft_decode, consistency_warn_below, score_reports});
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
