// The annotation.json loader of cmn_train: view selection, torchvision's Resize(int) sizes, the train
// transform, determinism under a seed whatever the worker count, padding, and bad images (skip / fatal).
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <unistd.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cmn/model/tokenizer.h"
#include "cmn/preprocessing/image_pipeline.h"
#include "cmn/train/data.h"

namespace cmn::train {
namespace {

namespace fs = std::filesystem;

std::string dev_image(int study, int view) {
  return std::string(CMN_SHARED_DIR) + "/parity/dev/images/study" + std::to_string(study) + "_view" +
         std::to_string(view) + ".png";
}

TEST(TrainDataTest, ResizeShorterSideAsTorchvision) {
  EXPECT_EQ(resize_shorter_side(1024, 1024, 256), std::make_pair(256, 256));
  EXPECT_EQ(resize_shorter_side(300, 600, 256), std::make_pair(256, 512));
  EXPECT_EQ(resize_shorter_side(600, 300, 256), std::make_pair(512, 256));
  EXPECT_EQ(resize_shorter_side(333, 500, 256), std::make_pair(256, 384));  // int(384.38...)
  EXPECT_EQ(resize_shorter_side(500, 333, 256), std::make_pair(384, 256));
}

TEST(TrainDataTest, SelectViewPathsTakesFirstNAndRepeatsWhenShort) {
  EXPECT_EQ(select_view_paths({"a", "b", "c"}, 2), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(select_view_paths({"a", "b"}, 4), (std::vector<std::string>{"a", "b", "a", "b"}));
  EXPECT_EQ(select_view_paths({"a"}, 3), (std::vector<std::string>{"a", "a", "a"}));
  EXPECT_TRUE(select_view_paths({}, 2).empty());
}

TEST(TrainDataTest, TrainTransformWithoutCropOrFlipEqualsEvalTransform) {
  auto rgb = preprocessing::read_rgb8(dev_image(0, 0));
  ASSERT_TRUE(rgb.ok()) << rgb.status();
  auto small = preprocessing::resize_bilinear_pil(*rgb, 224, 224);
  TransformOptions o;
  o.train_resize = 224;
  o.train_crop = 224;
  o.horizontal_flip = false;
  std::mt19937_64 rng(1);
  auto train = train_transform(small, o, rng);
  auto eval = eval_transform(small, o);
  ASSERT_EQ(train.data.size(), eval.data.size());
  EXPECT_EQ(train.data, eval.data);
}

TEST(TrainDataTest, TrainTransformCropsAndFlipsDeterministically) {
  auto rgb = preprocessing::read_rgb8(dev_image(0, 1));
  ASSERT_TRUE(rgb.ok()) << rgb.status();
  TransformOptions o;
  std::mt19937_64 r1(5), r2(5);
  auto a = train_transform(*rgb, o, r1);
  auto b = train_transform(*rgb, o, r2);
  EXPECT_EQ(a.height, 224);
  EXPECT_EQ(a.width, 224);
  EXPECT_EQ(a.data, b.data);
  // Over several draws, both flipped and unflipped crops occur and crops move.
  std::set<std::vector<float>> distinct;
  std::mt19937_64 r(7);
  for (int i = 0; i < 6; ++i) distinct.insert(train_transform(*rgb, o, r).data);
  EXPECT_GT(distinct.size(), 1u);
}

class TrainLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("cmn_train_loader_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    std::ofstream(dir_ / "corrupt.png") << "not a png at all";
    std::vector<std::string> reports = {"the heart is normal .", "no acute disease .", "the lungs are clear .",
                                        "heart size is normal . the lungs are clear ."};
    tokenizer_ = model::Tokenizer::build(reports, model::CleaningRule::kIuXray, 1);
    for (int i = 0; i < 8; ++i) {
      pipeline::AnnotationExample e;
      e.id = "s" + std::to_string(i);
      e.report = reports[static_cast<size_t>(i) % reports.size()];
      e.image_paths = {dev_image(i % 2, i % 4), dev_image((i + 1) % 2, (i + 1) % 4)};
      split_.push_back(e);
    }
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::vector<Example> examples(int64_t views = 2) const {
    ExampleOptions o;
    o.views = views;
    return make_examples(split_, tokenizer_, o);
  }
  static LoaderOptions train_options(int workers) {
    LoaderOptions o;
    o.batch_size = 3;
    o.shuffle = true;
    o.augment = true;
    o.seed = 11;
    o.num_workers = workers;
    o.prefetch_batches = 2;
    return o;
  }
  static std::vector<Batch> all(DataLoader& loader, int64_t epoch) {
    loader.start_epoch(epoch);
    std::vector<Batch> out;
    while (auto b = loader.next()) out.push_back(std::move(*b));
    return out;
  }

  fs::path dir_;
  model::Tokenizer tokenizer_;
  std::vector<pipeline::AnnotationExample> split_;
};

TEST_F(TrainLoaderTest, BatchesHaveShapesPaddingAndMasks) {
  auto ex = examples(3);
  DataLoader loader(ex, train_options(2));
  EXPECT_EQ(loader.num_batches(), 3);
  auto batches = all(loader, 1);
  ASSERT_EQ(batches.size(), 3u);
  int64_t total = 0;
  for (const auto& b : batches) {
    const int64_t n = static_cast<int64_t>(b.ids.size());
    total += n;
    EXPECT_EQ(b.images.sizes(), (std::vector<int64_t>{n, 3, 3, 224, 224}));
    EXPECT_EQ(b.targets.size(0), n);
    EXPECT_EQ(b.targets.sizes(), b.masks.sizes());
    for (int64_t i = 0; i < n; ++i) {
      const auto& ids = ex[static_cast<size_t>(b.indices[static_cast<size_t>(i)])].ids;
      EXPECT_EQ(b.masks[i].sum().item<double>(), static_cast<double>(ids.size()));
      EXPECT_EQ(b.targets[i][0].item<int64_t>(), 0);
      EXPECT_EQ(b.targets[i][static_cast<int64_t>(ids.size()) - 1].item<int64_t>(), 0);  // eos
    }
  }
  EXPECT_EQ(total, 8);
}

TEST_F(TrainLoaderTest, SameSeedSameBatchesWhateverTheWorkerCount) {
  DataLoader serial(examples(), train_options(0));
  DataLoader threaded(examples(), train_options(3));
  auto a = all(serial, 2);
  auto b = all(threaded, 2);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].ids, b[i].ids);
    EXPECT_TRUE(torch::equal(a[i].images, b[i].images)) << "batch " << i;
    EXPECT_TRUE(torch::equal(a[i].targets, b[i].targets));
  }
  // Another epoch: another order (8! orders) and other crops.
  EXPECT_NE(serial.epoch_order(2), serial.epoch_order(3));
  auto c = all(serial, 3);
  EXPECT_FALSE(torch::equal(a[0].images, c[0].images));
}

