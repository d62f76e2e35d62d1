// cmn-train end to end on a tiny made-up split of the parity images (1 view, a few steps): epochs with
// evaluation, metrics files, checkpoints in R2GenCMN's format, the bundle, --resume, and a kill -9 of the real
// binary in the middle of training followed by a resume.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <set>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "cmn/model/checkpoint.h"
#include "cmn/pipeline/bundle.h"
#include "cmn/train/config.h"
#include "cmn/train/trainer.h"

namespace cmn::train {
namespace {

namespace fs = std::filesystem;

int count_lines(const fs::path& path) {
  std::ifstream in(path);
  int n = 0;
  for (std::string line; std::getline(in, line);) n += !line.empty();
  return n;
}

class TrainRunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("cmn_train_run_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    auto study = [](const std::string& id, const std::string& report, const std::string& image) {
      return nlohmann::json{{"id", id}, {"report", report}, {"image_path", {image, "study1_view1.png"}}};
    };
    nlohmann::json ann;
    ann["train"] = {study("a", "The heart is normal. The lungs are clear.", "study0_view0.png"),
                    study("b", "No acute disease. The heart is normal.", "study1_view0.png")};
    ann["val"] = {study("c", "The lungs are clear.", "study0_view1.png")};
    ann["test"] = {study("d", "The heart is normal.", "study1_view2.png")};
    std::ofstream(dir_ / "annotation.json") << ann.dump();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::vector<std::string> overrides(int epochs) const {
    return {"model.views=1", "model.max_seq_length=10", "model.threshold=1", "model.beam_size=2",
            "data.annotation=" + (dir_ / "annotation.json").string(),
            "data.image_dir=" + std::string(CMN_SHARED_DIR) + "/parity/dev/images", "data.batch_size=2",
            "data.num_workers=1", "trainer.epochs=" + std::to_string(epochs), "trainer.seed=5",
            "trainer.save_dir=" + (dir_ / "run").string(), "trainer.max_steps_per_epoch=1", "trainer.progress=false",
            "trainer.threads=2", "trainer.bundle_dir=" + (dir_ / "bundle").string()};
  }

