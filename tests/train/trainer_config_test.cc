// cmn-train's YAML recipes: defaults as the schema, dotted overrides, errors that name the key, and the
// shipped configs carrying R2GenCMN's published values (train_iu_xray.sh, train_mimic_cxr.sh).
#include <filesystem>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cmn/train/config.h"

namespace cmn::train {
namespace {

std::string config_file(const std::string& name) {
  return (std::filesystem::path(__FILE__).parent_path().parent_path().parent_path() / "configs" / name).string();
}

std::string error_of(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  try {
    parse_train_config(yaml, "test.yaml", overrides);
  } catch (const c10::Error& e) {
    return e.msg();
  }
  return "";
}

TEST(TrainConfigTest, EmptyFileGivesReferenceDefaults) {
  auto c = parse_train_config("", "empty.yaml");
  EXPECT_EQ(c.optim.lr_ve, 5e-5);  // main_train.py defaults
  EXPECT_EQ(c.optim.lr_ed, 7e-4);
  EXPECT_EQ(c.optim.beta2, 0.98);
  EXPECT_EQ(c.optim.eps, 1e-9);
  EXPECT_TRUE(c.optim.amsgrad);
  EXPECT_EQ(c.scheduler.step_size, 50);
  EXPECT_EQ(c.dropout.att_embed, 0.5);
  EXPECT_EQ(c.dropout.attention, 0.1);
  EXPECT_EQ(c.trainer.monitor_metric, "BLEU_4");
}

TEST(TrainConfigTest, OverridesApplyAfterTheFile) {
  auto c = parse_train_config("optim:\n  lr_ed: 1.0e-3\n", "t.yaml",
                              {"optim.lr_ed=5e-4", "data.batch_size=8", "trainer.eval_splits=[test]",
                               "model.views=4", "trainer.resume="});
  EXPECT_EQ(c.optim.lr_ed, 5e-4);
  EXPECT_EQ(c.data.batch_size, 8);
  EXPECT_EQ(c.trainer.eval_splits, std::vector<std::string>{"test"});
  EXPECT_EQ(c.model.views, 4);
  EXPECT_EQ(c.trainer.resume, "");
}

TEST(TrainConfigTest, UnknownKeysAreErrorsNamingThem) {
  EXPECT_NE(error_of("optim:\n  lr_edd: 1\n").find("optim.lr_edd"), std::string::npos);
  EXPECT_NE(error_of("optimizer:\n  lr: 1\n").find("'optimizer'"), std::string::npos);
  EXPECT_NE(error_of("", {"optim.lr_edd=1"}).find("optim.lr_edd"), std::string::npos);
  EXPECT_NE(error_of("", {"lr_ed=1"}).find("lr_ed"), std::string::npos);
  EXPECT_NE(error_of("", {"optim.lr_ed"}).find("key=value"), std::string::npos);
}

TEST(TrainConfigTest, BadValuesAreErrorsNamingTheKey) {
  EXPECT_NE(error_of("optim:\n  lr_ed: abc\n").find("optim.lr_ed"), std::string::npos);
  EXPECT_NE(error_of("", {"data.on_bad_image=ignore"}).find("on_bad_image"), std::string::npos);
  EXPECT_NE(error_of("", {"trainer.run_type=fit"}).find("run_type"), std::string::npos);
  EXPECT_NE(error_of("", {"optim.betas=[0.9]"}).find("optim.betas"), std::string::npos);
  EXPECT_NE(error_of("", {"model.views=7"}).find("views"), std::string::npos);
  EXPECT_NE(error_of("data: 3\n").find("data"), std::string::npos);
  EXPECT_NE(error_of("", {"trainer.device=tpu"}).find("trainer.device 'tpu'"), std::string::npos);
  EXPECT_NE(error_of("", {"trainer.device=cuda:x"}).find("trainer.device"), std::string::npos);
}

TEST(TrainConfigTest, AlignmentIsOffByDefaultAndItsSettingsMustAgreeWithTheModel) {
  auto c = parse_train_config("", "empty.yaml");
  EXPECT_EQ(c.model.align_queries, 0);
  EXPECT_FALSE(c.align.active());
  EXPECT_FALSE(c.align.retrieval_index);
  c = parse_train_config("model:\n  align_queries: 32\nalign:\n  pretrain_epochs: 2\n  itm_weight: 0.5\n", "a.yaml",
                         {"trainer.epochs=5", "align.retrieval_index=true"});
  EXPECT_EQ(c.model.align_queries, 32);
  EXPECT_EQ(c.align.pretrain_epochs, 2);
  EXPECT_EQ(c.align.itm_weight, 0.5);
  EXPECT_TRUE(c.align.retrieval_index);
  // Losses for a head the model does not have, a head nothing trains, no epoch left for the reports.
  EXPECT_NE(error_of("", {"align.itc_weight=1"}).find("model.align_queries"), std::string::npos);
  EXPECT_NE(error_of("", {"align.retrieval_index=true"}).find("model.align_queries"), std::string::npos);
  EXPECT_NE(error_of("", {"model.align_queries=8"}).find("nothing trains the head"), std::string::npos);
  EXPECT_NE(error_of("", {"model.align_queries=8", "align.pretrain_epochs=3", "trainer.epochs=3"})
                .find("no report-generation epoch"), std::string::npos);
  EXPECT_NE(error_of("", {"align.itm_weight=-1"}).find("align.pretrain_epochs, itc_weight and itm_weight"),
            std::string::npos);
  EXPECT_NE(error_of("", {"model.align_queries=-1"}).find("align_queries"), std::string::npos);
  // Scoring a checkpoint that has the head trains nothing, and needs no align settings.
  EXPECT_NO_THROW(parse_train_config("", "t.yaml", {"model.align_queries=8", "trainer.run_type=test"}));
}

TEST(TrainConfigTest, ShippedRecipesCarryThePublishedValues) {
  auto iu = load_train_config(config_file("iu_xray.yaml"));
  EXPECT_EQ(iu.model.dataset_name, "iu_xray");
  EXPECT_EQ(iu.model.views, 2);
  EXPECT_EQ(iu.model.max_seq_length, 60);
  EXPECT_EQ(iu.model.threshold, 3);
  EXPECT_EQ(iu.trainer.epochs, 100);
  EXPECT_EQ(iu.data.batch_size, 16);
  EXPECT_EQ(iu.optim.lr_ve, 1e-4);
  EXPECT_EQ(iu.optim.lr_ed, 5e-4);
  EXPECT_EQ(iu.scheduler.step_size, 10);
  EXPECT_EQ(iu.scheduler.gamma, 0.8);
  EXPECT_EQ(iu.trainer.seed, 7580u);
  EXPECT_EQ(iu.model.beam_size, 3);

  auto mimic = load_train_config(config_file("mimic_cxr.yaml"));
  EXPECT_EQ(mimic.model.dataset_name, "mimic_cxr");
  EXPECT_EQ(mimic.model.views, 1);
  EXPECT_EQ(mimic.model.max_seq_length, 100);
  EXPECT_EQ(mimic.model.threshold, 10);
  EXPECT_EQ(mimic.trainer.epochs, 30);
  EXPECT_EQ(mimic.scheduler.step_size, 3);
  EXPECT_EQ(mimic.scheduler.gamma, 0.8);
  EXPECT_EQ(mimic.trainer.seed, 9153u);
  EXPECT_EQ(mimic.optim.lr_ve, 1e-4);
  EXPECT_EQ(mimic.optim.lr_ed, 5e-4);

  auto four = load_train_config(config_file("four_view.yaml"));
  EXPECT_EQ(four.model.views, 4);
}

TEST(TrainConfigTest, EffectiveConfigRoundTripsThroughYaml) {
  auto c = load_train_config(config_file("iu_xray.yaml"), {"optim.lr_ed=3e-4"});
  auto again = parse_train_config(to_yaml(c), "roundtrip.yaml");
  EXPECT_EQ(again.optim.lr_ed, 3e-4);
  EXPECT_EQ(again.data.transform.image.mean, c.data.transform.image.mean);
  EXPECT_EQ(to_yaml(again), to_yaml(c));
}

}  // namespace
}  // namespace cmn::train
