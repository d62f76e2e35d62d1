// cmn-train's loss.png: gnuplot draws train loss and val BLEU-4 / CIDEr from the epoch history after every epoch
// (skipped where gnuplot is not installed: a missing gnuplot is a warning in cmn-train, not a failure); and
// best.json, the epoch selected on val with the test scores of that epoch.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cmn/phantom/dataset.h"
#include "cmn/train/config.h"
#include "cmn/train/trainer.h"

namespace cmn::train {
namespace {

namespace fs = std::filesystem;

const fs::path kSourceDir = fs::path(__FILE__).parent_path().parent_path().parent_path();

bool is_png(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[8] = {};
  in.read(magic, 8);
  return in && std::string(magic, 8) == std::string("\x89PNG\r\n\x1a\n", 8);
}

// A tiny cmn-train run (phantom studies, cached features, a step per epoch) in `dir`/run.
void tiny_run(const fs::path& dir, int epochs, const std::vector<std::string>& extra = {}) {
  fs::remove_all(dir);
  phantom::DatasetOptions d;
  d.studies = 8;
  d.seed = 9;
  d.val_fraction = 0.25;
  d.test_fraction = 0.25;
  d.render.size = 224;
  phantom::write_dataset(dir.string(), d);
  std::vector<std::string> overrides = {
      "data.annotation=" + (dir / "annotation.json").string(), "data.image_dir=" + (dir / "images").string(),
      "data.batch_size=2", "model.d_model=32", "model.d_ff=32", "model.cmm_dim=32", "model.cmm_size=64",
      "model.topk=8", "model.num_layers=1", "model.max_seq_length=10", "model.threshold=1", "model.beam_size=1",
      "trainer.save_dir=" + (dir / "run").string(), "trainer.cache_visual_features=true",
      "trainer.progress=false", "trainer.epochs=" + std::to_string(epochs), "trainer.max_steps_per_epoch=1",
      "trainer.bundle_dir=none"};
  overrides.insert(overrides.end(), extra.begin(), extra.end());
  Trainer trainer(load_train_config((kSourceDir / "configs/phantom.yaml").string(), overrides));
  trainer.run();
}

TEST(TrainPlotTest, LossPngIsDrawnAfterEachEpoch) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) GTEST_SKIP() << "gnuplot is not installed";
  const fs::path dir = fs::temp_directory_path() / ("cmn_train_plot_" + std::to_string(::getpid()));
  tiny_run(dir, 1, {"trainer.eval_splits=[val]"});
  const fs::path png = dir / "run" / "loss.png";
  ASSERT_TRUE(fs::exists(png));
  EXPECT_TRUE(is_png(png));
  EXPECT_GT(fs::file_size(png), 1000u);
  EXPECT_FALSE(fs::exists(dir / "run" / "loss.png.tmp"));  // drawn beside it, then renamed
  fs::remove_all(dir);
}

TEST(TrainSelectionTest, BestJsonHoldsTheSelectedEpochWithItsOwnTestScores) {
  const fs::path dir = fs::temp_directory_path() / ("cmn_train_select_" + std::to_string(::getpid()));
  // Selection on val loss (min) makes the choice depend on the numbers, not on ties of BLEU at 0.
  tiny_run(dir, 3, {"trainer.monitor_metric=loss", "trainer.monitor_mode=min", "optim.lr_ed=5e-3",
                    "trainer.eval_splits=[val, test]"});
  std::vector<nlohmann::json> epochs;
  std::ifstream in(dir / "run" / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) epochs.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(epochs.size(), 3u);
  size_t want = 0;  // ties go to the later epoch (>= / <=, as R2GenCMN)
  for (size_t i = 0; i < epochs.size(); ++i) {
    if (epochs[i]["val_loss"].get<double>() <= epochs[want]["val_loss"].get<double>()) want = i;
  }
  std::ifstream best_in(dir / "run" / "best.json");
  ASSERT_TRUE(best_in.good());
  const auto best = nlohmann::json::parse(best_in);
  EXPECT_EQ(best["epoch"].get<int64_t>(), epochs[want]["epoch"].get<int64_t>());
  EXPECT_EQ(best["monitor"], "val_loss");
  EXPECT_DOUBLE_EQ(best["test_loss"].get<double>(), epochs[want]["test_loss"].get<double>());
  EXPECT_DOUBLE_EQ(best["test_BLEU_4"].get<double>(), epochs[want]["test_BLEU_4"].get<double>());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace cmn::train
