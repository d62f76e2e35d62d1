#pragma once
// The epoch loop of R2GenCMN's Trainer (modules/trainer.py): train an epoch, beam-search val and test, select
// the best epoch on val_<monitor_metric>, StepLR once per epoch, checkpoints every save_period epochs, early
// stop on patience; plus resume, metrics files and a model bundle at the end.
//
// Files in trainer.save_dir:
//   current_checkpoint.pth   R2GenCMN format ({epoch, state_dict, optimizer: {}, monitor_best}), atomic
//   model_best.pth           the same, of the best epoch so far (what the bundle is made from)
//   current_checkpoint.state everything --resume needs in one file (model, optimiser, scheduler, torch RNG,
//                            epoch, best, patience, history), written to a temporary file, fsynced, renamed:
//                            a kill -9 at any moment leaves the previous epoch's state or this one's
//   metrics.jsonl / metrics.csv  one line per epoch; predictions_<split>.jsonl of the last evaluation
//   config.yaml              the effective configuration;  loss.png  the curves after every epoch (gnuplot)
//   best.json                the selected epoch (val_<monitor_metric>) with its val and test scores
//   bundle/                  the model bundle (cmn::pipeline::write_bundle) at the end of training
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "cmn/model/r2gencmn.h"
#include "cmn/model/tokenizer.h"
#include "cmn/pipeline/annotation.h"
#include "cmn/train/config.h"
#include "cmn/train/data.h"
#include "cmn/train/optim.h"

namespace cmn::metrics {
class CiderD;  // cmn/metrics/metrics.h (SCST's reward)
}

namespace cmn::train {

class DataParallel;  // cmn/train/distributed.h

struct EvalResult {
  std::string split;
  std::vector<std::string> ids;
  std::vector<std::string> predictions;  // beam-search reports (tokenizer.decode)
  std::vector<std::string> references;   // tokenizer.decode(ids[1:]) as R2GenCMN's trainer (cleaned, <unk>, cut)
  double loss = 0.0;                     // teacher-forced loss over the split (eval mode)
  // BLEU_1..BLEU_4, METEOR, ROUGE_L, CIDEr, then clinical efficacy on CheXpert's 14 observations
  // (cmn/metrics/chexpert_ce.h, U-zeros: CE_F1_MACRO, CE_F1_MICRO, CE_PRECISION_MACRO/MICRO, CE_RECALL_MACRO/MICRO,
  // CE_AVG_AUCROC) and on the phantom's six findings (cmn/metrics/labels.h: CE_phantom_macro_F1, ...), from
  // cmn_metrics; empty when the build has no metrics library.
  std::vector<std::pair<std::string, double>> scores;
  double metric(const std::string& name) const;  // "loss" or a score name; NaN when absent
};

// One line of metrics.jsonl.
struct EpochLog {
  int64_t epoch = 0;
  double train_loss = 0.0;
  double seconds = 0.0;
  std::vector<double> lrs;
  std::map<std::string, double> values;  // "val_BLEU_4", "test_loss", ...
};

class Trainer {
 public:
  explicit Trainer(TrainConfig config);
  ~Trainer();

  // run_type train / train_val: the epoch loop (resuming when trainer.resume is set), then the bundle.
  // run_type val / test: one evaluation of the loaded weights (trainer.init_checkpoint), printed as JSON.
  void run();

  // One epoch of optimisation; returns the mean training loss.
  double train_epoch(int64_t epoch);
  // Beam search + teacher-forced loss over a split ("train", "val", "test").
  EvalResult evaluate(const std::string& split);

  void save_checkpoint(int64_t epoch, bool best);
  // Restores model, optimiser, scheduler, torch RNG, epoch, best value, patience and history.
  void resume(const std::string& path);