  fs::path dir_;
};

TEST_F(TrainRunTest, TrainsEvaluatesCheckpointsWritesBundleAndResumes) {
  auto config = parse_train_config("", "tiny.yaml", overrides(2));
  std::vector<torch::Tensor> exp_avg_before;
  {
    Trainer trainer(config);
    trainer.run();
    EXPECT_EQ(trainer.history().size(), 2u);
    for (auto& group : trainer.optimizer().param_groups()) {
      const auto& p = group.params()[0];
      auto& state = static_cast<torch::optim::AdamParamState&>(
          *trainer.optimizer().state().at(c10::guts::to_string(p.unsafeGetTensorImpl())));
      exp_avg_before.push_back(state.exp_avg().clone());
    }
  }
  const fs::path run = dir_ / "run";
  for (const char* f : {"current_checkpoint.pth", "current_checkpoint.state", "metrics.jsonl", "metrics.csv",
                        "config.yaml", "predictions_val.jsonl", "predictions_test.jsonl"}) {
    EXPECT_TRUE(fs::exists(run / f)) << f;
  }
  auto ckpt = model::read_checkpoint((run / "current_checkpoint.pth").string());
  EXPECT_EQ(ckpt.epoch, 2);
  EXPECT_EQ(ckpt.top_level_keys, (std::vector<std::string>{"epoch", "state_dict", "optimizer", "monitor_best"}));
  EXPECT_EQ(count_lines(run / "metrics.jsonl"), 2);
  std::ifstream metrics(run / "metrics.jsonl");
  std::string first;
  std::getline(metrics, first);
  auto line = nlohmann::json::parse(first);
  EXPECT_TRUE(line.contains("val_loss"));
  EXPECT_TRUE(line.contains("test_loss"));
#ifdef CMN_HAVE_METRICS
  EXPECT_TRUE(line.contains("val_BLEU_4"));
  EXPECT_TRUE(line.contains("test_CIDEr"));
  EXPECT_TRUE(fs::exists(run / "model_best.pth"));
#endif
  auto bundle = pipeline::load_bundle((dir_ / "bundle").string());
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  EXPECT_EQ(bundle->info.config.views, 1);
  EXPECT_FALSE(bundle->info.untrained);

  // Resume for a third epoch: weights, optimiser moments and history come back.
  auto config3 = parse_train_config("", "tiny.yaml", overrides(3));
  config3.trainer.resume = (dir_ / "run").string();
  Trainer resumed(config3);
  EXPECT_EQ(resumed.start_epoch(), 3);
  EXPECT_EQ(resumed.history().size(), 2u);
  const auto state = model::module_state_dict(*resumed.model());
  for (const auto& [name, tensor] : ckpt.state_dict) {
    auto it = std::find_if(state.begin(), state.end(), [&](const auto& kv) { return kv.first == name; });
    ASSERT_NE(it, state.end()) << name;
    ASSERT_TRUE(torch::equal(it->second, tensor)) << name;
  }
  size_t g = 0;
  for (auto& group : resumed.optimizer().param_groups()) {
    const auto& p = group.params()[0];
    auto& s = static_cast<torch::optim::AdamParamState&>(
        *resumed.optimizer().state().at(c10::guts::to_string(p.unsafeGetTensorImpl())));
    EXPECT_TRUE(torch::equal(s.exp_avg(), exp_avg_before[g++]));
  }
  resumed.run();
  EXPECT_EQ(resumed.history().size(), 3u);
  EXPECT_EQ(model::read_checkpoint((run / "current_checkpoint.pth").string()).epoch, 3);
  EXPECT_EQ(count_lines(run / "metrics.jsonl"), 3);
}

TEST_F(TrainRunTest, AlignmentTrainsResumesAndShipsItsIndex) {
  // Issue 14: a pre-training epoch (ITC + ITM only), then the losses beside the cross-entropy; resume brings the
  // head's weights and optimiser moments back; the bundle carries the head and the training reports' index.
  auto with_align = [&](int epochs) {
    auto o = overrides(epochs);
    for (const char* a : {"model.align_queries=4", "model.align_dim=16", "align.pretrain_epochs=1",
                          "align.itc_weight=0.5", "align.itm_weight=0.5", "align.retrieval_index=true"}) {
      o.push_back(a);
    }
    return parse_train_config("", "tiny.yaml", o);
  };
  {
    Trainer trainer(with_align(2));
    trainer.run();
    ASSERT_EQ(trainer.history().size(), 2u);
    EXPECT_FALSE(trainer.history()[0].values.count("val_loss")) << "a pre-training epoch evaluates nothing";
    EXPECT_TRUE(trainer.history()[1].values.count("val_loss"));
    for (const auto& h : trainer.history()) EXPECT_TRUE(std::isfinite(h.values.at("train_itm")));
  }
  const auto ckpt = model::read_checkpoint((dir_ / "run" / "current_checkpoint.pth").string());
  size_t align_keys = 0;
  for (const auto& [name, tensor] : ckpt.state_dict) align_keys += name.rfind("alignment.", 0) == 0;
  EXPECT_GT(align_keys, 10u);
  auto bundle = pipeline::load_bundle((dir_ / "bundle").string());
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  EXPECT_EQ(bundle->info.config.align_queries, 4);
  EXPECT_EQ(bundle->info.config.align_index_size, 2);  // the two distinct training reports
  EXPECT_TRUE(bundle->model->alignment->has_index());

  auto config3 = with_align(3);
  config3.trainer.resume = (dir_ / "run").string();
  Trainer resumed(config3);
  EXPECT_EQ(resumed.start_epoch(), 3);
  const auto state = model::module_state_dict(*resumed.model());
  for (const auto& [name, tensor] : ckpt.state_dict) {
    if (name.rfind("alignment.", 0) != 0) continue;
    auto it = std::find_if(state.begin(), state.end(), [&](const auto& kv) { return kv.first == name; });
    ASSERT_NE(it, state.end()) << name;
    EXPECT_TRUE(torch::equal(it->second, tensor)) << name;
  }
  resumed.run();
  EXPECT_EQ(resumed.history().size(), 3u);
}

TEST_F(TrainRunTest, KillNineLosesAtMostTheCurrentEpoch) {
  const std::string binary = std::string(CMN_BINARY_DIR) + "/train/trainer/cmn-train";
  if (!fs::exists(binary)) GTEST_SKIP() << "cmn-train not built (" << binary << ")";
  std::ofstream cfg(dir_ / "tiny.yaml");
  cfg << "trainer:\n  eval_splits: [val]\n";
  cfg.close();
  std::vector<std::string> args = {binary, (dir_ / "tiny.yaml").string()};
  for (const auto& o : overrides(3)) args.push_back(o);
  args.push_back("trainer.max_steps_per_epoch=2");
  auto launch = [&](const std::vector<std::string>& argv_strings) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      std::vector<char*> argv;
      for (const auto& a : argv_strings) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      const int devnull = ::open("/dev/null", O_WRONLY);
      ::dup2(devnull, STDERR_FILENO);
      ::dup2(devnull, STDOUT_FILENO);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    return pid;
  };
  const fs::path state = dir_ / "run" / "current_checkpoint.state";
  const pid_t pid = launch(args);
  ASSERT_GT(pid, 0);
  // Wait for the first epoch's checkpoint, then kill -9 somewhere in the second epoch.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(10);
  int status = 0;
  bool exited = false;
  while (!fs::exists(state) && std::chrono::steady_clock::now() < deadline) {
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_FALSE(exited) << "cmn-train exited early with status " << status;
  ASSERT_TRUE(fs::exists(state)) << "no checkpoint after 10 minutes";
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);

