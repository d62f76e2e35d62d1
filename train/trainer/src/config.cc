#include "cmn/train/config.h"

#include <array>
#include <set>

#include <c10/util/Exception.h>
#include <yaml-cpp/yaml.h>

#include "cmn/common/config_reader.h"
#include "cmn/common/status_macros.h"
#include "cmn/model/config_fields.h"

namespace cmn::train {

namespace {

// ---- the recipe's field table (cmn/common/config_reader.h); ModelConfig's fields come from its own table ----

template <class V>
void visit(V& v, DataConfig& d) {
  v("annotation", d.annotation);
  v("image_dir", d.image_dir);
  v("vocab", d.vocab);
  v("batch_size", d.batch_size);
  v("num_workers", d.num_workers);
  v("prefetch_batches", d.prefetch_batches);
  v("on_bad_image", d.on_bad_image);
  v("train_resize", d.transform.train_resize);
  v("train_crop", d.transform.train_crop);
  v("horizontal_flip", d.transform.horizontal_flip);
  v("image_size", d.transform.image.size);
  v("mean", d.transform.image.mean);  // R, G, B
  v("std", d.transform.image.std);
}

template <class V>
void visit(V& v, OptimOptions& o) {
  v("type", o.type);
  v("lr_ve", o.lr_ve);
  v("lr_ed", o.lr_ed);
  v("weight_decay", o.weight_decay);
  std::array<double, 2> betas = {o.beta1, o.beta2};  // one YAML list, two fields
  v("betas", betas);
  o.beta1 = betas[0];
  o.beta2 = betas[1];
  v("eps", o.eps);
  v("amsgrad", o.amsgrad);
  v("grad_clip_value", o.grad_clip_value);
  v("grad_clip_norm", o.grad_clip_norm);
}

template <class V>
void visit(V& v, TrainerConfig& t) {
  v("run_type", t.run_type);
  v("epochs", t.epochs);
  v("seed", t.seed);
  v("save_dir", t.save_dir);
  v("save_period", t.save_period);
  v("monitor_metric", t.monitor_metric);
  v("monitor_mode", t.monitor_mode);
  v("early_stop", t.early_stop);
  v("log_period", t.log_period);
  v("resume", t.resume);
  v("init_checkpoint", t.init_checkpoint);
  v("pretrained_trunk", t.pretrained_trunk);
  v("freeze_visual_extractor", t.freeze_visual_extractor);
  v("cache_visual_features", t.cache_visual_features);
  v("threads", t.threads);
  v("device", t.device);
  v("eval_splits", t.eval_splits);
  v("eval_batch_size", t.eval_batch_size);
  v("max_steps_per_epoch", t.max_steps_per_epoch);
  v("eval_max_examples", t.eval_max_examples);
  v("progress", t.progress);
  v("bundle_dir", t.bundle_dir);
  v("bundle_name", t.bundle_name);
}

// `model.dropout` / `model.drop_prob_lm` are ModelConfig's fields; DropoutOptions mirrors them (see
// from_model / to_model below) and adds the two the reference fixes at 0.1.
template <class V>
void visit(V& v, TrainConfig& c) {
  v.section("model", [&](auto& s) {
    model::visit_model_config(s, c.model);
    s("attention_dropout", c.dropout.attention);
    s("memory_dropout", c.dropout.memory);
  });
  v.section("data", [&](auto& s) { visit(s, c.data); });
  v.section("optim", [&](auto& s) { visit(s, c.optim); });
  v.section("loss", [&](auto& s) { s("label_smoothing", c.loss.label_smoothing); });
  v.section("scst", [&](auto& s) {
    s("after_epoch", c.scst.after_epoch);
    s("samples", c.scst.samples);
    s("temperature", c.scst.temperature);
    s("max_length", c.scst.max_length);
  });
  v.section("align", [&](auto& s) {
    s("pretrain_epochs", c.align.pretrain_epochs);
    s("itc_weight", c.align.itc_weight);
    s("itm_weight", c.align.itm_weight);
    s("retrieval_index", c.align.retrieval_index);
    s("label_positives", c.align.label_positives);
  });
  v.section("scheduler", [&](auto& s) {
    s("type", c.scheduler.type);
    s("step_size", c.scheduler.step_size);
    s("gamma", c.scheduler.gamma);
    s("warmup_updates", c.scheduler.warmup_updates);
  });
  v.section("trainer", [&](auto& s) { visit(s, c.trainer); });
}

absl::Status read_recipe(const YAML::Node& root, const std::string& source, TrainConfig* c) {
  config::Section top(root, "", source);
  CMN_RETURN_IF_ERROR(top.check_map());
  config::ReadVisitor reader(top, model::kTrainRecipe);
  visit(reader, *c);
  CMN_RETURN_IF_ERROR(reader.finish());
  c->dropout.transformer = c->model.dropout;
  c->dropout.att_embed = c->model.drop_prob_lm;
  return absl::OkStatus();
}

void validate(const TrainConfig& c) {
  const std::string& s = c.source;
  try {
    model::validate_model_config(c.model);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, s, ": model: ", e.msg());
  }
  for (double p : {c.dropout.transformer, c.dropout.att_embed, c.dropout.attention, c.dropout.memory}) {
    TORCH_CHECK(p >= 0 && p < 1, s, ": model dropout probabilities must be in [0, 1), got ", p);
  }
  TORCH_CHECK(c.data.batch_size >= 1, s, ": data.batch_size must be >= 1");
  TORCH_CHECK(c.data.num_workers >= 0, s, ": data.num_workers must be >= 0");
  TORCH_CHECK(c.data.prefetch_batches >= 1, s, ": data.prefetch_batches must be >= 1");
  TORCH_CHECK(c.data.on_bad_image == "skip" || c.data.on_bad_image == "fatal", s,
              ": data.on_bad_image must be skip or fatal, got '", c.data.on_bad_image, "'");
  TORCH_CHECK(c.data.transform.train_crop >= 1 && c.data.transform.train_resize >= c.data.transform.train_crop, s,
              ": data.train_resize must be >= data.train_crop >= 1");
  TORCH_CHECK(c.optim.type == "adam", s, ": optim.type must be adam, got '", c.optim.type, "'");
  TORCH_CHECK(c.optim.lr_ve >= 0 && c.optim.lr_ed >= 0, s, ": optim learning rates must be >= 0");
  TORCH_CHECK(c.optim.grad_clip_value >= 0 && c.optim.grad_clip_norm >= 0, s, ": optim.grad_clip_* must be >= 0");
  TORCH_CHECK(c.loss.label_smoothing >= 0 && c.loss.label_smoothing < 1, s, ": loss.label_smoothing must be in [0, 1)");
  TORCH_CHECK(c.scst.after_epoch >= 0, s, ": scst.after_epoch must be >= 0 (0 = no SCST), got ", c.scst.after_epoch);
  TORCH_CHECK(c.scst.samples >= 1, s, ": scst.samples must be >= 1, got ", c.scst.samples);
  TORCH_CHECK(c.scst.temperature > 0, s, ": scst.temperature must be > 0, got ", c.scst.temperature);
  TORCH_CHECK(c.scst.max_length >= 0, s, ": scst.max_length must be >= 0 (0 = model.max_seq_length), got ",
              c.scst.max_length);
  TORCH_CHECK(c.align.pretrain_epochs >= 0 && c.align.itc_weight >= 0 && c.align.itm_weight >= 0, s,
              ": align.pretrain_epochs, itc_weight and itm_weight must be >= 0");
  TORCH_CHECK(!c.align.active() || c.model.align_queries > 0, s,
              ": align.* trains the alignment head, but the model has none: set model.align_queries (e.g. 32)");
  TORCH_CHECK(!c.align.retrieval_index || c.model.align_queries > 0, s,
              ": align.retrieval_index stores ITC embeddings, but the model has no alignment head (model.align_queries)");
  const bool scoring = c.trainer.run_type == "val" || c.trainer.run_type == "test";
  TORCH_CHECK(c.model.align_queries == 0 || c.align.active() || scoring, s, ": model.align_queries is ", c.model.align_queries,
              " but nothing trains the head: set align.pretrain_epochs, align.itc_weight or align.itm_weight");
  TORCH_CHECK(c.align.pretrain_epochs < c.trainer.epochs || scoring, s, ": align.pretrain_epochs (", c.align.pretrain_epochs, ") leaves no report-generation epoch of ",
              c.trainer.epochs);
  const std::set<std::string> schedulers = {"step", "inverse_sqrt", "none"};
  TORCH_CHECK(schedulers.count(c.scheduler.type), s, ": scheduler.type must be step, inverse_sqrt or none, got '",
              c.scheduler.type, "'");
  TORCH_CHECK(c.scheduler.step_size >= 1, s, ": scheduler.step_size must be >= 1");
  const std::set<std::string> run_types = {"train", "train_val", "val", "test"};
  TORCH_CHECK(run_types.count(c.trainer.run_type), s, ": trainer.run_type must be train, train_val, val or test, got '",
              c.trainer.run_type, "'");
  TORCH_CHECK(c.trainer.monitor_mode == "max" || c.trainer.monitor_mode == "min", s,
              ": trainer.monitor_mode must be max or min");
  const std::set<std::string> metrics = {"BLEU_1",      "BLEU_2",      "BLEU_3",
                                         "BLEU_4",      "METEOR",      "ROUGE_L",
                                         "CIDEr",       "loss",        "CE_F1_MACRO",
                                         "CE_F1_MICRO", "CE_phantom_macro_F1", "CE_phantom_micro_F1"};
  TORCH_CHECK(metrics.count(c.trainer.monitor_metric), s, ": trainer.monitor_metric '", c.trainer.monitor_metric,
              "' is not one of BLEU_1..BLEU_4, METEOR, ROUGE_L, CIDEr, CE_F1_MACRO, CE_F1_MICRO (CheXpert-14), "
              "CE_phantom_macro_F1, CE_phantom_micro_F1 (the phantom's findings), loss");
  for (const auto& split : c.trainer.eval_splits) {
    TORCH_CHECK(split == "val" || split == "test", s, ": trainer.eval_splits may hold val and test, got '", split, "'");
  }
  TORCH_CHECK(c.trainer.epochs >= 0 && c.trainer.save_period >= 1 && c.trainer.early_stop >= 0, s,
              ": trainer.epochs, save_period, early_stop must be >= 0 (save_period >= 1)");
  TORCH_CHECK(c.trainer.threads >= 0, s, ": trainer.threads must be >= 0");
  const std::string& d = c.trainer.device;
  const bool cuda_n = d.rfind("cuda:", 0) == 0 && d.size() > 5 &&
                      d.find_first_not_of("0123456789", 5) == std::string::npos;
  TORCH_CHECK(d == "cpu" || d == "cuda" || cuda_n, s, ": trainer.device '", d, "' is not one of cpu, cuda, cuda:N");
}

}  // namespace