  model::R2GenCMN& model() { return model_; }
  const model::Tokenizer& tokenizer() const { return tokenizer_; }
  torch::optim::Adam& optimizer() { return *optimizer_; }
  LrScheduler& scheduler() { return *scheduler_; }
  const TrainConfig& config() const { return config_; }
  int64_t start_epoch() const { return start_epoch_; }
  double monitor_best() const { return monitor_best_; }
  const std::vector<EpochLog>& history() const { return history_; }

  std::string state_path() const;       // <save_dir>/current_checkpoint.state
  std::string checkpoint_path() const;  // <save_dir>/current_checkpoint.pth
  std::string best_path() const;        // <save_dir>/model_best.pth

 private:
  DataLoader& loader(const std::string& split);
  // trainer.cache_visual_features: the split's trunk features, computed on first use.
  struct FeatureCache {
    torch::Tensor att;                 // [N, V*49, d_vf] float32, example order of the split's loader
    std::vector<int64_t> example;      // row -> index in loader(split).examples() (skipped studies are absent)
  };
  const FeatureCache& features(const std::string& split);
  // [B,L] targets and masks for the given loader examples, padded as the DataLoader pads them.
  std::pair<torch::Tensor, torch::Tensor> targets_for(const DataLoader& data, const std::vector<int64_t>& examples) const;
  // SCST loss of one batch of patch features (CIDEr-D reward against the examples' references).
  torch::Tensor scst_batch(const torch::Tensor& att, const std::vector<int64_t>& examples, int64_t epoch, int64_t step);
  // --- alignment (trainer_align.cc) ---
  bool align_pretraining(int64_t epoch) const { return epoch <= config_.align.pretrain_epochs; }
  // ITC + ITM of a batch (memory [B,S,d], targets [B,L]) added to `loss` with the align weights (or alone when
  // `only`); undefined `loss` and B < 2 in pre-training: undefined (the batch is skipped).
  torch::Tensor add_alignment_loss(const torch::Tensor& loss, const torch::Tensor& memory, const torch::Tensor& targets,
                                   const std::vector<int64_t>& examples, bool only);
  // [B,B] bool: the batch's studies (train loader examples) whose reference findings agree (align.label_positives);
  // undefined when off or without cmn_metrics.
  torch::Tensor same_findings(const std::vector<int64_t>& examples);
  std::vector<std::vector<bool>> train_findings_;  // per train example: its reference's binary labels (lazily)
  // train_itc, train_itm, train_itc_accuracy of the epoch (means over its batches) into log.values.
  void add_alignment_log(EpochLog& log) const;
  // align.retrieval_index: the training split's distinct reports, embedded (ITC), set on the model for the bundle.
  void build_retrieval_index();
  struct AlignStats {
    double itc = 0, itm = 0, itc_accuracy = 0;
    int64_t batches = 0;
  };
  AlignStats align_stats_;

  void write_epoch_log(const EpochLog& log);
  void write_plot();
  // <save_dir>/best.json: the selected epoch and its scores (test at that epoch only), written atomically.
  void write_best_summary();
  void write_bundle_dir();
  bool improved(double value) const;

  TrainConfig config_;
  pipeline::Annotation annotation_;
  model::Tokenizer tokenizer_;
  model::R2GenCMN model_{nullptr};
  torch::Device device_{torch::kCPU};  // trainer.device: the model, optimiser state and batches
  std::unique_ptr<torch::optim::Adam> optimizer_;
  std::unique_ptr<LrScheduler> scheduler_;
  std::map<std::string, std::unique_ptr<DataLoader>> loaders_;
  std::map<std::string, FeatureCache> feature_caches_;
  std::shared_ptr<metrics::CiderD> scst_cider_;  // SCST reward, df from the training references (built on first use)
  // WORLD_SIZE > 1: the process group; only rank 0 writes files (all ranks hold the same weights).
  std::unique_ptr<DataParallel> data_parallel_;
  bool writes_files() const;
  int64_t start_epoch_ = 1;
  double monitor_best_ = 0.0;
  int64_t not_improved_ = 0;
  std::vector<EpochLog> history_;
};

}  // namespace cmn::train
