#include "cmn/train/config.h"

#include <fstream>
#include <set>
#include <sstream>

#include <yaml-cpp/yaml.h>

namespace cmn::train {

namespace {

// ---- struct -> YAML (the defaults are the schema) ----

YAML::Node to_node(const TrainConfig& c) {
  YAML::Node root;
  const auto& m = c.model;
  YAML::Node model;
  model["visual_extractor"] = m.visual_extractor;
  model["d_vf"] = m.d_vf;
  model["d_model"] = m.d_model;
  model["d_ff"] = m.d_ff;
  model["num_heads"] = m.num_heads;
  model["num_layers"] = m.num_layers;
  model["cmm_size"] = m.cmm_size;
  model["cmm_dim"] = m.cmm_dim;
  model["topk"] = m.topk;
  model["use_bn"] = m.use_bn;
  model["dropout"] = c.dropout.transformer;
  model["drop_prob_lm"] = c.dropout.att_embed;
  model["attention_dropout"] = c.dropout.attention;
  model["memory_dropout"] = c.dropout.memory;
  model["views"] = m.views;
  model["dataset_name"] = m.dataset_name;
  model["threshold"] = m.threshold;
  model["max_seq_length"] = m.max_seq_length;
  model["beam_size"] = m.beam_size;
  model["sample_method"] = m.sample_method;
  model["temperature"] = m.temperature;
  model["block_trigrams"] = m.block_trigrams;
  model["length_penalty"] = m.length_penalty;
  model["group_size"] = m.group_size;
  model["sample_seed"] = m.seed;
  root["model"] = model;

  const auto& d = c.data;
  YAML::Node data;
  data["annotation"] = d.annotation;
  data["image_dir"] = d.image_dir;
  data["vocab"] = d.vocab;
  data["batch_size"] = d.batch_size;
  data["num_workers"] = d.num_workers;
  data["prefetch_batches"] = d.prefetch_batches;
  data["on_bad_image"] = d.on_bad_image;
  data["train_resize"] = d.transform.train_resize;
  data["train_crop"] = d.transform.train_crop;
  data["horizontal_flip"] = d.transform.horizontal_flip;
  data["image_size"] = d.transform.image.size;
  data["mean"] = std::vector<double>(d.transform.image.mean.begin(), d.transform.image.mean.end());
  data["std"] = std::vector<double>(d.transform.image.std.begin(), d.transform.image.std.end());
  root["data"] = data;

  const auto& o = c.optim;
  YAML::Node optim;
  optim["type"] = o.type;
  optim["lr_ve"] = o.lr_ve;
  optim["lr_ed"] = o.lr_ed;
  optim["weight_decay"] = o.weight_decay;
  optim["betas"] = std::vector<double>{o.beta1, o.beta2};
  optim["eps"] = o.eps;
  optim["amsgrad"] = o.amsgrad;
  optim["grad_clip_value"] = o.grad_clip_value;
  optim["grad_clip_norm"] = o.grad_clip_norm;
  root["optim"] = optim;

  YAML::Node loss;
  loss["label_smoothing"] = c.loss.label_smoothing;
  root["loss"] = loss;

  YAML::Node scst;
  scst["after_epoch"] = c.scst.after_epoch;
  scst["samples"] = c.scst.samples;
  scst["temperature"] = c.scst.temperature;
  scst["max_length"] = c.scst.max_length;
  root["scst"] = scst;

  YAML::Node sched;
  sched["type"] = c.scheduler.type;
  sched["step_size"] = c.scheduler.step_size;
  sched["gamma"] = c.scheduler.gamma;
  sched["warmup_updates"] = c.scheduler.warmup_updates;
  root["scheduler"] = sched;

  const auto& t = c.trainer;
  YAML::Node tr;
  tr["run_type"] = t.run_type;
  tr["epochs"] = t.epochs;
  tr["seed"] = t.seed;
  tr["save_dir"] = t.save_dir;
  tr["save_period"] = t.save_period;
  tr["monitor_metric"] = t.monitor_metric;
  tr["monitor_mode"] = t.monitor_mode;
  tr["early_stop"] = t.early_stop;
  tr["log_period"] = t.log_period;
  tr["resume"] = t.resume;
  tr["init_checkpoint"] = t.init_checkpoint;
  tr["pretrained_trunk"] = t.pretrained_trunk;
  tr["freeze_visual_extractor"] = t.freeze_visual_extractor;
  tr["cache_visual_features"] = t.cache_visual_features;
  tr["threads"] = t.threads;
  tr["eval_splits"] = t.eval_splits;
  tr["eval_batch_size"] = t.eval_batch_size;
  tr["max_steps_per_epoch"] = t.max_steps_per_epoch;
  tr["eval_max_examples"] = t.eval_max_examples;
  tr["progress"] = t.progress;
  tr["bundle_dir"] = t.bundle_dir;
  tr["bundle_name"] = t.bundle_name;
  root["trainer"] = tr;
  return root;
}

// ---- YAML -> struct, errors naming the key ----

class Reader {
 public:
  Reader(const YAML::Node& root, std::string source) : root_(root), source_(std::move(source)) {}

