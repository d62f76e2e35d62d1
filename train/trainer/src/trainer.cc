// The Trainer itself: construction (data, vocabulary, model, optimiser), the data loaders and cached trunk
// features, one training epoch (cross-entropy or SCST), and run(), the epoch loop with model selection.
#include "cmn/train/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <limits>
#include <numeric>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>
#include <torch/cuda.h>

#include "cmn/common/durable_write.h"
#include "cmn/model/checkpoint.h"
#include "cmn/train/distributed.h"
#include "cmn/train/loss.h"
#include "cmn/train/model_setup.h"
#include "trainer_internal.h"

#ifdef CMN_HAVE_METRICS
#include "cmn/metrics/metrics.h"
#endif

namespace cmn::train {

namespace fs = std::filesystem;

using trainer_detail::kNaN;
using trainer_detail::reference_text;

Trainer::Trainer(TrainConfig config) : config_(std::move(config)) {
  const auto& t = config_.trainer;
  if (t.threads > 0) torch::set_num_threads(t.threads);
  torch::manual_seed(t.seed);

  // --- data and vocabulary ---
  TORCH_CHECK(!config_.data.annotation.empty(), config_.source, ": data.annotation is not set");
  auto annotation = pipeline::read_annotation(config_.data.annotation);
  TORCH_CHECK(annotation.ok(), annotation.status().ToString());
  annotation_ = std::move(*annotation);
  const auto rule = model::cleaning_rule_for_dataset(config_.model.dataset_name);
  if (!config_.data.vocab.empty()) {
    tokenizer_ = model::Tokenizer::from_vocab_file(config_.data.vocab, rule);
  } else {
    std::vector<std::string> reports;
    for (const auto& e : annotation_.train) reports.push_back(e.report);
    tokenizer_ = model::Tokenizer::build(reports, rule, static_cast<int>(config_.model.threshold));
  }

  // --- model ---
  config_.model.vocab_size = tokenizer_.vocab_size();
  config_.model.views = config_.model.effective_views();
  model_ = model::R2GenCMN(config_.model);
  if (!t.init_checkpoint.empty()) {
    auto ckpt = model::read_checkpoint(t.init_checkpoint);
    model::load_state_dict(*model_, ckpt.state_dict);
  }
  if (!t.pretrained_trunk.empty()) load_torchvision_resnet101(*model_, t.pretrained_trunk);
  set_dropout(*model_, config_.dropout);
  if (t.freeze_visual_extractor) freeze_visual_extractor(*model_);
  device_ = torch::Device(t.device);  // validated by the config reader
  TORCH_CHECK(!device_.is_cuda() || torch::cuda::is_available(), config_.source, ": trainer.device '", t.device,
              "' asked for, but CUDA is not available (this LibTorch was built without CUDA, or no GPU is visible)");
  TORCH_CHECK(!device_.is_cuda() || device_.index() < static_cast<int>(torch::cuda::device_count()), config_.source,
              ": trainer.device '", t.device, "': only ", torch::cuda::device_count(), " CUDA device(s)");
  model_->to(device_);  // before the optimiser is built: its state is made beside each parameter
  if (t.cache_visual_features) {
    for (const auto& p : model_->visual_extractor->parameters()) {
      TORCH_CHECK(!p.requires_grad(), config_.source, ": trainer.cache_visual_features needs a frozen trunk: set "
                  "trainer.freeze_visual_extractor: true, or use model.visual_extractor: patch_stats");
    }
  }
  model_->reset_inference_cache();

  // torchrun-style data parallelism (WORLD_SIZE > 1 in the environment): identical replicas from rank 0, each rank
  // trains on its shard of the cached features, gradients averaged over the ranks (distributed.h).
  if (const auto d = distributed_from_env(); d.world_size > 1) {
    TORCH_CHECK(t.cache_visual_features, "WORLD_SIZE ", d.world_size,
                " (data-parallel training) needs trainer.cache_visual_features: true; the image loader is not sharded");
    TORCH_CHECK(!device_.is_cuda(), "WORLD_SIZE ", d.world_size, " (data-parallel training) runs on Gloo, CPU only: "
                "set trainer.device: cpu");
    data_parallel_ = std::make_unique<DataParallel>(d);
    data_parallel_->broadcast_parameters(*model_);
    model_->reset_inference_cache();
  }

  optimizer_ = build_optimizer(*model_, config_.optim);
  scheduler_ = std::make_unique<LrScheduler>(*optimizer_, config_.scheduler);
  monitor_best_ = t.monitor_mode == "max" ? -std::numeric_limits<double>::infinity()
                                          : std::numeric_limits<double>::infinity();
  if (!t.resume.empty()) resume(t.resume);
}

Trainer::~Trainer() = default;

std::string Trainer::state_path() const { return config_.trainer.save_dir + "/current_checkpoint.state"; }
std::string Trainer::checkpoint_path() const { return config_.trainer.save_dir + "/current_checkpoint.pth"; }
std::string Trainer::best_path() const { return config_.trainer.save_dir + "/model_best.pth"; }

DataLoader& Trainer::loader(const std::string& split) {
  auto it = loaders_.find(split);
  if (it != loaders_.end()) return *it->second;
  std::vector<pipeline::AnnotationExample> entries;
  if (split == "train") {
    entries = annotation_.train;
    if (config_.trainer.run_type == "train_val") entries.insert(entries.end(), annotation_.val.begin(), annotation_.val.end());
  } else if (split == "val") {
    entries = annotation_.val;
  } else if (split == "test") {
    entries = annotation_.test;
  } else {
    TORCH_CHECK(false, "unknown split '", split, "'");
  }
  const bool train = split == "train";
  if (!train && config_.trainer.eval_max_examples > 0 &&
      static_cast<int64_t>(entries.size()) > config_.trainer.eval_max_examples) {
    entries.resize(static_cast<size_t>(config_.trainer.eval_max_examples));
  }
  ExampleOptions eo;
  eo.image_dir = config_.data.image_dir;
  eo.views = config_.model.effective_views();
  eo.max_seq_length = config_.model.max_seq_length;
  LoaderOptions lo;
  lo.batch_size = train || config_.trainer.eval_batch_size <= 0 ? config_.data.batch_size : config_.trainer.eval_batch_size;
  // With cached features the loader only feeds the cache once: evaluation transform, file order (the trainer
  // shuffles the cached rows itself).
  lo.shuffle = train && !config_.trainer.cache_visual_features;
  lo.augment = train && !config_.trainer.cache_visual_features;
  lo.seed = config_.trainer.seed;
  lo.num_workers = config_.data.num_workers;
  lo.prefetch_batches = config_.data.prefetch_batches;
  lo.on_bad_image = parse_bad_image_policy(config_.data.on_bad_image);
  lo.transform = config_.data.transform;
  auto dl = std::make_unique<DataLoader>(make_examples(entries, tokenizer_, eo), lo);
  auto& ref = *dl;
  loaders_[split] = std::move(dl);
  return ref;
}

const Trainer::FeatureCache& Trainer::features(const std::string& split) {
  auto it = feature_caches_.find(split);
  if (it != feature_caches_.end()) return it->second;
  auto& data = loader(split);
  const bool was_training = model_->is_training();
  model_->eval();  // the trunk as at inference (eval-mode batch norm), which is what a frozen trunk trains with
  torch::NoGradGuard no_grad;
  const auto start = std::chrono::steady_clock::now();
  FeatureCache cache;
  std::vector<torch::Tensor> chunks;
  data.start_epoch(0);
  while (auto batch = data.next()) {
    for (const auto& m : batch->skipped) LOG(WARNING) << m;
    chunks.push_back(model_->extract(batch->images.to(device_)).att);  // [B,V*49,d_vf] on device_
    cache.example.insert(cache.example.end(), batch->indices.begin(), batch->indices.end());
  }
  TORCH_CHECK(!chunks.empty(), "no readable study in the ", split, " split: nothing to cache");
  cache.att = torch::cat(chunks, 0).contiguous();  // [N,V*49,d_vf]
  LOG(INFO) << "cached trunk features of the " << split << " split: " << cache.att.sizes() << " in "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() << " s";
  if (was_training) train_mode(*model_);
  return feature_caches_[split] = std::move(cache);
}

std::pair<torch::Tensor, torch::Tensor> Trainer::targets_for(const DataLoader& data,
                                                             const std::vector<int64_t>& examples) const {
  int64_t max_len = 0;
  for (int64_t i : examples) max_len = std::max<int64_t>(max_len, static_cast<int64_t>(data.examples()[static_cast<size_t>(i)].ids.size()));
  const auto b = static_cast<int64_t>(examples.size());
  auto targets = torch::zeros({b, max_len}, torch::kLong);  // [B,L], 0-padded
  auto masks = torch::zeros({b, max_len}, torch::kFloat);   // [B,L], 1 on tokens
  auto t = targets.accessor<int64_t, 2>();
  auto m = masks.accessor<float, 2>();
  for (int64_t i = 0; i < b; ++i) {
    const auto& ids = data.examples()[static_cast<size_t>(examples[static_cast<size_t>(i)])].ids;
    for (size_t k = 0; k < ids.size(); ++k) {
      t[i][static_cast<int64_t>(k)] = ids[k];
      m[i][static_cast<int64_t>(k)] = 1.0f;
    }
  }
  return {targets.to(device_), masks.to(device_)};
}

double Trainer::train_epoch(int64_t epoch) {
  const bool cached = config_.trainer.cache_visual_features;
  // SCST epochs: the loss is the self-critical policy gradient (scst.h) instead of cross-entropy.
  const bool scst = config_.scst.after_epoch > 0 && epoch > config_.scst.after_epoch;
  if (scst && epoch == config_.scst.after_epoch + 1) LOG(INFO) << "epoch " << epoch << ": self-critical training (CIDEr-D reward, greedy baseline)";
  // Alignment (issue 14): its pre-training epochs train ITC + ITM alone; later cross-entropy epochs add them
  // weighted; SCST epochs leave them out.
  const bool align_only = align_pretraining(epoch);
  const bool align_aux = !align_only && !scst && (config_.align.itc_weight > 0 || config_.align.itm_weight > 0);
  if (align_only && epoch == 1) LOG(INFO) << "epochs 1.." << config_.align.pretrain_epochs << ": image-report alignment pre-training (ITC + ITM)";
  align_stats_ = {};
  auto& data = loader("train");
  const FeatureCache* cache = cached ? &features("train") : nullptr;
  std::vector<int64_t> order;  // cached: rows of the cache in this epoch's order, a function of (seed, epoch)
  const int64_t batch_size = config_.data.batch_size;
  train_mode(*model_);
  int64_t steps = 0;
  if (cached) {
    order.resize(cache->example.size());
    std::iota(order.begin(), order.end(), int64_t{0});
    std::mt19937_64 rng(config_.trainer.seed * 1000003ULL + static_cast<uint64_t>(epoch));
    std::shuffle(order.begin(), order.end(), rng);
    if (data_parallel_) {
      // Same seeded order on every rank; equal shards (the tail that does not divide is left out this epoch), so
      // every rank runs the same number of steps and no allreduce waits forever. data.batch_size is per rank.
      const int world = data_parallel_->world_size();
      order.resize(order.size() / static_cast<size_t>(world) * static_cast<size_t>(world));
      order = shard(order, data_parallel_->rank(), world);
    }
    steps = (static_cast<int64_t>(order.size()) + batch_size - 1) / batch_size;
  } else {
    data.start_epoch(epoch);
    steps = data.num_batches();
  }
  if (config_.trainer.max_steps_per_epoch > 0) steps = std::min(steps, config_.trainer.max_steps_per_epoch);
  const bool tty = config_.trainer.progress && ::isatty(STDERR_FILENO);
  const auto start = std::chrono::steady_clock::now();
  double total = 0.0;
  int64_t step = 0;
  while (step < steps) {
    torch::Tensor targets, masks;
    torch::Tensor att;              // [B,V*49,d_vf] patch features
    std::vector<int64_t> examples;  // loader example of each study of the batch
    if (cached) {
      const auto first = order.begin() + step * batch_size;
      const auto last = order.begin() + std::min<int64_t>(static_cast<int64_t>(order.size()), (step + 1) * batch_size);
      const std::vector<int64_t> rows(first, last);
      for (int64_t r : rows) examples.push_back(cache->example[static_cast<size_t>(r)]);
      att = cache->att.index_select(0, torch::tensor(rows, torch::kLong).to(device_));  // [B,V*49,d_vf]
      std::tie(targets, masks) = targets_for(data, examples);  // on device_
    } else {
      auto batch = data.next();
      if (!batch) break;
      for (const auto& m : batch->skipped) LOG(WARNING) << m;
      targets = batch->targets.to(device_);
      masks = batch->masks.to(device_);
      const auto images = batch->images.to(device_);  // [B,V,3,H,W]
      att = model_->extract(images).att;  // [B,V*49,d_vf], with the trunk's gradient when it trains
      examples = batch->indices;
    }
    torch::Tensor loss;
    if (scst) {
      loss = scst_batch(att, examples, epoch, step);
    } else {
      const auto memory = model_->encoder_decoder->encode(att);  // [B,S,d]
      if (!align_only) {  // R2GenCMN's forward: encoder, then the teacher-forced decoder over the same memory
        const auto log_probs = model_->encoder_decoder->teacher_forced(memory, targets);  // [B,L-1,V+1]
        loss = language_model_loss(log_probs, targets, masks, config_.loss);
      }
      if (align_only || align_aux) loss = add_alignment_loss(loss, memory, targets, examples, align_only);
    }
    if (!loss.defined()) {  // an alignment-only batch of one study: no in-batch negative to learn from
      ++step;
      continue;
    }
    optimizer_->zero_grad();
    loss.backward();
    if (data_parallel_) data_parallel_->average_gradients(*model_);  // before clipping, as DDP
    clip_gradients(*model_, config_.optim);
    optimizer_->step();
    scheduler_->step_update();
    total += loss.item<double>();
    ++step;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (tty) {
      const int width = 30, filled = static_cast<int>(width * step / std::max<int64_t>(steps, 1));
      std::cerr << "\r[" << epoch << "/" << config_.trainer.epochs << "] [" << std::string(filled, '#')
                << std::string(width - filled, '.') << "] " << step << "/" << steps << " loss " << std::fixed
                << std::setprecision(4) << total / step << " " << std::setprecision(2) << step / secs << " it/s"
                << std::defaultfloat << std::flush;
    } else if (config_.trainer.progress && (step % std::max<int64_t>(config_.trainer.log_period, 1) == 0 || step == steps)) {
      LOG(INFO) << "[" << epoch << "/" << config_.trainer.epochs << "] step " << step << "/" << steps
                << ", training loss " << total / step << ", " << step / secs << " it/s";
    }
  }
  if (tty) std::cerr << "\n";
  model_->reset_inference_cache();  // weights changed: folded batch norm and memory projections are stale
  return step > 0 ? total / step : kNaN;
}

torch::Tensor Trainer::scst_batch(const torch::Tensor& att, const std::vector<int64_t>& examples, int64_t epoch,
                                  int64_t step) {
#ifdef CMN_HAVE_METRICS
  const auto& data = loader("train");
  if (!scst_cider_) {
    // CIDEr-D's document frequencies from the training references, built once (SCST's usual choice).
    std::vector<std::vector<std::string>> sets;
    for (const auto& e : data.examples()) sets.push_back({reference_text(tokenizer_, e.ids)});
    scst_cider_ = std::make_shared<metrics::CiderD>(sets);
  }
  std::vector<std::string> refs;
  for (int64_t i : examples) refs.push_back(reference_text(tokenizer_, data.examples()[static_cast<size_t>(i)].ids));
  const RewardFn reward = [&](const std::vector<std::vector<int64_t>>& seqs, const std::vector<int64_t>& study) {
    std::vector<double> r;
    for (size_t i = 0; i < seqs.size(); ++i) {
      r.push_back(scst_cider_->score(tokenizer_.decode(seqs[i]), {refs[static_cast<size_t>(study[i])]}));
    }
    return r;
  };
  ScstOptions o = config_.scst;
  o.seed = config_.trainer.seed * 1000003ULL + static_cast<uint64_t>(epoch) * 100003ULL + static_cast<uint64_t>(step);
  auto out = scst_step(*model_->encoder_decoder, att, o, reward);
  if (config_.trainer.progress && step % std::max<int64_t>(config_.trainer.log_period, 1) == 0) {
    LOG(INFO) << "scst step " << step << ": mean CIDEr-D of samples " << out.mean_reward << ", greedy "
              << out.mean_baseline;
  }
  return out.loss;
#else
  (void)att, (void)examples, (void)epoch, (void)step;
  TORCH_CHECK(false, "scst.after_epoch needs CIDEr-D from cmn_metrics, which this build does not have");
#endif
}

bool Trainer::writes_files() const { return !data_parallel_ || data_parallel_->rank() == 0; }

bool Trainer::improved(double value) const {
  if (!std::isfinite(value)) return false;
  return config_.trainer.monitor_mode == "max" ? value >= monitor_best_ : value <= monitor_best_;
}

void Trainer::run() {
  const auto& t = config_.trainer;
  fs::create_directories(t.save_dir);
  if (writes_files()) {
    const std::string error = durable::write_file(t.save_dir + "/config.yaml", to_yaml(config_));
    TORCH_CHECK(error.empty(), error);
  }
  auto write_predictions = [&](const EvalResult& r) {
    if (!writes_files()) return;
    std::string lines;
    for (size_t i = 0; i < r.ids.size(); ++i) {
      lines += nlohmann::json{{"id", r.ids[i]}, {"report", r.predictions[i]}, {"reference", r.references[i]}}.dump() + "\n";
    }
    const std::string error = durable::write_file(t.save_dir + "/predictions_" + r.split + ".jsonl", lines);
    TORCH_CHECK(error.empty(), error);
  };
  if (t.run_type == "val" || t.run_type == "test") {
    if (t.init_checkpoint.empty() && t.resume.empty()) {
      LOG(WARNING) << "run_type " << t.run_type << " without trainer.init_checkpoint or --resume: scoring random weights";
    }
    auto r = evaluate(t.run_type);
    write_predictions(r);
    nlohmann::json j;
    for (const auto& [k, v] : r.scores) j[k] = v;
    j["loss"] = r.loss;
    j["split"] = r.split;
    j["examples"] = r.ids.size();
    std::cout << j.dump() << std::endl;
    return;
  }

  // train / train_val. train_val trains on train+val and has no held-out split to select on: the last epoch is
  // kept as the best one, and only test is scored.
  std::vector<std::string> splits;
  for (const auto& s : t.eval_splits) {
    if (t.run_type == "train_val" && s == "val") continue;
    splits.push_back(s);
  }
  for (int64_t epoch = start_epoch_; epoch <= t.epochs; ++epoch) {
    const auto start = std::chrono::steady_clock::now();
    EpochLog log;
    log.epoch = epoch;
    log.lrs = scheduler_->current_lrs();
    log.train_loss = train_epoch(epoch);
    add_alignment_log(log);
    // Alignment pre-training epochs have not trained the decoder: nothing to evaluate or select yet.
    for (const auto& split : align_pretraining(epoch) ? std::vector<std::string>{} : splits) {
      auto r = evaluate(split);
      write_predictions(r);
      log.values[split + "_loss"] = r.loss;
      for (const auto& [k, v] : r.scores) log.values[split + "_" + k] = v;
    }
    scheduler_->step_epoch();  // lr_scheduler.step() at the end of _train_epoch
    bool best = false;
    if (align_pretraining(epoch)) {
      // neither best nor a patience epoch
    } else if (t.run_type == "train_val") {
      best = true;
    } else {
      auto it = log.values.find("val_" + t.monitor_metric);
      const double value = it == log.values.end() ? kNaN : it->second;
      if (improved(value)) {
        monitor_best_ = value;
        not_improved_ = 0;
        best = true;
      } else {
        ++not_improved_;
      }
    }
    log.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    history_.push_back(log);
    write_epoch_log(log);
    std::ostringstream line;
    line << "epoch " << epoch << ": train_loss " << log.train_loss;
    for (const auto& [k, v] : log.values) line << ", " << k << " " << v;
    LOG(INFO) << line.str() << (best ? " (best)" : "");
    write_plot();  // loss.png after every epoch, so a long run can be watched
    if (epoch % t.save_period == 0 || epoch == t.epochs) save_checkpoint(epoch, best);
    if (not_improved_ > t.early_stop) {
      LOG(INFO) << "val_" << t.monitor_metric << " did not improve for " << not_improved_ << " epochs: stopping";
      break;
    }
  }
  write_best_summary();
  write_bundle_dir();
}

}  // namespace cmn::train
