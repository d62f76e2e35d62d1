// cmn-phantom: writes procedural 4-view chest radiograph phantoms with known findings and their reports.
//   cmn-phantom --out DIR [--studies 3000] [--seed 1] [--size 256] [--dicom] [--no-png]
//               [--val-fraction 0.1] [--test-fraction 0.2] [--real-sentences annotation.json]
// See cmn/phantom/phantom.h for what each finding does to the pixels and cmn/phantom/dataset.h for the layout.
// Same arguments, same bytes. Prints one JSON line: split sizes and per-finding positives.
// Exit codes: 0 written, 1 failure (one line on stderr naming it), 2 bad command line.
#include <exception>
#include <iostream>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cmn/phantom/dataset.h"
#include "cmn/phantom/phantom.h"

int main(int argc, char** argv) {
  CLI::App app{"cmn-phantom: procedural chest radiograph phantoms with known findings and reports", "cmn-phantom"};
  std::string out_dir, real_sentences;
  cmn::phantom::DatasetOptions options;
  bool no_png = false;
  app.add_option("--out", out_dir, "output directory (created if missing)")->required();
  app.add_option("--studies", options.studies, "number of 4-view studies")->check(CLI::Range(1, 1000000))->capture_default_str();
  app.add_option("--seed", options.seed, "dataset seed")->capture_default_str();
  app.add_option("--size", options.render.size, "width = height of every view in pixels")
      ->check(CLI::Range(64, 4096))
      ->capture_default_str();
  app.add_option("--val-fraction", options.val_fraction, "fraction of studies in the val split")
      ->check(CLI::Range(0.0, 0.9))
      ->capture_default_str();
  app.add_option("--test-fraction", options.test_fraction, "fraction of studies in the test split")
      ->check(CLI::Range(0.0, 0.9))
      ->capture_default_str();
  app.add_option("--prevalence", options.draw.prevalence, "probability of each finding in an abnormal study")
      ->check(CLI::Range(0.01, 1.0))
      ->capture_default_str();
  app.add_option("--normal-fraction", options.draw.normal_fraction, "fraction of studies without any finding")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_flag("--dicom", options.dicom, "also write DICOM studies (CR/DX, MONOCHROME1/2, five transfer syntaxes)");
  app.add_flag("--no-png", no_png, "do not write PNG views (annotation.json still names them)");
  app.add_option("--real-sentences", real_sentences,
                 "R2Gen annotation.json whose train-split sentences (picked by the label extractor) replace the templates");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::cerr << "cmn-phantom: " << e.what() << " (run with --help for usage)\n";
    return 2;
  }
  options.png = !no_png;
  try {
    std::optional<cmn::phantom::SentenceBank> bank;
    if (!real_sentences.empty()) {
      bank = cmn::phantom::SentenceBank::from_annotation(real_sentences);
      if (!bank->complete()) {
        std::cerr << "cmn-phantom: " << real_sentences << " lacks a positive or negative sentence for some finding ("
                  << bank->summary() << "); those fall back to the templates\n";
      }
      options.bank = &*bank;
    }
    const auto s = cmn::phantom::write_dataset(out_dir, options);
    nlohmann::ordered_json out = {{"out", out_dir}, {"train", s.train}, {"val", s.val}, {"test", s.test}, {"normal", s.normal}};
    for (int f = 0; f < cmn::phantom::kNumFindings; ++f) {
      out["positives"][cmn::metrics::finding_name(static_cast<cmn::phantom::Finding>(f))] = s.positives[static_cast<std::size_t>(f)];
    }
    if (bank) out["sentence_bank"] = bank->summary();
    std::cout << out.dump() << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "cmn-phantom: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
