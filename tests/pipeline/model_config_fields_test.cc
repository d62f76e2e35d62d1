// ModelConfig's one field table (cmn/model/config_fields.h) through the YAML visitors of the configuration
// layer (cmn/common/config_reader.h) and the args-JSON reader: every field written is read back equal, in
// each format the field belongs to, and copy_fields copies exactly the fields a table lists.
#include "cmn/model/config_fields.h"

#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "cmn/common/config_reader.h"
#include "cmn/model/config.h"

namespace cmn::model {
namespace {

// Every field of a format as "key=value" text, in table order (the comparison of two configs).
struct Dump {
  unsigned mask;
  std::vector<std::string> lines;
  template <class T>
  void operator()(const char* key, T& field, unsigned formats) {
    if ((formats & mask) == 0) return;
    std::ostringstream s;
    s.precision(17);
    s << key << "=" << field;
    lines.push_back(s.str());
  }
};
std::vector<std::string> dump(ModelConfig c, unsigned mask) {
  Dump d{mask, {}};
  visit_model_config(d, c);
  return d.lines;
}

// Gives every field a value different from its default (the i-th field: default changed by i + 1).
struct Perturb {
  int i = 0;
  void operator()(const char*, int64_t& field, unsigned) { field += ++i; }
  void operator()(const char*, double& field, unsigned) { field += 0.125 * ++i; }
  void operator()(const char*, std::string& field, unsigned) { field += "_" + std::to_string(++i); }
};

ModelConfig perturbed() {
  ModelConfig c;
  Perturb p;
  visit_model_config(p, c);
  return c;
}

std::string emit(ModelConfig c, unsigned mask) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  config::EmitVisitor writer(out, mask);
  visit_model_config(writer, c);
  out << YAML::EndMap;
  return out.c_str();
}

absl::Status read(const std::string& yaml, unsigned mask, ModelConfig* c) {
  config::Section top(YAML::Load(yaml), "", "model.yaml");
  config::ReadVisitor reader(top, mask);
  visit_model_config(reader, *c);
  return reader.finish();
}

TEST(ModelConfigFieldsTest, EveryFieldRoundTripsThroughYamlInEachFormat) {
  const ModelConfig changed = perturbed();
  ASSERT_NE(dump(changed, kAllFormats), dump(ModelConfig{}, kAllFormats));
  for (unsigned mask : {unsigned{kBundleYaml}, unsigned{kTrainRecipe}}) {
    const std::string yaml = emit(changed, mask);
    ModelConfig back;
    ASSERT_TRUE(read(yaml, mask, &back).ok()) << yaml;
    EXPECT_EQ(dump(back, mask), dump(changed, mask)) << yaml;
    EXPECT_EQ(emit(back, mask), yaml);
  }
}

TEST(ModelConfigFieldsTest, FormatsDifferOnlyWhereTheTableSays) {
  const std::string bundle = emit(ModelConfig{}, kBundleYaml);
  const std::string recipe = emit(ModelConfig{}, kTrainRecipe);
  EXPECT_NE(bundle.find("vocab_size:"), std::string::npos);
  EXPECT_EQ(recipe.find("vocab_size:"), std::string::npos);
  EXPECT_EQ(bundle.find("group_size:"), std::string::npos);
  EXPECT_NE(recipe.find("group_size:"), std::string::npos);
  EXPECT_NE(recipe.find("sample_seed:"), std::string::npos);
  // A key of another format is an unknown key, named.
  ModelConfig c;
  const absl::Status status = read("vocab_size: 7\n", kTrainRecipe, &c);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("unknown key 'vocab_size'"), std::string::npos) << status;
}

// The args JSON of a config, written from the table (strings quoted, numbers plain).
struct Json {
  std::string text = "{";
  void operator()(const char* key, const std::string& f, unsigned formats) { add(key, "\"" + f + "\"", formats); }
  void operator()(const char* key, const int64_t& f, unsigned formats) { add(key, std::to_string(f), formats); }
  void operator()(const char* key, const double& f, unsigned formats) {
    std::ostringstream s;
    s.precision(17);
    s << f;
    add(key, s.str(), formats);
  }
  void add(const char* key, const std::string& value, unsigned formats) {
    if ((formats & kArgsJson) == 0) return;
    text += std::string(text.size() > 1 ? ", " : "") + "\"" + key + "\": " + value;
  }
};

TEST(ModelConfigFieldsTest, ArgsJsonReadsEveryArgsField) {
  // A valid configuration unlike the defaults (validate_model_config runs on the parsed one).
  ModelConfig c;
  c.d_model = 256;
  c.cmm_dim = 256;
  c.num_heads = 4;
  c.d_ff = 1024;
  c.num_layers = 2;
  c.cmm_size = 1024;
  c.topk = 16;
  c.dropout = 0.2;
  c.drop_prob_lm = 0.3;
  c.vocab_size = 760;
  c.views = 1;
  c.dataset_name = "mimic_cxr";
  c.threshold = 10;
  c.max_seq_length = 100;
  c.beam_size = 5;
  c.sample_method = "greedy";
  c.temperature = 0.7;
  c.block_trigrams = 0;
  c.length_penalty = "wu_0.5";
  c.seed = 42;
  Json json;
  visit_model_config(json, c);
  json.text += ", \"save_dir\": \"results/x\", \"n_gpu\": 1}";  // R2GenCMN's other args are ignored
  const ModelConfig parsed = parse_model_config(json.text, "args.json");
  EXPECT_EQ(dump(parsed, kArgsJson), dump(c, kArgsJson)) << json.text;
  EXPECT_NE(dump(parsed, kArgsJson), dump(ModelConfig{}, kArgsJson));
}

TEST(ModelConfigFieldsTest, CopyFieldsCopiesTheDecodingFieldsOnly) {
  const ModelConfig from = perturbed();
  ModelConfig to;
  copy_fields([](auto& v, ModelConfig& c) { visit_decoding(v, c); }, from, to);
  EXPECT_EQ(to.beam_size, from.beam_size);
  EXPECT_EQ(to.sample_method, from.sample_method);
  EXPECT_EQ(to.seed, from.seed);
  EXPECT_EQ(to.length_penalty, from.length_penalty);
  EXPECT_EQ(to.d_model, ModelConfig{}.d_model);  // architecture untouched
  EXPECT_EQ(to.dataset_name, ModelConfig{}.dataset_name);
}

}  // namespace
}  // namespace cmn::model
