// cmn::train::DataParallel (c10d TCPStore + ProcessGroupGloo) with 2 real processes on loopback: this test binary
// runs itself twice as DataParallelWorker with torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT).
// Each rank starts from different weights (broadcast makes them rank 0's), takes its half of one batch, averages
// gradients and steps: both end with identical parameters, and the averaged gradient is the single-process
// gradient on the union batch.
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cmn/phantom/dataset.h"
#include "cmn/train/config.h"
#include "cmn/train/distributed.h"
#include "cmn/train/trainer.h"

namespace cmn::train {
namespace {

namespace fs = std::filesystem;

torch::nn::Sequential tiny_model() {
  return torch::nn::Sequential(torch::nn::Linear(6, 8), torch::nn::Tanh(), torch::nn::Linear(8, 3));
}

std::pair<torch::Tensor, torch::Tensor> union_batch() {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  return {torch::randn({8, 6}, gen), torch::randn({8, 3}, gen)};  // x [8,6], y [8,3]
}

// grads then parameters after one SGD step (lr 0.1)
std::vector<torch::Tensor> step_on(torch::nn::Sequential& model, const torch::Tensor& x, const torch::Tensor& y,
                                   DataParallel* dp) {
  model->zero_grad();
  torch::mse_loss(model->forward(x), y).backward();  // mean over the rows given
  if (dp != nullptr) dp->average_gradients(*model);
  std::vector<torch::Tensor> out;
  for (auto& p : model->parameters()) out.push_back(p.grad().clone());
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) {
    p.sub_(p.grad(), 0.1);
    out.push_back(p.clone());
  }
  return out;
}

TEST(DataParallelWorker, Run) {
  const char* dir = std::getenv("CMN_DP_WORKER_DIR");
  if (dir == nullptr) GTEST_SKIP() << "a worker of DataParallelTest (run by it, not alone)";
  torch::set_num_threads(1);
  const auto opts = distributed_from_env();
  torch::manual_seed(100 + static_cast<uint64_t>(opts.rank));  // different replicas before the broadcast
  auto model = tiny_model();
  DataParallel dp(opts);
  dp.broadcast_parameters(*model);
  auto [x, y] = union_batch();
  const auto rows = shard({0, 1, 2, 3, 4, 5, 6, 7}, opts.rank, opts.world_size);  // the rank's half
  auto idx = torch::tensor(rows, torch::kLong);
  auto out = step_on(model, x.index_select(0, idx), y.index_select(0, idx), &dp);
  torch::save(out, std::string(dir) + "/rank" + std::to_string(opts.rank) + ".pt");
}

int free_port() {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(s);
  return ntohs(a.sin_port);
}

TEST(DataParallelTest, TwoProcessesEndIdenticalAndAverageTheUnionBatchGradient) {
  if (!data_parallel_available()) GTEST_SKIP() << "built without gloo headers (libgloo-dev)";
  const fs::path dir = fs::temp_directory_path() / ("cmn_dp_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string port = std::to_string(free_port());
  std::vector<pid_t> pids;
  for (int rank = 0; rank < 2; ++rank) {
    const pid_t pid = ::fork();
    if (pid == 0) {  // exec at once: nothing of the parent's LibTorch state is used after fork
      ::setenv("RANK", std::to_string(rank).c_str(), 1);
      ::setenv("WORLD_SIZE", "2", 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", port.c_str(), 1);
      ::setenv("CMN_DP_WORKER_DIR", dir.c_str(), 1);
      ::execl("/proc/self/exe", "cmn_train_test", "--gtest_filter=DataParallelWorker.Run", nullptr);
      ::_exit(127);
    }
    pids.push_back(pid);
  }
  for (pid_t pid : pids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "worker " << pid << " failed";
  }
  std::vector<torch::Tensor> r0, r1;
  torch::load(r0, (dir / "rank0.pt").string());
  torch::load(r1, (dir / "rank1.pt").string());
  ASSERT_EQ(r0.size(), r1.size());
  const size_t n = r0.size() / 2;  // grads, then parameters
  for (size_t i = 0; i < r0.size(); ++i) EXPECT_TRUE(torch::equal(r0[i], r1[i])) << "tensor " << i;

  torch::manual_seed(100);  // rank 0's initial weights: what the broadcast gave every rank
  auto model = tiny_model();
  auto [x, y] = union_batch();
  auto single = step_on(model, x, y, nullptr);
  for (size_t i = 0; i < n; ++i) {
    EXPECT_TRUE(torch::allclose(r0[i], single[i], 1e-5, 1e-7)) << "gradient " << i;
    EXPECT_TRUE(torch::allclose(r0[n + i], single[n + i], 1e-5, 1e-7)) << "parameter " << i;
  }
  fs::remove_all(dir);
}

// ---- cmn-train with WORLD_SIZE=2: one cached-feature epoch on phantom studies, each rank on its shard ----

const fs::path kSourceDir = fs::path(__FILE__).parent_path().parent_path().parent_path();

TEST(TrainDataParallelWorker, Run) {
  const char* dir = std::getenv("CMN_DP_WORKER_DIR");
  if (dir == nullptr) GTEST_SKIP() << "a worker of TrainDataParallelTest (run by it, not alone)";
  const fs::path d(dir);
  const auto rank = std::string(std::getenv("RANK"));
  auto config = load_train_config(
      (kSourceDir / "configs/phantom.yaml").string(),
      {"data.annotation=" + (d / "annotation.json").string(), "data.image_dir=" + (d / "images").string(),
       "data.batch_size=2", "model.d_model=32", "model.d_ff=32", "model.cmm_dim=32", "model.cmm_size=64",
       "model.topk=8", "model.num_layers=1", "model.max_seq_length=10", "model.threshold=1",
       "trainer.save_dir=" + (d / "run").string(), "trainer.cache_visual_features=true", "trainer.progress=false",
       "trainer.threads=1"});
  Trainer trainer(config);
  EXPECT_TRUE(std::isfinite(trainer.train_epoch(1)));
  std::vector<torch::Tensor> params;
  for (auto& p : trainer.model()->encoder_decoder->parameters()) params.push_back(p.detach().clone());
  torch::save(params, (d / ("trainer_rank" + rank + ".pt")).string());
}

TEST(TrainDataParallelTest, TwoTrainersOnHalfShardsEndWithIdenticalWeights) {
  if (!data_parallel_available()) GTEST_SKIP() << "built without gloo headers (libgloo-dev)";
  const fs::path dir = fs::temp_directory_path() / ("cmn_dp_trainer_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  phantom::DatasetOptions o;
  o.studies = 12;
  o.seed = 4;
  o.val_fraction = 0.2;
  o.test_fraction = 0.2;
  o.render.size = 224;
  phantom::write_dataset(dir.string(), o);
  const std::string port = std::to_string(free_port());
  std::vector<pid_t> pids;
  for (int rank = 0; rank < 2; ++rank) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::setenv("RANK", std::to_string(rank).c_str(), 1);
      ::setenv("WORLD_SIZE", "2", 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", port.c_str(), 1);
      ::setenv("CMN_DP_WORKER_DIR", dir.c_str(), 1);
      ::execl("/proc/self/exe", "cmn_train_test", "--gtest_filter=TrainDataParallelWorker.Run", nullptr);
      ::_exit(127);
    }
    pids.push_back(pid);
  }
  for (pid_t pid : pids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "worker " << pid << " failed";
  }
  std::vector<torch::Tensor> r0, r1;
  torch::load(r0, (dir / "trainer_rank0.pt").string());
  torch::load(r1, (dir / "trainer_rank1.pt").string());
  ASSERT_EQ(r0.size(), r1.size());
  ASSERT_FALSE(r0.empty());
  for (size_t i = 0; i < r0.size(); ++i) EXPECT_TRUE(torch::equal(r0[i], r1[i])) << "parameter " << i;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace cmn::train
