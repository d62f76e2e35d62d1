// The configuration layer (cmn/common/config_reader.h): strict reading with errors that name the dotted key,
// dotted overrides, and the field-table visitors' round trip (write, then read, gives the same values).
#include "cmn/common/config_reader.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace cmn::config {
namespace {

// A small options tree with every supported field type, listed once in its table.
struct Inner {
  int64_t count = 3;
  std::vector<std::string> names = {"CR", "DX"};
};
struct Options {
  std::string host = "0.0.0.0";
  int port = 50051;
  uint64_t seed = 9233;
  double rate = 0.5;
  float scale = 0.485f;
  bool enabled = true;
  std::array<float, 3> mean = {0.485f, 0.456f, 0.406f};
  std::vector<double> betas = {0.9, 0.98};
  std::string required_name;  // kRequired in the "strict" format only
  std::string json_only;      // format bit 2: not part of format 1
  Inner inner;
};

constexpr unsigned kFormatOne = 1u;
constexpr unsigned kFormatTwo = 2u;

template <class V>
void visit(V& v, Options& o) {
  v("host", o.host);
  v("port", o.port);
  v("seed", o.seed);
  v("rate", o.rate);
  v("scale", o.scale);
  v("enabled", o.enabled);
  v("mean", o.mean);
  v("betas", o.betas);
  v("required_name", o.required_name, kFormatOne | kRequired);
  v("json_only", o.json_only, kFormatTwo);
  v.section("inner", [&](auto& s) {
    s("count", o.inner.count);
    s("names", o.inner.names);
  });
}

absl::Status read(const YAML::Node& root, const std::string& source, Options* out, unsigned mask = kFormatOne) {
  Section top(root, "", source);
  if (absl::Status s = top.check_map(); !s.ok()) return s;
  ReadVisitor reader(top, mask);
  visit(reader, *out);
  return reader.finish();
}

absl::StatusOr<Options> parse(const std::string& text, const std::vector<std::string>& overrides = {}) {
  const auto check = [](const YAML::Node& doc, const std::string& where) {
    Options scratch;
    scratch.required_name = "x";
    YAML::Node copy = YAML::Clone(doc);
    if (!copy["required_name"]) copy["required_name"] = "x";  // checked alone, an override need not say it
    return read(copy, where, &scratch);
  };
  absl::StatusOr<YAML::Node> root = load_with_overrides(text, "test.yaml", overrides, check);
  if (!root.ok()) return root.status();
  Options options;
  if (absl::Status s = read(*root, "test.yaml", &options); !s.ok()) return s;
  return options;
}

std::string emit(Options options, unsigned mask = kFormatOne) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  EmitVisitor writer(out, mask);
  visit(writer, options);
  out << YAML::EndMap;
  return out.c_str();
}

std::string message(const absl::Status& status) { return std::string(status.message()); }

TEST(ConfigReaderTest, AbsentKeysKeepTheDefaults) {
  auto options = parse("required_name: a\n");
  ASSERT_TRUE(options.ok()) << options.status();
  const Options defaults;
  EXPECT_EQ(options->host, defaults.host);
  EXPECT_EQ(options->port, defaults.port);
  EXPECT_EQ(options->mean, defaults.mean);
  EXPECT_EQ(options->inner.names, defaults.inner.names);
  // A null value (`key:`) is "not given" too.
  auto nulls = parse("required_name: a\nport:\ninner: ~\n");
  ASSERT_TRUE(nulls.ok()) << nulls.status();
  EXPECT_EQ(nulls->port, defaults.port);
}

