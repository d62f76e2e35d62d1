// cmn-bundle: makes and checks model bundles (see cmn/pipeline/bundle.h).
//   cmn-bundle import --r2gencmn M.pth --args config.json --annotation annotation.json --out DIR [--name N --version V]
//   cmn-bundle init-untrained --out DIR [--vocab FILE | --annotation annotation.json] [--views 4] [--seed 1]
//   cmn-bundle verify DIR [--load]
// Exit codes: 0 ok, 1 the operation failed, 2 bad command line. Errors are one line on stderr.
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "cmn/common/main_init.h"
#include "cmn/common/cli.h"

#include "absl/status/status.h"
#include "cmn/pipeline/bundle.h"

namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

using cmn::one_line;

int fail(const absl::Status& status) {
  std::cerr << "cmn-bundle: " << one_line(std::string(status.message())) << "\n";
  return kExitFailure;
}

void print_info(const cmn::pipeline::BundleInfo& info) {
  std::cout << "name: " << info.name << "\n"
            << "version: " << info.version << "\n"
            << "digest: " << info.digest << "\n"
            << "untrained: " << (info.untrained ? "true" : "false") << "\n";
}

// The vocabulary shipped in the repository: found from the working directory (README's commands run from the
// checkout) or, failing that, in the source tree this binary was built from.
std::string default_vocab_file() {
  const std::string relative = "configs/default_vocab.txt";
  std::error_code ec;
  if (std::filesystem::exists(relative, ec)) return relative;
#ifdef CMN_SOURCE_DIR
  const std::string in_source = std::string(CMN_SOURCE_DIR) + "/" + relative;
  if (std::filesystem::exists(in_source, ec)) return in_source;
#endif
  return relative;  // the error will name the path that was tried
}

}  // namespace

int main(int argc, char** argv) {
  cmn::init_logging(argv[0]);  // LibTorch logs through glog
  CLI::App app{"cmn-bundle: create, import and verify cmn model bundles", "cmn-bundle"};
  app.require_subcommand(1);

  // import
  std::string checkpoint, args_json, annotation, out_dir;
  cmn::pipeline::ImportOptions import_options;
  CLI::App* import_cmd = app.add_subcommand("import", "turn an R2GenCMN checkpoint + annotation.json into a bundle");
  import_cmd->add_option("--r2gencmn", checkpoint, "R2GenCMN checkpoint (.pth, torch.save)")->required();
  import_cmd->add_option("--args", args_json, "the run's arguments as a JSON object (main_train.py names)")->required();
  import_cmd->add_option("--annotation", annotation, "annotation.json; the vocabulary is rebuilt from its train split")
      ->required();
  import_cmd->add_option("--out", out_dir, "bundle directory to create")->required();
  import_cmd->add_option("--name", import_options.name, "bundle name")->capture_default_str();
  import_cmd->add_option("--version", import_options.version, "bundle version")->capture_default_str();
  import_cmd->add_option("--weights-dtype", import_options.weights_dtype,
                         "float32 | float16 (default: as stored in the checkpoint)")
      ->check(CLI::IsMember({"float32", "float16"}));
  import_cmd->add_flag("--force", import_options.overwrite, "replace an existing bundle directory");

  // init-untrained
  cmn::pipeline::InitUntrainedOptions init_options;
  std::string init_out;
  CLI::App* init_cmd = app.add_subcommand("init-untrained", "a randomly initialised bundle for demos and tests");
  init_cmd->add_option("--out", init_out, "bundle directory to create")->required();
  CLI::Option* vocab_opt =
      init_cmd->add_option("--vocab", init_options.vocab_file, "vocabulary file (default: configs/default_vocab.txt)");
  CLI::Option* ann_opt = init_cmd->add_option("--annotation", init_options.annotation_json,
                                              "build the vocabulary from this annotation.json's train split");
  vocab_opt->excludes(ann_opt);
  init_cmd->add_option("--views", init_options.views, "images per study")->check(CLI::Range(1, 4))->capture_default_str();
  init_cmd->add_option("--seed", init_options.seed, "torch seed for the random weights")->capture_default_str();
  init_cmd->add_option("--name", init_options.name, "bundle name")->capture_default_str();
  init_cmd->add_option("--version", init_options.version, "bundle version")->capture_default_str();
  init_cmd->add_option("--dataset", init_options.dataset_name, "iu_xray | mimic_cxr (report cleaning rule)")
      ->check(CLI::IsMember({"iu_xray", "mimic_cxr"}))
      ->capture_default_str();
  init_cmd->add_flag("--force", init_options.overwrite, "replace an existing bundle directory");
  init_cmd->add_option("--align-queries", init_options.align_queries,
                       "with an (untrained) image-report alignment head of this many queries: drafts get a "
                       "consistency (random until trained)")
      ->check(CLI::Range(int64_t{0}, int64_t{256}))->capture_default_str();

  // verify
  std::string verify_dir;
  bool verify_load = false;
  CLI::App* verify_cmd = app.add_subcommand("verify", "check a bundle's checksums and model.yaml; print its identity");
  verify_cmd->add_option("dir", verify_dir, "bundle directory")->required();
  verify_cmd->add_flag("--load", verify_load, "also load the vocabulary and the weights into the network");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    std::cerr << "cmn-bundle: " << one_line(e.what()) << " (run with --help for usage)\n";
    return kExitUsage;
  }

  try {
    if (*import_cmd) {
      auto info = cmn::pipeline::import_r2gencmn(checkpoint, args_json, annotation, out_dir, import_options);
      if (!info.ok()) return fail(info.status());
      print_info(*info);
      return 0;
    }
    if (*init_cmd) {
      if (init_options.vocab_file.empty() && init_options.annotation_json.empty()) {
        init_options.vocab_file = default_vocab_file();
      }
      auto info = cmn::pipeline::init_untrained(init_out, init_options);
      if (!info.ok()) return fail(info.status());
      print_info(*info);
      return 0;
    }
    if (*verify_cmd) {
      if (verify_load) {
        auto bundle = cmn::pipeline::load_bundle(verify_dir);
        if (!bundle.ok()) return fail(bundle.status());
        print_info(bundle->info);
      } else {
        auto info = cmn::pipeline::read_bundle_info(verify_dir);
        if (!info.ok()) return fail(info.status());
        print_info(*info);
      }
      return 0;
    }
  } catch (const std::exception& e) {
    // The library returns Status; this only catches what should never escape it (e.g. bad_alloc).
    std::cerr << "cmn-bundle: " << one_line(e.what()) << "\n";
    return kExitFailure;
  }
  return kExitUsage;
}
