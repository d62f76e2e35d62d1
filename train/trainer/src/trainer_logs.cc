// What a run leaves in save_dir besides checkpoints: metrics.jsonl / metrics.csv per epoch, loss.png (gnuplot),
// best.json (the selected epoch) and the model bundle.
#include "cmn/train/trainer.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cmn/common/durable_write.h"
#include "cmn/model/checkpoint.h"
#include "cmn/pipeline/bundle.h"
#include "trainer_internal.h"

namespace cmn::train {

namespace fs = std::filesystem;

namespace trainer_detail {

nlohmann::json log_to_json(const EpochLog& log) {
  nlohmann::json j;
  j["epoch"] = log.epoch;
  j["train_loss"] = log.train_loss;
  j["seconds"] = log.seconds;
  j["lrs"] = log.lrs;
  for (const auto& [k, v] : log.values) j[k] = std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
  return j;
}

EpochLog log_from_json(const nlohmann::json& j) {
  EpochLog log;
  log.epoch = j.value("epoch", int64_t{0});
  log.train_loss = j.value("train_loss", 0.0);
  log.seconds = j.value("seconds", 0.0);
  log.lrs = j.value("lrs", std::vector<double>{});
  for (const auto& [k, v] : j.items()) {
    if (k == "epoch" || k == "train_loss" || k == "seconds" || k == "lrs") continue;
    log.values[k] = v.is_number() ? v.get<double>() : kNaN;
  }
  return log;
}

}  // namespace trainer_detail

using trainer_detail::log_to_json;

void Trainer::write_epoch_log(const EpochLog& log) {
  if (!writes_files()) return;
  fs::create_directories(config_.trainer.save_dir);
  {
    std::ofstream out(config_.trainer.save_dir + "/metrics.jsonl", std::ios::app);
    out << log_to_json(log).dump() << "\n";
  }
  const std::string csv = config_.trainer.save_dir + "/metrics.csv";
  const bool fresh = !fs::exists(csv);
  std::ofstream out(csv, std::ios::app);
  if (fresh) {
    out << "epoch,train_loss,seconds";
    for (size_t i = 0; i < log.lrs.size(); ++i) out << ",lr_" << i;
    for (const auto& [k, v] : log.values) out << "," << k;
    out << "\n";
  }
  out << std::setprecision(10) << log.epoch << "," << log.train_loss << "," << log.seconds;
  for (double lr : log.lrs) out << "," << lr;
  for (const auto& [k, v] : log.values) out << "," << v;
  out << "\n";
}

void Trainer::write_plot() {
  if (!writes_files()) return;
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
    static bool warned = false;  // once per process, not once per epoch
    if (!warned) LOG(WARNING) << "gnuplot is not installed: no loss.png (apt-get install gnuplot-nox)";
    warned = true;
    return;
  }
  const std::string dir = config_.trainer.save_dir;
  {
    std::ofstream data(dir + "/plot.dat");
    for (const auto& h : history_) {
      auto get = [&](const std::string& k) {
        auto it = h.values.find(k);
        return it == h.values.end() || !std::isfinite(it->second) ? std::string("NaN") : std::to_string(it->second);
      };
      data << h.epoch << " " << h.train_loss << " " << get("val_BLEU_4") << " " << get("val_CIDEr") << " "
           << get("train_itc") << " " << get("train_itm") << "\n";
    }
  }
  // Drawn to a temporary file that durable_write.h renames: a reader never sees a half-written PNG.
  const std::string error = durable::replace_file(dir + "/loss.png", [&](const std::string& tmp) -> std::string {
    {
      std::ofstream gp(dir + "/plot.gp");
      // A series is drawn once it has a value: gnuplot fails on a series of NaN only (an alignment pre-training
      // epoch has no val scores yet; a run without alignment has no ITC / ITM).
      auto any = [&](const char* key) {
        for (const auto& h : history_) {
          auto it = h.values.find(key);
          if (it != h.values.end() && std::isfinite(it->second)) return true;
        }
        return false;
      };
      gp << "set terminal pngcairo size 900,500\nset output '" << tmp << "'\n"
         << "set xlabel 'epoch'\nset ylabel 'train loss'\nset y2label 'val score'\nset y2tics\nset key outside\n"
         << "plot '" << dir << "/plot.dat' using 1:2 with linespoints title 'train loss'";
      if (any("val_BLEU_4")) gp << ", '' using 1:3 axes x1y2 with linespoints title 'val BLEU-4'";
      if (any("val_CIDEr")) gp << ", '' using 1:4 axes x1y2 with linespoints title 'val CIDEr'";
      if (any("train_itc")) gp << ", '' using 1:5 with linespoints title 'train ITC'";
      if (any("train_itm")) gp << ", '' using 1:6 with linespoints title 'train ITM'";
      gp << "\n";
    }
    const std::string cmd = "gnuplot '" + dir + "/plot.gp' >/dev/null 2>&1";
    if (std::system(cmd.c_str()) != 0) return "gnuplot failed";
    return "";
  });
  if (!error.empty()) LOG(WARNING) << "no loss.png: " << error;
}

