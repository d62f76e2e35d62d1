// The pieces of the phantom recipe (issue 8) that cmn-train owns: the parameter-free patch_stats trunk (values
// worked out by hand), trainer.cache_visual_features (the cached path scores exactly what the image path scores,
// and trains), and configs/phantom.yaml itself (it parses and builds). A real training run takes minutes and is
// scripts/build_phantom_bundle.sh's job, not ctest's.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cmn/model/r2gencmn.h"
#include "cmn/phantom/dataset.h"
#include "cmn/train/config.h"
#include "cmn/train/trainer.h"

namespace cmn::train {
namespace {

namespace fs = std::filesystem;

const fs::path kSourceDir = fs::path(__FILE__).parent_path().parent_path().parent_path();

TEST(PatchStatsTrunk, FeaturesWorkedOutByHand) {
  model::VisualExtractor trunk(std::string(model::kPatchStatsTrunk));
  EXPECT_TRUE(trunk->parameters().empty());
  // Grey 0.5 everywhere (all three channels), one pixel of 2.0 at (y 40, x 70): patch row 1 (40 / 32), column 2
  // (70 / 32), so patch 1 * 7 + 2 = 9; inside it sub-block row (40 - 32) / 8 = 1, column (70 - 64) / 8 = 0: 4.
  auto images = torch::full({1, 3, 224, 224}, 0.5);
  images.index_put_({0, torch::indexing::Slice(), 40, 70}, 2.0);
  auto [att, fc] = trunk->forward(images);
  ASSERT_EQ(att.sizes(), (std::vector<int64_t>{1, 49, model::kPatchStatsDim}));
  ASSERT_EQ(fc.sizes(), (std::vector<int64_t>{1, model::kPatchStatsDim}));
  const auto p9 = att[0][9];
  EXPECT_NEAR(p9[4].item<double>(), 0.5 + 1.5 / 64, 1e-6);    // sub-block mean: one of 64 pixels is 1.5 higher
  EXPECT_NEAR(p9[16 + 4].item<double>(), 2.0, 1e-6);          // sub-block max
  EXPECT_NEAR(p9[16 + 5].item<double>(), 0.5, 1e-6);          // a neighbouring sub-block
  // sub-block std: sqrt(E[x^2] - E[x]^2) with 63 pixels of 0.5 and one of 2.0
  const double m = 0.5 + 1.5 / 64, m2 = (63 * 0.25 + 4.0) / 64;
  EXPECT_NEAR(p9[32 + 4].item<double>(), std::sqrt(m2 - m * m), 1e-5);
  EXPECT_NEAR(p9[48].item<double>(), 0.5 + 1.5 / 1024, 1e-6);  // patch mean
  // position codes: row 1, column 2
  for (int k = 0; k < 7; ++k) {
    EXPECT_EQ(p9[50 + k].item<double>(), k == 1 ? 1.0 : 0.0);
    EXPECT_EQ(p9[57 + k].item<double>(), k == 2 ? 1.0 : 0.0);
  }
  // every other patch is flat: std 0, mean 0.5
  EXPECT_NEAR(att[0][0][48].item<double>(), 0.5, 1e-6);
  EXPECT_NEAR(att[0][0][49].item<double>(), 0.0, 1e-3);
  // d_vf must say 64
  model::ModelConfig config;
  config.visual_extractor = model::kPatchStatsTrunk;
  config.d_vf = 2048;
  EXPECT_THROW(model::validate_model_config(config), c10::Error);
  config.visual_extractor = "resnet18";
  config.d_vf = 64;
  EXPECT_THROW(model::validate_model_config(config), c10::Error);
}

class PhantomRecipeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("cmn_phantom_recipe_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    phantom::DatasetOptions o;
    o.studies = 12;
    o.seed = 3;
    o.val_fraction = 0.25;
    o.test_fraction = 0.25;
    o.render.size = 224;
    phantom::write_dataset(dir_.string(), o);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // configs/phantom.yaml, made tiny and deterministic. train_resize = train_crop = 224 and no flip make the
  // training transform of a 224x224 phantom the evaluation transform, so cached and uncached see the same pixels.
  TrainConfig config(bool cached) const {
    return load_train_config((kSourceDir / "configs/phantom.yaml").string(),
                             {"data.annotation=" + (dir_ / "annotation.json").string(),
                              "data.image_dir=" + (dir_ / "images").string(), "data.batch_size=4", "data.train_resize=224",
                              "model.d_model=32", "model.d_ff=32", "model.cmm_dim=32", "model.cmm_size=64", "model.topk=8",
                              "model.num_layers=1", "model.max_seq_length=20", "model.threshold=1", "model.dropout=0",
                              "model.drop_prob_lm=0", "model.attention_dropout=0", "model.memory_dropout=0",
                              "trainer.save_dir=" + (dir_ / (cached ? "cached" : "images")).string(),
                              "trainer.cache_visual_features=" + std::string(cached ? "true" : "false"),
                              "trainer.progress=false", "trainer.epochs=1", "trainer.max_steps_per_epoch=2"});
  }
  fs::path dir_;
};

TEST_F(PhantomRecipeTest, CachedFeaturesScoreExactlyAsImagesAndTrain) {
  Trainer images(config(false));
  Trainer cached(config(true));
  // Same seed, same initial weights (torch::manual_seed in each constructor).
  const auto a = images.evaluate("val");
  const auto b = cached.evaluate("val");
  ASSERT_EQ(a.ids, b.ids);
  EXPECT_NEAR(a.loss, b.loss, 1e-5);
  EXPECT_EQ(a.predictions, b.predictions);
  // The trainer reports clinical efficacy too: CheXpert-14 and the phantom's six findings.
  EXPECT_FALSE(std::isnan(b.metric("CE_F1_MACRO")));
  EXPECT_FALSE(std::isnan(b.metric("CE_phantom_macro_F1")));
  // Training on the cache moves the weights and gives a finite loss.
  const auto before = cached.model()->encoder_decoder->parameters()[0].clone();
  const double loss = cached.train_epoch(1);
  EXPECT_TRUE(std::isfinite(loss));
  EXPECT_FALSE(torch::equal(before, cached.model()->encoder_decoder->parameters()[0]));
}

TEST_F(PhantomRecipeTest, CacheNeedsAFrozenTrunk) {
  auto c = config(true);
  c.model.visual_extractor = model::kResNet101Trunk;
  c.model.d_vf = 2048;
  c.trainer.freeze_visual_extractor = false;
  EXPECT_THROW(Trainer{c}, c10::Error);
}

}  // namespace
}  // namespace cmn::train