  // What is on disk is a complete checkpoint of epoch 1 or 2, and the R2GenCMN .pth is readable.
  const auto saved_epoch = model::read_checkpoint((dir_ / "run" / "current_checkpoint.pth").string()).epoch;
  EXPECT_GE(saved_epoch, 1);
  auto resume_args = args;
  resume_args.push_back("--resume");
  resume_args.push_back((dir_ / "run").string());
  const pid_t again = launch(resume_args);
  ASSERT_GT(again, 0);
  ::waitpid(again, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "resumed run failed, status " << status;
  EXPECT_EQ(model::read_checkpoint((dir_ / "run" / "current_checkpoint.pth").string()).epoch, 3);
  // Every epoch 1..3 was logged at least once (an epoch cut by the kill is logged by the resumed run).
  std::set<int64_t> epochs;
  std::ifstream metrics(dir_ / "run" / "metrics.jsonl");
  for (std::string l; std::getline(metrics, l);) epochs.insert(nlohmann::json::parse(l)["epoch"].get<int64_t>());
  EXPECT_EQ(epochs, (std::set<int64_t>{1, 2, 3}));
}

// The evaluation path (eval transform, cache reset, beam search options from the recipe, decoding) on the
// parity model: cmn-train's test run writes the reports the reference's beam search wrote (dev/expected.json).
TEST_F(TrainRunTest, CudaDeviceWithoutCudaIsAnErrorNamingTheKeyAndCuda) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "a GPU is visible: the no-CUDA refusal cannot be seen here";
  auto o = overrides(1);
  o.push_back("trainer.device=cuda");
  const auto config = parse_train_config("", "test", o);
  std::string error;
  try {
    Trainer trainer(config);
  } catch (const c10::Error& e) {
    error = e.msg();
  }
  EXPECT_NE(error.find("trainer.device 'cuda'"), std::string::npos) << error;
  EXPECT_NE(error.find("CUDA is not available"), std::string::npos) << error;
}

TEST(TrainEvalParityTest, TestRunOnDevStudiesWritesTheReferenceBeamReports) {
  const std::string shared = CMN_SHARED_DIR;
  std::ifstream in(shared + "/parity/dev/expected.json");
  auto expected = nlohmann::json::parse(in);
  std::ifstream iu(shared + "/data/iu_xray/annotation.json");
  auto ann = nlohmann::json::parse(iu);  // the train split rebuilds the 760-token vocabulary of the model
  ann["val"] = nlohmann::json::array();
  ann["test"] = nlohmann::json::array();
  for (int s = 0; s < 2; ++s) {
    nlohmann::json paths = nlohmann::json::array();
    for (int v = 0; v < 4; ++v) paths.push_back("study" + std::to_string(s) + "_view" + std::to_string(v) + ".png");
    ann["test"].push_back({{"id", "study" + std::to_string(s)}, {"report", expected["tf_report"]}, {"image_path", paths}});
  }
  const fs::path dir = fs::temp_directory_path() / ("cmn_train_evalparity_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "annotation.json") << ann.dump();
  const std::string configs = (fs::path(__FILE__).parent_path().parent_path().parent_path() / "configs").string();
  auto config = load_train_config(configs + "/four_view.yaml",
                                  {"data.annotation=" + (dir / "annotation.json").string(),
                                   "data.image_dir=" + shared + "/parity/dev/images", "data.num_workers=1",
                                   "trainer.init_checkpoint=" + shared + "/parity/dev/model.pth",
                                   "trainer.save_dir=" + (dir / "run").string(), "trainer.threads=2"});
  Trainer trainer(config);
  EXPECT_EQ(trainer.tokenizer().vocab_size(), 760);
  auto result = trainer.evaluate("test");
  fs::remove_all(dir);
  ASSERT_EQ(result.predictions.size(), 2u);
  EXPECT_EQ(result.predictions[0], expected["beam_reports"][0].get<std::string>());
  EXPECT_EQ(result.predictions[1], expected["beam_reports"][1].get<std::string>());
  EXPECT_TRUE(std::isfinite(result.loss));
#ifdef CMN_HAVE_METRICS
  // The 7 pycocoevalcap scores first, then the clinical-efficacy scores (CE_*) of the label extractor.
  ASSERT_GT(result.scores.size(), 7u);
  const char* kNlg[] = {"BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr"};
  for (size_t i = 0; i < 7; ++i) EXPECT_EQ(result.scores[i].first, kNlg[i]);
  for (size_t i = 7; i < result.scores.size(); ++i) EXPECT_EQ(result.scores[i].first.rfind("CE_", 0), 0u);
  EXPECT_GT(result.metric("BLEU_1"), 0.0);
#endif
}

}  // namespace
}  // namespace cmn::train
