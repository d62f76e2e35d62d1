// cmn-generate: offline report generation in process (no server).
//   cmn-generate --r2gencmn MODEL.pth --args config.json --annotation annotation.json --images A.png B.png ...
//   cmn-generate --bundle DIR --images ...
//   cmn-generate --bundle DIR --dicom FILE_OR_FOLDER ...
// --images: each consecutive group of `views` images is one study. --dicom: files and folder trees (recursive;
// names starting with '.' are ignored) are read as DICOM and grouped into studies by StudyInstanceUID, each
// assembled into the model's views by preprocessing::assemble_study (view priority and fill rule: dicom.h).
// One JSON line per study on stdout or --output; DICOM lines name the study by its StudyInstanceUID and list
// which instance fills each slot and why, and which instances were skipped and why. A file that is not
// readable DICOM is one stderr line and makes the exit code 1; the other studies are still reported.
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
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cmn/model/runtime.h"
#include "cmn/pipeline/annotation.h"
#include "cmn/pipeline/bundle.h"
#include "cmn/pipeline/report_generator.h"
#include "cmn/preprocessing/dicom.h"

namespace {

using cmn::pipeline::ModelIdentity;
using cmn::pipeline::ReportGenerator;

// Exit codes: 0 every study reported; 1 a study or the model failed; 2 bad command line.
constexpr int kExitFailure = 1;

std::optional<ReportGenerator> load_from_checkpoint(const std::string& pth, const std::string& args,
                                                    const std::string& annotation_path) {
  auto config = cmn::model::read_model_config(args);
  auto annotation = cmn::pipeline::read_annotation(annotation_path);
  if (!annotation.ok()) {
    std::cerr << "cmn-generate: " << annotation.status().message() << "\n";
    return std::nullopt;
  }
  std::vector<std::string> reports;
  for (const auto& e : annotation->train) reports.push_back(e.report);
  auto tokenizer = cmn::model::Tokenizer::build(
      reports, cmn::model::cleaning_rule_for_dataset(config.dataset_name), static_cast<int>(config.threshold));
  config.vocab_size = tokenizer.vocab_size();
  auto model = cmn::model::load_r2gencmn(pth, config);
  ModelIdentity identity;
  identity.name = std::filesystem::path(pth).stem().string();
  auto digest = cmn::pipeline::sha256_file(pth);
  if (digest.ok()) identity.digest = "sha256:" + *digest;
  return ReportGenerator(std::move(model), std::move(tokenizer), identity);
}

// `allowed_modalities` receives the bundle's preprocessing.allowed_modalities.
std::optional<ReportGenerator> load_from_bundle(const std::string& dir, std::vector<std::string>& allowed_modalities) {
  auto bundle = cmn::pipeline::load_bundle(dir);
  if (!bundle.ok()) {
    std::cerr << "cmn-generate: " << bundle.status().message() << "\n";
    return std::nullopt;
  }
  ModelIdentity identity;
  identity.name = bundle->info.name;
  identity.version = bundle->info.version;
  identity.digest = bundle->info.digest;
  identity.untrained = bundle->info.untrained;
  allowed_modalities = bundle->info.allowed_modalities;
  return ReportGenerator(std::move(bundle->model), std::move(bundle->tokenizer), identity);
}

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

// --- --dicom ---

bool hidden(const std::filesystem::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

// Files named on the command line, and every regular file under the folders named (recursively, sorted),
// each once. Names starting with '.' inside folders are ignored.
std::vector<std::string> collect_dicom_files(const std::vector<std::string>& paths) {
  namespace fs = std::filesystem;
  std::vector<std::string> files;
  for (const auto& path : paths) {
    if (!fs::is_directory(path)) {
      files.push_back(path);
      continue;
    }
    std::vector<std::string> found;
    for (auto it = fs::recursive_directory_iterator(path, fs::directory_options::skip_permission_denied);
         it != fs::recursive_directory_iterator(); ++it) {
      if (hidden(it->path())) {
        if (it->is_directory()) it.disable_recursion_pending();
        continue;
      }
      if (it->is_regular_file()) found.push_back(it->path().string());
    }
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }
  std::vector<std::string> unique;
  std::set<std::string> seen;
  for (const auto& f : files) {
    std::error_code ec;
    const auto key = fs::weakly_canonical(f, ec).string();
    if (seen.insert(ec ? f : key).second) unique.push_back(f);
  }
  return unique;
}

absl::StatusOr<std::string> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError("cannot open '" + path + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError("cannot read '" + path + "'");
  return ss.str();
}

nlohmann::json slots_json(const cmn::preprocessing::AssembledStudy& study) {
  nlohmann::json slots = nlohmann::json::array();
  for (const auto& s : study.slots) {
    slots.push_back({{"slot", s.slot},
                     {"sop_instance_uid", s.instance.sop_instance_uid},
                     {"series_instance_uid", s.instance.series_instance_uid},
                     {"view", cmn::preprocessing::view_name(s.instance.view)},
                     {"source", s.instance.source},
                     {"reason", s.reason}});
  }
  return slots;
}

nlohmann::json skipped_json(const std::vector<cmn::preprocessing::SkippedInstance>& skipped) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& s : skipped) {
    out.push_back({{"sop_instance_uid", s.instance.sop_instance_uid},
                   {"source", s.instance.source},
                   {"reason", s.reason}});
  }
  return out;
}