TrainConfig parse_train_config(const std::string& yaml_text, const std::string& source,
                               const std::vector<std::string>& overrides) {
  const auto check = [](const YAML::Node& document, const std::string& where) {
    TrainConfig scratch;
    return read_recipe(document, where, &scratch);
  };
  absl::StatusOr<YAML::Node> root = config::load_with_overrides(yaml_text, source, overrides, check);
  TORCH_CHECK(root.ok(), root.status().message());
  TrainConfig config;
  config.source = source;
  const absl::Status read = read_recipe(*root, source, &config);
  TORCH_CHECK(read.ok(), read.message());
  validate(config);
  return config;
}

TrainConfig load_train_config(const std::string& yaml_path, const std::vector<std::string>& overrides) {
  absl::StatusOr<std::string> text = config::read_text_file(yaml_path);
  TORCH_CHECK(text.ok(), text.status().message());
  return parse_train_config(*text, yaml_path, overrides);
}

std::string to_yaml(const TrainConfig& config) {
  TrainConfig copy = config;
  copy.model.dropout = copy.dropout.transformer;  // DropoutOptions is what training used
  copy.model.drop_prob_lm = copy.dropout.att_embed;
  YAML::Emitter out;
  out << YAML::BeginMap;
  config::EmitVisitor emit(out, model::kTrainRecipe);
  visit(emit, copy);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace cmn::train