TEST_F(TrainLoaderTest, MaxSeqLengthTruncatesAsTheReference) {
  ExampleOptions o;
  o.max_seq_length = 4;
  auto ex = make_examples(split_, tokenizer_, o);
  for (const auto& e : ex) EXPECT_LE(e.ids.size(), 4u);
  EXPECT_EQ(ex[3].ids.size(), 4u);  // the long report lost its tail (and its final 0), as ids[:max_seq_length]
  EXPECT_NE(ex[3].ids.back(), 0);
}

TEST_F(TrainLoaderTest, MissingOrCorruptImageIsSkippedWithItsPath) {
  split_[1].image_paths = {(dir_ / "missing.png").string()};
  split_[4].image_paths = {dev_image(0, 0), (dir_ / "corrupt.png").string()};
  LoaderOptions o = train_options(2);
  o.on_bad_image = BadImagePolicy::kSkip;
  DataLoader loader(examples(), o);
  auto batches = all(loader, 1);
  int64_t kept = 0;
  std::vector<std::string> skipped;
  for (const auto& b : batches) {
    kept += static_cast<int64_t>(b.ids.size());
    skipped.insert(skipped.end(), b.skipped.begin(), b.skipped.end());
    for (const auto& id : b.ids) EXPECT_TRUE(id != "s1" && id != "s4");
  }
  EXPECT_EQ(kept, 6);
  ASSERT_EQ(skipped.size(), 2u);
  std::string all_messages = skipped[0] + "\n" + skipped[1];
  EXPECT_NE(all_messages.find("missing.png"), std::string::npos) << all_messages;
  EXPECT_NE(all_messages.find("corrupt.png"), std::string::npos) << all_messages;
}

TEST_F(TrainLoaderTest, MissingImageIsFatalWhenAskedAndNamesThePath) {
  split_[2].image_paths = {(dir_ / "missing.png").string()};
  LoaderOptions o = train_options(2);
  o.on_bad_image = BadImagePolicy::kFatal;
  DataLoader loader(examples(), o);
  loader.start_epoch(1);
  try {
    while (loader.next()) {
    }
    FAIL() << "no error for a missing image";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing.png"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("s2"), std::string::npos) << e.what();
  }
}

TEST_F(TrainLoaderTest, EvaluationBatchesUseTheTestTransformInOrder) {
  LoaderOptions o;
  o.batch_size = 4;
  o.num_workers = 1;
  DataLoader loader(examples(), o);
  auto batches = all(loader, 1);
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0].ids, (std::vector<std::string>{"s0", "s1", "s2", "s3"}));
  auto want = preprocessing::load_model_input(dev_image(0, 0));
  ASSERT_TRUE(want.ok());
  auto got = batches[0].images[0][0].contiguous();
  EXPECT_TRUE(torch::equal(got, torch::from_blob(want->data.data(), {3, 224, 224}, torch::kFloat)));
}

}  // namespace
}  // namespace cmn::train
