#pragma once
// cmn-train's recipe: a YAML file (configs/iu_xray.yaml, configs/mimic_cxr.yaml, configs/four_view.yaml) plus
// dotted command-line overrides (`optim.lr_ed=5e-4 data.batch_size=8`), parsed once into plain structs.
// Every key the file or an override names must be one of the keys below (the defaults are the schema): an
// unknown key is an error naming it, so a typo never silently falls back to a default.
#include <cstdint>
#include <string>
#include <vector>

#include "cmn/model/config.h"
#include "cmn/train/data.h"
#include "cmn/train/loss.h"
#include "cmn/train/model_setup.h"
#include "cmn/train/optim.h"
#include "cmn/train/scst.h"

namespace cmn::train {

struct DataConfig {
  std::string annotation;              // annotation.json (R2Gen format)
  std::string image_dir;               // root of the image_path entries
  int64_t batch_size = 16;             // --batch_size
  int num_workers = 2;                 // decoding threads (--num_workers)
  int prefetch_batches = 4;            // bounded queue of decoded batches
  std::string on_bad_image = "skip";   // skip | fatal
  TransformOptions transform;          // train_resize 256, train_crop 224, horizontal_flip true, image (eval)
  std::string vocab;                   // "" = rebuild from annotation train split (R2GenCMN); else a vocab.txt
};

struct TrainerConfig {
  std::string run_type = "train";      // train | train_val (train on train+val, select on test) | val | test
  int64_t epochs = 100;                // --epochs
  uint64_t seed = 9233;                // --seed: torch.manual_seed, data order and augmentation
  std::string save_dir = "results/run";  // checkpoints, metrics.jsonl/.csv, plot, bundle
  int64_t save_period = 1;             // epochs between checkpoints (--save_period)
  std::string monitor_metric = "BLEU_4";  // model selection on val_<metric> (--monitor_metric)
  std::string monitor_mode = "max";    // max | min
  int64_t early_stop = 50;             // epochs without improvement before stopping (--early_stop)
  int64_t log_period = 50;             // progress lines every n steps when not on a terminal (--log_period)
  std::string resume;                  // "" | a checkpoint written by cmn-train (its .state sidecar beside it)
  std::string init_checkpoint;         // R2GenCMN .pth to start from (weights only)
  std::string pretrained_trunk;        // torchvision resnet101 state_dict file (--visual_extractor_pretrained)
  bool freeze_visual_extractor = false;  // frozen trunk (eval-mode batch norm, no trunk gradients)
  // Cached features (issue 5/8): run the frozen trunk once per study of each split (evaluation transform, so no
  // crop/flip augmentation) and train att_embed, memory and encoder-decoder on the cached [V*49, d_vf] patches.
  // Needs a trunk without trainable parameters (model.visual_extractor: patch_stats) or
  // freeze_visual_extractor: true. Memory: studies x V x 49 x d_vf floats (ResNet-101: 1.6 MB per 4-view study).
  bool cache_visual_features = false;
  int threads = 0;                     // torch intra-op threads; 0 = hardware concurrency
  // cpu | cuda | cuda:N: where the model, its optimiser state and every batch live. A LibTorch without CUDA
  // refuses cuda at start, naming it; data parallelism (WORLD_SIZE > 1, Gloo) is CPU only.
  std::string device = "cpu";
  std::vector<std::string> eval_splits = {"val", "test"};  // beam-searched every epoch
  int64_t eval_batch_size = 0;         // 0 = data.batch_size
  int64_t max_steps_per_epoch = 0;     // 0 = the whole split (smoke tests: a few steps)
  int64_t eval_max_examples = 0;       // 0 = the whole split
  bool progress = true;                // progress bar on stderr
  std::string bundle_dir;              // "" = <save_dir>/bundle; "none" = no bundle
  std::string bundle_name = "cmn-trained";
};

// align.* (issue 14): training the image-report alignment head (model.align_queries > 0; cmn/model/alignment.h).
// Off unless the model has the head. ITC + ITM as BLIP-2 (in-batch negatives, hard negatives for ITM mined from
// the ITC similarities), either as a stage before report generation, or beside the cross-entropy, or both.
struct AlignConfig {
  int64_t pretrain_epochs = 0;         // the first N epochs train ITC + ITM only (no cross-entropy, no evaluation)
  double itc_weight = 0.0;             // afterwards: loss = CE + itc_weight * ITC + itm_weight * ITM
  double itm_weight = 0.0;
  // Store the ITC embeddings of the training split's reports (each distinct report once) in the bundle, for
  // cmn-generate --similar K ("similar prior cases"). Opt-in: the bundle then carries those reports' text.
  bool retrieval_index = false;
  // Studies whose reference reports state the same findings (cmn_metrics' labelers: CheXpert-14, U-zeros, and
  // the phantom's six) are positives of each other in ITC and never ITM negatives: otherwise every rephrasing of
  // the same findings is a false negative, and hard-negative mining picks exactly those (as MedCLIP argues).
  bool label_positives = true;
  bool active() const { return pretrain_epochs > 0 || itc_weight > 0 || itm_weight > 0; }
};

struct TrainConfig {
  model::ModelConfig model;            // architecture + decoding (R2GenCMN names); vocab_size from the tokenizer
  DropoutOptions dropout;              // model.dropout / drop_prob_lm / attention_dropout / memory_dropout
  DataConfig data;
  OptimOptions optim;
  LossOptions loss;
  ScstOptions scst;                    // scst.*: self-critical fine-tuning after cross-entropy (off by default)
  AlignConfig align;                   // align.*: image-report alignment losses (off by default)
  SchedulerOptions scheduler;
  TrainerConfig trainer;
  std::string source;                  // the YAML file it came from (for messages)
};

// Reads `yaml_path` over the defaults, then applies `overrides` ("a.b=value", value parsed as YAML), then
// validates. Throws c10::Error naming the file/override and the key on any problem.
TrainConfig load_train_config(const std::string& yaml_path, const std::vector<std::string>& overrides = {});
// The same from YAML text.
TrainConfig parse_train_config(const std::string& yaml_text, const std::string& source_name,
                               const std::vector<std::string>& overrides = {});
// The effective configuration as YAML (written to save_dir/config.yaml).
std::string to_yaml(const TrainConfig& config);

}  // namespace cmn::train