TEST(ConfigReaderTest, UnknownKeyIsNamedWithItsFullDottedPath) {
  auto nested = parse("required_name: a\ninner:\n  cuont: 4\n");
  ASSERT_FALSE(nested.ok());
  EXPECT_EQ(nested.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(message(nested.status()).find("test.yaml"), std::string::npos) << nested.status();
  EXPECT_NE(message(nested.status()).find("unknown key 'inner.cuont'"), std::string::npos) << nested.status();
  // The hint lists what is known at that level.
  EXPECT_NE(message(nested.status()).find("count"), std::string::npos) << nested.status();

  auto top = parse("required_name: a\nhots: x\n");
  ASSERT_FALSE(top.ok());
  EXPECT_NE(message(top.status()).find("unknown key 'hots'"), std::string::npos) << top.status();

  // A field of another format is unknown in this one.
  auto other = parse("required_name: a\njson_only: x\n");
  ASSERT_FALSE(other.ok());
  EXPECT_NE(message(other.status()).find("unknown key 'json_only'"), std::string::npos) << other.status();
  Options in_two;
  ASSERT_TRUE(read(YAML::Load("json_only: x\n"), "two.yaml", &in_two, kFormatTwo).ok());
  EXPECT_EQ(in_two.json_only, "x");
}

TEST(ConfigReaderTest, WrongTypesAreNamedWithKeyTypeAndValue) {
  auto port = parse("required_name: a\nport: lots\n");
  ASSERT_FALSE(port.ok());
  EXPECT_NE(message(port.status()).find("key 'port' must be a whole number, got 'lots'"), std::string::npos)
      << port.status();
  auto fraction = parse("required_name: a\nport: 1.5\n");
  ASSERT_FALSE(fraction.ok());
  EXPECT_NE(message(fraction.status()).find("'port'"), std::string::npos) << fraction.status();
  auto negative = parse("required_name: a\nseed: -1\n");
  ASSERT_FALSE(negative.ok());
  EXPECT_NE(message(negative.status()).find("'seed'"), std::string::npos) << negative.status();
  auto flag = parse("required_name: a\nenabled: maybe\n");
  ASSERT_FALSE(flag.ok());
  EXPECT_NE(message(flag.status()).find("key 'enabled' must be true or false"), std::string::npos) << flag.status();
  auto mean = parse("required_name: a\nmean: [1, 2]\n");
  ASSERT_FALSE(mean.ok());
  EXPECT_NE(message(mean.status()).find("key 'mean' must be a list of 3 values"), std::string::npos) << mean.status();
  auto names = parse("required_name: a\ninner:\n  names: CR\n");
  ASSERT_FALSE(names.ok());
  EXPECT_NE(message(names.status()).find("key 'inner.names' must be a list"), std::string::npos) << names.status();
  auto section = parse("required_name: a\ninner: 3\n");
  ASSERT_FALSE(section.ok());
  EXPECT_NE(message(section.status()).find("key 'inner' must be a mapping"), std::string::npos) << section.status();
  auto scalar = parse("required_name: a\nhost: [a, b]\n");
  ASSERT_FALSE(scalar.ok());
  EXPECT_NE(message(scalar.status()).find("key 'host' must be a single value"), std::string::npos) << scalar.status();
}

TEST(ConfigReaderTest, RequiredKeyAndDocumentShape) {
  auto missing = parse("port: 1\n");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(message(missing.status()).find("key 'required_name' is required"), std::string::npos) << missing.status();
  auto list = parse("- a\n- b\n");
  ASSERT_FALSE(list.ok());
  EXPECT_NE(message(list.status()).find("must be a mapping"), std::string::npos) << list.status();
  auto broken = parse("a: [1, 2\n");
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(message(broken.status()).find("test.yaml: not valid YAML"), std::string::npos) << broken.status();
}

TEST(ConfigReaderTest, OverridesSetNestedKeysAfterTheFile) {
  auto options = parse("required_name: a\nport: 1\ninner:\n  count: 5\n",
                       {"port=2", "inner.names=[DR]", "host=", "inner.count=null", "mean=[1, 2, 3]"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->port, 2);
  EXPECT_EQ(options->inner.names, std::vector<std::string>{"DR"});
  EXPECT_EQ(options->host, "");  // `key=` is the empty string
  EXPECT_EQ(options->inner.count, Inner{}.count);  // `key=null` restores the default
  EXPECT_EQ(options->mean, (std::array<float, 3>{1, 2, 3}));
}

TEST(ConfigReaderTest, OverrideErrorsNameTheCommandLine) {
  auto unknown = parse("required_name: a\n", {"inner.cuont=4"});
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(message(unknown.status()).find("command line: unknown key 'inner.cuont'"), std::string::npos)
      << unknown.status();
  auto type = parse("required_name: a\n", {"port=lots"});
  ASSERT_FALSE(type.ok());
  EXPECT_NE(message(type.status()).find("command line: key 'port'"), std::string::npos) << type.status();
  auto no_equals = parse("required_name: a\n", {"port"});
  ASSERT_FALSE(no_equals.ok());
  EXPECT_NE(message(no_equals.status()).find("'port' is not key=value"), std::string::npos) << no_equals.status();
  auto empty_key = parse("required_name: a\n", {"=3"});
  ASSERT_FALSE(empty_key.ok());
  EXPECT_NE(message(empty_key.status()).find("is not key=value"), std::string::npos) << empty_key.status();
  auto empty_part = parse("required_name: a\n", {"inner..count=3"});
  ASSERT_FALSE(empty_part.ok());
  EXPECT_NE(message(empty_part.status()).find("bad key 'inner..count'"), std::string::npos) << empty_part.status();
  auto bad_yaml = parse("required_name: a\n", {"inner.names=[CR"});
  ASSERT_FALSE(bad_yaml.ok());
  EXPECT_NE(message(bad_yaml.status()).find("command line: inner.names: cannot parse '[CR'"), std::string::npos)
      << bad_yaml.status();
  // Through a value that is not a section.
  YAML::Node root = YAML::Load("port: 1\n");
  const absl::Status through = apply_override(root, "port.x=1");
  ASSERT_FALSE(through.ok());
  EXPECT_NE(message(through).find("'port' is not a section"), std::string::npos) << through;
}

TEST(ConfigReaderTest, WriteThenReadGivesTheSameValues) {
  Options changed;
  changed.host = "null";  // text YAML would read as null: must be quoted to survive
  changed.port = 0;
  changed.seed = 18446744073709551615ull;
  changed.rate = 1e-9;
  changed.scale = 0.1f;
  changed.enabled = false;
  changed.mean = {0.1f, 1.0f / 3.0f, 2.5f};
  changed.betas = {};
  changed.required_name = "";  // an empty string is still given
  changed.inner.count = -7;
  changed.inner.names = {"a: b", "#c", "1.0"};
  const std::string yaml = emit(changed);
  Options back;
  ASSERT_TRUE(read(YAML::Load(yaml), "emitted", &back).ok()) << yaml;
  EXPECT_EQ(back.host, changed.host) << yaml;
  EXPECT_EQ(back.port, changed.port);
  EXPECT_EQ(back.seed, changed.seed);
  EXPECT_EQ(back.rate, changed.rate);
  EXPECT_EQ(back.scale, changed.scale);
  EXPECT_EQ(back.enabled, changed.enabled);
  EXPECT_EQ(back.mean, changed.mean);
  EXPECT_EQ(back.betas, changed.betas);
  EXPECT_EQ(back.required_name, changed.required_name);
  EXPECT_EQ(back.inner.count, changed.inner.count);
  EXPECT_EQ(back.inner.names, changed.inner.names) << yaml;
  EXPECT_EQ(emit(back), yaml);
  // A field of another format is not written.
  EXPECT_EQ(yaml.find("json_only"), std::string::npos) << yaml;
}

TEST(ConfigReaderTest, KeysVisitorListsEveryDottedKeyOnce) {
  std::vector<std::string> keys;
  KeysVisitor collect(&keys, "", kFormatOne);
  Options defaults;
  visit(collect, defaults);
  EXPECT_EQ(keys, (std::vector<std::string>{"host", "port", "seed", "rate", "scale", "enabled", "mean", "betas",
                                            "required_name", "inner.count", "inner.names"}));
}

TEST(ConfigReaderTest, ShortestFloatTextReadsBack) {
  EXPECT_EQ(shortest(0.485f), "0.485");
  EXPECT_EQ(shortest(1.0), "1.0");
  EXPECT_EQ(std::stod(shortest(0.1 + 0.2)), 0.1 + 0.2);
}

}  // namespace
}  // namespace cmn::config
