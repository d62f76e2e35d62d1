// cmn-generate: offline report generation in process (no server).
//   cmn-generate --r2gencmn MODEL.pth --args config.json --annotation annotation.json --images A.png B.png ...
//   cmn-generate --bundle DIR --images ...
// Each consecutive group of `views` images is one study. One JSON line per study on stdout or --output.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cmn/model/runtime.h"
#include "cmn/pipeline/annotation.h"
#include "cmn/pipeline/bundle.h"
#include "cmn/pipeline/report_generator.h"

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

std::optional<ReportGenerator> load_from_bundle(const std::string& dir) {
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
  return ReportGenerator(std::move(bundle->model), std::move(bundle->tokenizer), identity);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cmn-generate: write draft chest X-ray reports for studies given as image files (in process)"};
  std::string checkpoint, args_json, annotation, bundle_dir, output;
  std::vector<std::string> images;
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
  app.add_option("--images", images, "image files (PNG/JPEG); each consecutive group of `views` is one study")
      ->required()->check(CLI::ExistingFile);
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
    return app.exit(e);  // prints the problem; exit code 2 for usage errors (CLI11's convention: non-zero)
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
    generator = checkpoint.empty() ? load_from_bundle(bundle_dir) : load_from_checkpoint(checkpoint, args_json, annotation);
  } catch (const c10::Error& e) {
    std::cerr << "cmn-generate: " << e.msg() << "\n";
    return kExitFailure;
  }
  if (!generator) return kExitFailure;

  const auto& config = generator->model()->config();
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

  cmn::pipeline::GeneratorOptions options;
  options.decoding = cmn::model::decoding_options_from(config);
  if (beam_size) options.decoding.beam_size = *beam_size;
  if (max_length) options.decoding.max_length = *max_length;
  if (sample_method) options.decoding.method = *sample_method;
  if (temperature) options.decoding.temperature = *temperature;
  if (sample_method && *sample_method != "beam_search" && !beam_size) options.decoding.beam_size = 1;
  options.batch_size = batch_size;

  auto results = generator->generate_files(studies, options);

  const auto& id = generator->identity();
  if (id.untrained) {
    std::cerr << "cmn-generate: NOTE: model '" << id.name << "' is UNTRAINED (random weights): its text is not a report\n";
  }
  std::ostringstream lines;
  int failures = 0;
  for (size_t s = 0; s < results.size(); ++s) {
    nlohmann::json line;
    line["study"] = s;
    line["images"] = studies[s];
    line["model"] = {{"name", id.name}, {"version", id.version}, {"digest", id.digest}, {"untrained", id.untrained}};
    if (results[s].ok()) {
      const auto& r = *results[s];
      line["report"] = r.report;
      line["token_ids"] = r.token_ids;
      line["log_prob"] = r.log_prob;
      line["timings"] = {{"preprocess_s", r.times.preprocess_s}, {"visual_s", r.times.visual_s},
                         {"encode_s", r.times.encode_s}, {"decode_s", r.times.decode_s}};
    } else {
      ++failures;
      line["error"] = std::string(results[s].status().message());
      std::cerr << "cmn-generate: study " << s << ": " << results[s].status().message() << "\n";
    }
    if (id.untrained) line["warning"] = "untrained model: random weights, not a report";
    lines << line.dump() << "\n";
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