void Trainer::write_bundle_dir() {
  if (!writes_files()) return;
  const auto& t = config_.trainer;
  if (t.bundle_dir == "none") return;
  const std::string dir = t.bundle_dir.empty() ? t.save_dir + "/bundle" : t.bundle_dir;
  if (fs::exists(best_path())) {
    auto ckpt = model::read_checkpoint(best_path());
    model::load_state_dict(*model_, ckpt.state_dict);
    model_->reset_inference_cache();
  }
  if (config_.align.retrieval_index) build_retrieval_index();
  pipeline::BundleInfo meta;
  meta.name = t.bundle_name;
  meta.version = "epoch-" + std::to_string(history_.empty() ? 0 : history_.back().epoch);
  meta.untrained = false;
  meta.intended_use = "Research use only: trained with cmn-train from " + config_.data.annotation +
                      "; not a medical device.";
  meta.config = model_->config();
  meta.image = config_.data.transform.image;
  pipeline::WriteBundleOptions wo;
  wo.overwrite = true;
  model_->eval();
  auto status = pipeline::write_bundle(dir, meta, model_, tokenizer_, wo);
  TORCH_CHECK(status.ok(), "cannot write the bundle: ", status.ToString());
  LOG(INFO) << "bundle written to " << dir;
}

void Trainer::write_best_summary() {
  if (!writes_files()) return;
  // The selected epoch, replayed from the history with the selection rule of run(): its val scores and the test
  // scores of THAT epoch (R2GenCMN's best_recorder), not the best test score of any epoch.
  const auto& t = config_.trainer;
  const EpochLog* best = nullptr;
  double best_value = t.monitor_mode == "max" ? -std::numeric_limits<double>::infinity()
                                              : std::numeric_limits<double>::infinity();
  for (const auto& h : history_) {
    if (t.run_type == "train_val") {
      best = &h;  // no held-out split: the last epoch
      continue;
    }
    auto it = h.values.find("val_" + t.monitor_metric);
    if (it == h.values.end() || !std::isfinite(it->second)) continue;
    if (t.monitor_mode == "max" ? it->second >= best_value : it->second <= best_value) {
      best_value = it->second;
      best = &h;
    }
  }
  if (best == nullptr) {
    LOG(WARNING) << "no epoch has a finite val_" << t.monitor_metric << ": no best.json";
    return;
  }
  nlohmann::json j;
  j["epoch"] = best->epoch;
  j["monitor"] = t.run_type == "train_val" ? "last epoch (train_val)" : "val_" + t.monitor_metric;
  j["train_loss"] = best->train_loss;
  for (const auto& [k, v] : best->values) j[k] = v;
  const std::string error = durable::write_file(t.save_dir + "/best.json", j.dump(2) + "\n");
  TORCH_CHECK(error.empty(), error);
  std::ostringstream line;
  line << "best epoch " << best->epoch << " (" << j["monitor"].get<std::string>() << ")";
  for (const auto& [k, v] : best->values) {
    if (k.rfind("test_", 0) == 0) line << ", " << k << " " << v;
  }
  LOG(INFO) << line.str();
}

}  // namespace cmn::train