  template <typename T>
  void get(const std::string& section, const std::string& key, T& out) const {
    const YAML::Node node = root_[section][key];
    try {
      out = node.as<T>();
    } catch (const YAML::Exception& e) {
      TORCH_CHECK(false, source_, ": ", section, ".", key, " has the wrong type (", e.msg, "): '", dump(node), "'");
    }
  }

 private:
  static std::string dump(const YAML::Node& node) {
    YAML::Emitter out;
    out << YAML::Flow << node;
    return out.c_str();
  }
  const YAML::Node& root_;
  std::string source_;
};

TrainConfig from_node(const YAML::Node& root, const std::string& source) {
  TrainConfig c;
  c.source = source;
  Reader r(root, source);
  auto& m = c.model;
  r.get("model", "visual_extractor", m.visual_extractor);
  r.get("model", "d_vf", m.d_vf);
  r.get("model", "d_model", m.d_model);
  r.get("model", "d_ff", m.d_ff);
  r.get("model", "num_heads", m.num_heads);
  r.get("model", "num_layers", m.num_layers);
  r.get("model", "cmm_size", m.cmm_size);
  r.get("model", "cmm_dim", m.cmm_dim);
  r.get("model", "topk", m.topk);
  r.get("model", "use_bn", m.use_bn);
  r.get("model", "dropout", c.dropout.transformer);
  r.get("model", "drop_prob_lm", c.dropout.att_embed);
  r.get("model", "attention_dropout", c.dropout.attention);
  r.get("model", "memory_dropout", c.dropout.memory);
  m.dropout = c.dropout.transformer;
  m.drop_prob_lm = c.dropout.att_embed;
  r.get("model", "views", m.views);
  r.get("model", "dataset_name", m.dataset_name);
  r.get("model", "threshold", m.threshold);
  r.get("model", "max_seq_length", m.max_seq_length);
  r.get("model", "beam_size", m.beam_size);
  r.get("model", "sample_method", m.sample_method);
  r.get("model", "temperature", m.temperature);
  r.get("model", "block_trigrams", m.block_trigrams);
  r.get("model", "length_penalty", m.length_penalty);
  r.get("model", "group_size", m.group_size);
  r.get("model", "sample_seed", m.seed);

  auto& d = c.data;
  r.get("data", "annotation", d.annotation);
  r.get("data", "image_dir", d.image_dir);
  r.get("data", "vocab", d.vocab);
  r.get("data", "batch_size", d.batch_size);
  r.get("data", "num_workers", d.num_workers);
  r.get("data", "prefetch_batches", d.prefetch_batches);
  r.get("data", "on_bad_image", d.on_bad_image);
  r.get("data", "train_resize", d.transform.train_resize);
  r.get("data", "train_crop", d.transform.train_crop);
  r.get("data", "horizontal_flip", d.transform.horizontal_flip);
  r.get("data", "image_size", d.transform.image.size);
  std::vector<float> mean, stdev;
  r.get("data", "mean", mean);
  r.get("data", "std", stdev);
  TORCH_CHECK(mean.size() == 3 && stdev.size() == 3, source, ": data.mean and data.std need 3 values (R, G, B)");
  for (int i = 0; i < 3; ++i) {
    d.transform.image.mean[i] = mean[i];
    d.transform.image.std[i] = stdev[i];
  }

  auto& o = c.optim;
  r.get("optim", "type", o.type);
  r.get("optim", "lr_ve", o.lr_ve);
  r.get("optim", "lr_ed", o.lr_ed);
  r.get("optim", "weight_decay", o.weight_decay);
  std::vector<double> betas;
  r.get("optim", "betas", betas);
  TORCH_CHECK(betas.size() == 2, source, ": optim.betas needs 2 values, got ", betas.size());
  o.beta1 = betas[0];
  o.beta2 = betas[1];
  r.get("optim", "eps", o.eps);
  r.get("optim", "amsgrad", o.amsgrad);
  r.get("optim", "grad_clip_value", o.grad_clip_value);
  r.get("optim", "grad_clip_norm", o.grad_clip_norm);

  r.get("loss", "label_smoothing", c.loss.label_smoothing);

  r.get("scst", "after_epoch", c.scst.after_epoch);
  r.get("scst", "samples", c.scst.samples);
  r.get("scst", "temperature", c.scst.temperature);
  r.get("scst", "max_length", c.scst.max_length);

  r.get("scheduler", "type", c.scheduler.type);
  r.get("scheduler", "step_size", c.scheduler.step_size);
  r.get("scheduler", "gamma", c.scheduler.gamma);
  r.get("scheduler", "warmup_updates", c.scheduler.warmup_updates);

  auto& t = c.trainer;
  r.get("trainer", "run_type", t.run_type);
  r.get("trainer", "epochs", t.epochs);
  r.get("trainer", "seed", t.seed);
  r.get("trainer", "save_dir", t.save_dir);
  r.get("trainer", "save_period", t.save_period);
  r.get("trainer", "monitor_metric", t.monitor_metric);
  r.get("trainer", "monitor_mode", t.monitor_mode);
  r.get("trainer", "early_stop", t.early_stop);
  r.get("trainer", "log_period", t.log_period);
  r.get("trainer", "resume", t.resume);
  r.get("trainer", "init_checkpoint", t.init_checkpoint);
  r.get("trainer", "pretrained_trunk", t.pretrained_trunk);
  r.get("trainer", "freeze_visual_extractor", t.freeze_visual_extractor);
  r.get("trainer", "cache_visual_features", t.cache_visual_features);
  r.get("trainer", "threads", t.threads);
  r.get("trainer", "eval_splits", t.eval_splits);
  r.get("trainer", "eval_batch_size", t.eval_batch_size);
  r.get("trainer", "max_steps_per_epoch", t.max_steps_per_epoch);
  r.get("trainer", "eval_max_examples", t.eval_max_examples);
  r.get("trainer", "progress", t.progress);
  r.get("trainer", "bundle_dir", t.bundle_dir);
  r.get("trainer", "bundle_name", t.bundle_name);
  return c;
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
}

// Overlays `user` on `base` (which holds every allowed key). Unknown keys are an error naming their path.
void merge(YAML::Node base, const YAML::Node& user, const std::string& path, const std::string& source) {
  TORCH_CHECK(user.IsMap(), source, ": '", path.empty() ? "(top level)" : path, "' must be a mapping");
  for (const auto& item : user) {
    const std::string key = item.first.as<std::string>();
    const std::string full = path.empty() ? key : path + "." + key;
    TORCH_CHECK(base[key], source, ": unknown key '", full, "'");
    if (base[key].IsMap()) {
      merge(base[key], item.second, full, source);
    } else {
      TORCH_CHECK(!item.second.IsMap(), source, ": '", full, "' must be a value, not a mapping");
      base[key] = item.second;
    }
  }
}

void apply_override(YAML::Node root, const std::string& text) {
  const auto eq = text.find('=');
  TORCH_CHECK(eq != std::string::npos && eq > 0, "override '", text, "' is not key=value (e.g. optim.lr_ed=5e-4)");
  const std::string key = text.substr(0, eq);
  const std::string value = text.substr(eq + 1);
  std::vector<std::string> parts;
  std::stringstream ss(key);
  for (std::string part; std::getline(ss, part, '.');) parts.push_back(part);
  TORCH_CHECK(parts.size() == 2, "override '", text, "': key '", key, "' must be section.name (e.g. optim.lr_ed)");
  YAML::Node section = root[parts[0]];
  TORCH_CHECK(section && section.IsMap(), "override '", text, "': unknown key '", key, "' (no section '", parts[0], "')");
  TORCH_CHECK(section[parts[1]], "override '", text, "': unknown key '", key, "'");
  YAML::Node parsed;
  try {
    parsed = value.empty() ? YAML::Node(std::string()) : YAML::Load(value);
  } catch (const YAML::Exception& e) {
    TORCH_CHECK(false, "override '", text, "': value is not YAML: ", e.msg);
  }
  if (parsed.IsNull()) parsed = YAML::Node(value);
  section[parts[1]] = parsed;
}

}  // namespace

TrainConfig parse_train_config(const std::string& yaml_text, const std::string& source,
                               const std::vector<std::string>& overrides) {
  YAML::Node root = to_node(TrainConfig{});
  YAML::Node user;
  try {
    user = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    TORCH_CHECK(false, source, ": not valid YAML: ", e.what());
  }
  if (user && !user.IsNull()) merge(root, user, "", source);
  for (const auto& o : overrides) apply_override(root, o);
  TrainConfig config = from_node(root, source);
  validate(config);
  return config;
}

TrainConfig load_train_config(const std::string& yaml_path, const std::vector<std::string>& overrides) {
  std::ifstream in(yaml_path);
  TORCH_CHECK(in.good(), "cannot open config '", yaml_path, "'");
  std::stringstream text;
  text << in.rdbuf();
  return parse_train_config(text.str(), yaml_path, overrides);
}

std::string to_yaml(const TrainConfig& config) {
  YAML::Emitter out;
  out << to_node(config);
  return std::string(out.c_str()) + "\n";
}

}  // namespace cmn::train