// Reads, groups, assembles and reports every study found in `paths`; appends one JSON line per study to
// `lines`. Returns the number of failures (unreadable files and failed studies).
int generate_dicom(ReportGenerator& generator, const std::vector<std::string>& paths,
                   const cmn::pipeline::GeneratorOptions& options,
                   const std::vector<std::string>& allowed_modalities, std::ostringstream& lines) {
  namespace pre = cmn::preprocessing;
  int failures = 0;
  pre::StudyOptions study_options;
  study_options.views = generator.model()->config().effective_views();
  study_options.allowed_modalities = allowed_modalities;
  study_options.image = options.image;

  // 1. What each file is (attributes only; the bytes are read again when its study is assembled).
  std::vector<std::string> files;
  std::vector<pre::InstanceInfo> infos;
  for (const auto& path : collect_dicom_files(paths)) {
    auto bytes = read_bytes(path);
    auto info = bytes.ok() ? pre::read_dicom_info(*bytes, path, study_options.read)
                           : absl::StatusOr<pre::InstanceInfo>(bytes.status());
    if (!info.ok()) {
      ++failures;
      const std::string message(info.status().message());
      std::cerr << "cmn-generate: " << (message.find(path) == std::string::npos ? "'" + path + "': " : "")
                << message << "\n";
      continue;
    }
    if (info->source.empty()) info->source = path;
    files.push_back(path);
    infos.push_back(std::move(*info));
  }

  // 2. Studies, in StudyInstanceUID order.
  const pre::StudyGrouping grouping = pre::group_studies(infos);
  for (size_t i : grouping.unassigned) {
    if (infos[i].is_image) {
      ++failures;
      std::cerr << "cmn-generate: '" << files[i] << "': image without StudyInstanceUID, not used\n";
    } else {
      std::cerr << "cmn-generate: '" << files[i] << "': skipped, " << pre::sop_class_name(infos[i].sop_class_uid)
                << " without StudyInstanceUID\n";
    }
  }
  if (files.empty() && failures == 0) {
    std::cerr << "cmn-generate: no files found under --dicom\n";
    return 1;
  }

  // 3. Assemble and decode `batch_size` studies at a time, so memory stays bounded on large trees.
  const auto& id = generator.identity();
  const size_t batch = static_cast<size_t>(std::max<int64_t>(1, options.batch_size));
  for (size_t first = 0; first < grouping.studies.size(); first += batch) {
    const size_t last = std::min(grouping.studies.size(), first + batch);
    std::vector<nlohmann::json> study_lines;
    std::vector<std::vector<pre::FloatImage>> images;
    std::vector<size_t> decoded;       // index into study_lines of each entry of `images`
    std::vector<double> assemble_s;
    for (size_t g = first; g < last; ++g) {
      const auto& group = grouping.studies[g];
      nlohmann::json line;
      line["study"] = group.study_instance_uid;
      line["model"] = model_json(id);
      if (id.untrained) line["warning"] = "untrained model: random weights, not a report";
      const auto start = std::chrono::steady_clock::now();
      std::vector<pre::InstanceInput> inputs;
      absl::Status status;
      for (size_t m : group.members) {
        auto bytes = read_bytes(files[m]);
        if (!bytes.ok()) {
          status = bytes.status();
          break;
        }
        inputs.push_back({files[m], std::move(*bytes)});
      }
      auto study = status.ok() ? pre::assemble_study(inputs, study_options)
                               : absl::StatusOr<pre::AssembledStudy>(status);
      if (!study.ok()) {
        ++failures;
        add_result(study.status(), group.study_instance_uid, line);
        study_lines.push_back(std::move(line));
        continue;
      }
      line["instances"] = slots_json(*study);
      line["skipped"] = skipped_json(study->skipped);
      decoded.push_back(study_lines.size());
      images.push_back(std::move(study->images));
      assemble_s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      study_lines.push_back(std::move(line));
    }
    const auto results = generator.generate_images(images, options);
    for (size_t i = 0; i < results.size(); ++i) {
      auto& line = study_lines[decoded[i]];
      auto result = results[i];
      if (result.ok()) result->times.preprocess_s += assemble_s[i];
      if (!add_result(result, line["study"].get<std::string>(), line)) ++failures;
    }
    for (const auto& line : study_lines) lines << line.dump() << "\n";
  }
  return failures;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cmn-generate: write draft chest X-ray reports for studies given as image or DICOM files (in process)"};
  std::string checkpoint, args_json, annotation, bundle_dir, output;
  std::vector<std::string> images, dicom_paths;
  std::vector<std::string> modalities = cmn::preprocessing::StudyOptions{}.allowed_modalities;
  std::optional<int64_t> beam_size, max_length;
  std::optional<std::string> sample_method;
  std::optional<double> temperature;
  int threads = 2;
  int64_t batch_size = 8;
  auto* ckpt_opt = app.add_option("--r2gencmn", checkpoint, "R2GenCMN checkpoint (.pth, torch.save format)")
                       ->check(CLI::ExistingFile);
  app.add_option("--args", args_json, "R2GenCMN arguments as JSON (num_layers, d_model, ..., views)")
      ->check(CLI::ExistingFile)->needs(ckpt_opt);
  app.add_option("--annotation", annotation, "annotation.json whose train split rebuilds the vocabulary")
      ->check(CLI::ExistingFile)->needs(ckpt_opt);
  auto* bundle_opt = app.add_option("--bundle", bundle_dir, "model bundle directory (model.yaml, weights, vocab)")
                         ->check(CLI::ExistingDirectory)->excludes(ckpt_opt);
  auto* images_opt =
      app.add_option("--images", images, "image files (PNG/JPEG); each consecutive group of `views` is one study")
          ->check(CLI::ExistingFile);
  app.add_option("--dicom", dicom_paths,
                 "DICOM files or folders (recursive); grouped into studies by StudyInstanceUID, one line each")
      ->check(CLI::ExistingPath)->excludes(images_opt);
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
  app.add_option("--threads", threads, "intra-op threads")->check(CLI::Range(1, 256));
  app.add_option("--batch-size", batch_size, "studies decoded together")->check(CLI::Range(1, 256));
  app.add_option("--output", output, "write JSON lines here (atomically) instead of stdout");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints --help, or the problem
    return code == 0 ? 0 : 2;      // the documented exit code for a bad command line (CLI11 uses 1xx)
  }
  if (images.empty() && dicom_paths.empty()) {
    std::cerr << "cmn-generate: give --images FILE... or --dicom PATH...\n";
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
  (void)bundle_opt;

  cmn::model::warn_if_slow_blas();
  cmn::model::set_threads(threads);

  std::optional<ReportGenerator> generator;
  try {
    std::vector<std::string> bundle_modalities;
    generator = checkpoint.empty() ? load_from_bundle(bundle_dir, bundle_modalities)
                                   : load_from_checkpoint(checkpoint, args_json, annotation);
    if (!bundle_modalities.empty() && modalities_opt->count() == 0) modalities = bundle_modalities;
  } catch (const c10::Error& e) {
    std::cerr << "cmn-generate: " << e.msg() << "\n";
    return kExitFailure;
  }
  if (!generator) return kExitFailure;

  const auto& config = generator->model()->config();
  cmn::pipeline::GeneratorOptions options;
  options.decoding = cmn::model::decoding_options_from(config);
  if (beam_size) options.decoding.beam_size = *beam_size;
  if (max_length) options.decoding.max_length = *max_length;
  if (sample_method) options.decoding.method = *sample_method;
  if (temperature) options.decoding.temperature = *temperature;
  if (sample_method && *sample_method != "beam_search" && !beam_size) options.decoding.beam_size = 1;
  options.batch_size = batch_size;

  const auto& id = generator->identity();
  if (id.untrained) {
    std::cerr << "cmn-generate: NOTE: model '" << id.name << "' is UNTRAINED (random weights): its text is not a report\n";
  }
  std::ostringstream lines;
  int failures = 0;
  if (!dicom_paths.empty()) {
    failures = generate_dicom(*generator, dicom_paths, options, modalities, lines);
  } else {
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
  } else {
    // Atomic: a reader never sees half a file, and an interrupted run leaves the old output in place.
    const std::string tmp = output + ".tmp";
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      out << lines.str();
      out.flush();
      if (!out.good()) {
        std::cerr << "cmn-generate: cannot write '" << tmp << "'\n";
        return kExitFailure;
      }
    }
    if (std::rename(tmp.c_str(), output.c_str()) != 0) {
      std::cerr << "cmn-generate: cannot rename '" << tmp << "' to '" << output << "'\n";
      return kExitFailure;
    }
  }
  return failures == 0 ? 0 : kExitFailure;
}
