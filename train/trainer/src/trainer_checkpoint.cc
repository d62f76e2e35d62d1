// Trainer checkpoints: save_checkpoint (the R2GenCMN .pth files and the .state archive with optimiser,
// scheduler, RNG and history) and resume from that archive.
#include "cmn/train/trainer.h"

#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

#include "cmn/common/durable_write.h"
#include "cmn/model/checkpoint.h"
#include "cmn/train/model_setup.h"
#include "trainer_internal.h"

namespace cmn::train {

namespace fs = std::filesystem;

namespace {

using trainer_detail::log_from_json;
using trainer_detail::log_to_json;

// torch archive -> durable_write.h (temporary file, fsync, rename, fsync of the folder): readers see the old
// file or the new one.
void save_archive_atomically(torch::serialize::OutputArchive& archive, const std::string& path) {
  const std::string error = durable::replace_file(path, [&](const std::string& tmp) {
    archive.save_to(tmp);
    return std::string();
  });
  TORCH_CHECK(error.empty(), error);
}

torch::Tensor scalar_tensor(double v) { return torch::tensor({v}, torch::kDouble); }
double read_scalar(torch::serialize::InputArchive& archive, const std::string& key) {
  torch::Tensor t;
  archive.read(key, t);
  return t.item<double>();
}

}  // namespace

void Trainer::save_checkpoint(int64_t epoch, bool best) {
  if (!writes_files()) return;
  fs::create_directories(config_.trainer.save_dir);
  model::CheckpointWriteOptions wo;
  wo.epoch = epoch;
  wo.monitor_best = monitor_best_;
  const auto state_dict = model::module_state_dict(*model_);
  model::write_checkpoint(checkpoint_path(), state_dict, wo);
  if (best) model::write_checkpoint(best_path(), state_dict, wo);

  torch::serialize::OutputArchive archive;
  torch::serialize::OutputArchive model_archive, optimizer_archive;
  model_->save(model_archive);
  optimizer_->save(optimizer_archive);
  archive.write("model", model_archive);
  archive.write("optimizer", optimizer_archive);
  const auto s = scheduler_->state();
  archive.write("scheduler_last_epoch", scalar_tensor(static_cast<double>(s.last_epoch)));
  archive.write("scheduler_num_updates", scalar_tensor(static_cast<double>(s.num_updates)));
  archive.write("scheduler_lrs", torch::tensor(s.lrs, torch::kDouble));
  {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    archive.write("torch_rng", gen.get_state());
  }
  archive.write("epoch", scalar_tensor(static_cast<double>(epoch)));
  archive.write("monitor_best", scalar_tensor(monitor_best_));
  archive.write("not_improved", scalar_tensor(static_cast<double>(not_improved_)));
  nlohmann::json history = nlohmann::json::array();
  for (const auto& h : history_) history.push_back(log_to_json(h));
  archive.write("history", c10::IValue(history.dump()));
  save_archive_atomically(archive, state_path());
}

void Trainer::resume(const std::string& path_in) {
  std::string path = path_in;
  if (fs::is_directory(path)) path += "/current_checkpoint.state";
  if (path.size() > 4 && path.compare(path.size() - 4, 4, ".pth") == 0) path = path.substr(0, path.size() - 4) + ".state";
  TORCH_CHECK(fs::exists(path), "cannot resume: '", path, "' does not exist");
  torch::serialize::InputArchive archive;
  archive.load_from(path, device_);  // the optimiser's state beside its parameters
  torch::serialize::InputArchive model_archive, optimizer_archive;
  archive.read("model", model_archive);
  archive.read("optimizer", optimizer_archive);
  model_->load(model_archive);
  optimizer_->load(optimizer_archive);
  LrScheduler::State s;
  s.last_epoch = static_cast<int64_t>(read_scalar(archive, "scheduler_last_epoch"));
  s.num_updates = static_cast<int64_t>(read_scalar(archive, "scheduler_num_updates"));
  torch::Tensor lrs;
  archive.read("scheduler_lrs", lrs);
  for (int64_t i = 0; i < lrs.numel(); ++i) s.lrs.push_back(lrs[i].item<double>());
  scheduler_->load_state(s);
  torch::Tensor rng;
  archive.read("torch_rng", rng);
  {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(rng);
  }
  const auto epoch = static_cast<int64_t>(read_scalar(archive, "epoch"));
  start_epoch_ = epoch + 1;
  monitor_best_ = read_scalar(archive, "monitor_best");
  not_improved_ = static_cast<int64_t>(read_scalar(archive, "not_improved"));
  c10::IValue history;
  archive.read("history", history);
  history_.clear();
  for (const auto& j : nlohmann::json::parse(history.toStringRef())) history_.push_back(log_from_json(j));
  set_dropout(*model_, config_.dropout);
  model_->reset_inference_cache();
  LOG(INFO) << "resumed from " << path << " (epoch " << epoch << "), continuing at epoch " << start_epoch_;
}

}  // namespace cmn::train
