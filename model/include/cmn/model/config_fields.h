#pragma once
// ModelConfig's field table: every field once, with its key and the formats it appears in. The R2GenCMN args
// JSON (config.cc), a bundle's model.yaml (pipeline/bundle.cc) and the cmn-train recipe (train/config.cc) all
// read and write ModelConfig through it, so a new field is one line here (plus the member in config.h).
//
// No YAML here: cmn_model links LibTorch only. A visitor is any object with
//   template <class T> void operator()(const char* key, T& field, unsigned formats);
// (cmn/common/config_reader.h has the YAML ones); `formats` is a mask of the ModelConfigFormat bits.
#include <cstdint>
#include <string>
#include <vector>

#include "cmn/model/config.h"

namespace cmn::model {

enum ModelConfigFormat : unsigned {
  kArgsJson = 1u,      // R2GenCMN's `args` JSON (read only; unknown keys there are ignored)
  kBundleYaml = 2u,    // model.yaml: `architecture:` and `decoding:` sections
  kTrainRecipe = 4u,   // cmn-train's `model:` section
  kAllFormats = kArgsJson | kBundleYaml | kTrainRecipe,
};

// What the checkpoint must match (model.yaml `architecture:`).
template <class V>
void visit_architecture(V& v, ModelConfig& c) {
  v("visual_extractor", c.visual_extractor, kAllFormats);
  v("d_vf", c.d_vf, kAllFormats);
  v("d_model", c.d_model, kAllFormats);
  v("d_ff", c.d_ff, kAllFormats);
  v("num_heads", c.num_heads, kAllFormats);
  v("num_layers", c.num_layers, kAllFormats);
  v("cmm_size", c.cmm_size, kAllFormats);
  v("cmm_dim", c.cmm_dim, kAllFormats);
  v("topk", c.topk, kAllFormats);
  v("use_bn", c.use_bn, kAllFormats);
  v("dropout", c.dropout, kAllFormats);
  v("drop_prob_lm", c.drop_prob_lm, kAllFormats);
  v("vocab_size", c.vocab_size, kArgsJson | kBundleYaml);  // a recipe's vocabulary comes from its data
  v("views", c.views, kAllFormats);
  v("dataset_name", c.dataset_name, kAllFormats);
  v("threshold", c.threshold, kAllFormats);
  v("align_queries", c.align_queries, kBundleYaml | kTrainRecipe);
  v("align_layers", c.align_layers, kBundleYaml | kTrainRecipe);
  v("align_dim", c.align_dim, kBundleYaml | kTrainRecipe);
  v("align_index_size", c.align_index_size, kBundleYaml);  // the trainer sets these when it writes the index
  v("align_index_length", c.align_index_length, kBundleYaml);
}

// Decoding defaults (model.yaml `decoding:`).
template <class V>
void visit_decoding(V& v, ModelConfig& c) {
  v("max_seq_length", c.max_seq_length, kAllFormats);
  v("beam_size", c.beam_size, kAllFormats);
  v("sample_method", c.sample_method, kAllFormats);
  v("temperature", c.temperature, kAllFormats);
  v("block_trigrams", c.block_trigrams, kAllFormats);
  v("length_penalty", c.length_penalty, kAllFormats);
  v("group_size", c.group_size, kArgsJson | kTrainRecipe);  // only 1 is supported; bundles do not store it
  v("seed", c.seed, kArgsJson | kBundleYaml);
  v("sample_seed", c.seed, kTrainRecipe);  // the recipe's `trainer.seed` is the training seed
}

template <class V>
void visit_model_config(V& v, ModelConfig& c) {
  visit_architecture(v, c);
  visit_decoding(v, c);
}

namespace config_fields_internal {
struct Collect {
  std::vector<const void*> addresses;
  template <class T>
  void operator()(const char*, T& field, unsigned) { addresses.push_back(&field); }
};
struct Assign {
  const std::vector<const void*>& addresses;
  size_t next = 0;
  template <class T>
  void operator()(const char*, T& field, unsigned) { field = *static_cast<const T*>(addresses[next++]); }
};
}  // namespace config_fields_internal

// Copies the fields `visit` lists from `from` to `to` (e.g. visit_decoding: a bundle keeps the decoding
// defaults it was given and the architecture of the model it holds). Both passes walk the same table in the
// same order, so the i-th address of the first is the i-th field of the second, of the same type.
template <class Visit>
void copy_fields(Visit visit, const ModelConfig& from, ModelConfig& to) {
  config_fields_internal::Collect collect;
  visit(collect, const_cast<ModelConfig&>(from));  // only addresses are taken, nothing is written
  config_fields_internal::Assign assign{collect.addresses};
  visit(assign, to);
}

}  // namespace cmn::model
