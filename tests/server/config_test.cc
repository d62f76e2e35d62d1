// configs/server.yaml and dotted overrides: strict keys, types and ranges, errors that name the key.
#include "cmn/server/config.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include "server_test_util.h"

namespace cmn::server {
namespace {

using testing::source_path;

TEST(ServerConfigTest, ShippedServerYamlParsesWithEveryKeyItsDefault) {
  auto config = load_server_config(source_path("configs/server.yaml"));
  ASSERT_TRUE(config.ok()) << config.status();
  const ServerConfig defaults;
  EXPECT_EQ(config->server.port, defaults.server.port);
  EXPECT_EQ(config->server.max_receive_message_mb, defaults.server.max_receive_message_mb);
  EXPECT_EQ(config->engine.max_batch_size, defaults.engine.max_batch_size);
  EXPECT_EQ(config->engine.max_queue_delay_ms, defaults.engine.max_queue_delay_ms);
  EXPECT_EQ(config->engine.max_pending, defaults.engine.max_pending);
  EXPECT_EQ(config->limits.max_instances, defaults.limits.max_instances);
  EXPECT_EQ(config->limits.max_pixels, defaults.limits.max_pixels);
  EXPECT_EQ(config->limits.max_beam_size, defaults.limits.max_beam_size);
  EXPECT_EQ(config->limits.max_length, defaults.limits.max_length);
  EXPECT_EQ(config->study.allowed_modalities, defaults.study.allowed_modalities);
  EXPECT_EQ(config->metrics.port, defaults.metrics.port);
  EXPECT_EQ(config->model.bundle, "build/bundles/untrained-demo");
}

TEST(ServerConfigTest, ShippedServerYamlListsEveryKey) {
  const YAML::Node shipped = YAML::LoadFile(source_path("configs/server.yaml"));
  const auto keys = server_config_keys();
  EXPECT_GT(keys.size(), 30u);
  for (const auto& key : keys) {
    const size_t dot = key.find('.');
    ASSERT_NE(dot, std::string::npos) << key;
    EXPECT_TRUE(shipped[key.substr(0, dot)][key.substr(dot + 1)].IsDefined()) << key << " is not documented in configs/server.yaml";
  }
}

TEST(ServerConfigTest, DottedOverridesSetNestedKeys) {
  auto config = load_server_config(source_path("configs/server.yaml"),
                                   {"server.port=0", "model.bundle=/some/dir", "study.allowed_modalities=[CR]",
                                    "engine.max_queue_delay_ms=0", "tls.cert_file=", "logging.requests=false"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->server.port, 0);
  EXPECT_EQ(config->model.bundle, "/some/dir");
  EXPECT_EQ(config->study.allowed_modalities, std::vector<std::string>{"CR"});
  EXPECT_EQ(config->engine.max_queue_delay_ms, 0);
  EXPECT_FALSE(config->logging.requests);
}

TEST(ServerConfigTest, OverridesWorkWithoutAFile) {
  auto config = load_server_config("", {"model.bundle=b", "metrics.port=-1"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->model.bundle, "b");
  EXPECT_EQ(config->metrics.port, -1);
}

TEST(ServerConfigTest, UnknownKeyInTheFileIsAnErrorNamingIt) {
  auto config = parse_server_config("model: {bundle: b}\nserver:\n  prot: 1\n", "x.yaml");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(config.status().message().find("x.yaml"), std::string::npos) << config.status();
  EXPECT_NE(config.status().message().find("'server.prot'"), std::string::npos) << config.status();
}

TEST(ServerConfigTest, UnknownSectionIsAnErrorNamingIt) {
  auto config = parse_server_config("model: {bundle: b}\nsevrer: {port: 1}\n", "x.yaml");
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("'sevrer'"), std::string::npos) << config.status();
}

TEST(ServerConfigTest, UnknownOverrideKeyNamesTheCommandLineAndTheKey) {
  auto config = load_server_config(source_path("configs/server.yaml"), {"engine.max_batch=3"});
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("command line"), std::string::npos) << config.status();
  EXPECT_NE(config.status().message().find("'engine.max_batch'"), std::string::npos) << config.status();
}

TEST(ServerConfigTest, OverrideWithoutEqualsIsAnError) {
  auto config = load_server_config("", {"model.bundle"});
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("key=value"), std::string::npos) << config.status();
}

TEST(ServerConfigTest, WrongTypeNamesTheKey) {
  auto config = load_server_config("", {"model.bundle=b", "engine.max_batch_size=lots"});
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("engine.max_batch_size"), std::string::npos) << config.status();
  EXPECT_NE(config.status().message().find("lots"), std::string::npos) << config.status();
}

TEST(ServerConfigTest, OutOfRangeValueNamesTheKey) {
  auto config = load_server_config("", {"model.bundle=b", "engine.max_batch_size=0"});
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("engine.max_batch_size"), std::string::npos) << config.status();
  auto port = load_server_config("", {"model.bundle=b", "server.port=70000"});
  ASSERT_FALSE(port.ok());
  EXPECT_NE(port.status().message().find("server.port"), std::string::npos) << port.status();
}

TEST(ServerConfigTest, NeedsExactlyOneModelSource) {
  EXPECT_FALSE(load_server_config("", {}).ok());
  auto both = load_server_config("", {"model.bundle=b", "model.r2gencmn=m.pth"});
  ASSERT_FALSE(both.ok());
  EXPECT_NE(both.status().message().find("model.bundle"), std::string::npos);
  auto partial = load_server_config("", {"model.r2gencmn=m.pth"});
  ASSERT_FALSE(partial.ok());
  EXPECT_NE(partial.status().message().find("model.args"), std::string::npos) << partial.status();
  EXPECT_TRUE(load_server_config("", {"model.r2gencmn=m.pth", "model.args=a.json", "model.annotation=x.json"}).ok());
}

TEST(ServerConfigTest, TlsNeedsBothCertificateAndKey) {
  auto config = load_server_config("", {"model.bundle=b", "tls.cert_file=c.pem"});
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("tls.key_file"), std::string::npos) << config.status();
  auto mutual = load_server_config("", {"model.bundle=b", "tls.client_ca_file=ca.pem"});
  ASSERT_FALSE(mutual.ok());
  EXPECT_NE(mutual.status().message().find("tls.client_ca_file"), std::string::npos) << mutual.status();
}

TEST(ServerConfigTest, ListWhereAValueBelongsIsAnError) {
  auto config = parse_server_config("model: {bundle: [a, b]}\n", "x.yaml");
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("model.bundle"), std::string::npos) << config.status();
}

TEST(ServerConfigTest, WrittenConfigReadsBackToTheSameValues) {
  auto config = load_server_config(source_path("configs/server.yaml"),
                                   {"server.port=0", "model.bundle=/some/dir", "study.allowed_modalities=[CR, DX]",
                                    "engine.max_batch_size=8", "server.shutdown_grace_s=2.5", "logging.requests=false",
                                    "sr.uid_root=1.2.826.0.1.3680043.10.543.99", "sr.series_number=42"});
  ASSERT_TRUE(config.ok()) << config.status();
  const std::string yaml = to_yaml(*config);
  auto back = parse_server_config(yaml, "written.yaml");
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << yaml;
  EXPECT_EQ(to_yaml(*back), yaml);
  EXPECT_EQ(back->server.port, 0);
  EXPECT_EQ(back->server.shutdown_grace_s, 2.5);
  EXPECT_EQ(back->model.bundle, "/some/dir");
  EXPECT_EQ(back->engine.max_batch_size, 8);
  EXPECT_EQ(back->study.allowed_modalities, (std::vector<std::string>{"CR", "DX"}));
  EXPECT_FALSE(back->logging.requests);
  EXPECT_EQ(back->sr.uid_root, "1.2.826.0.1.3680043.10.543.99");
  EXPECT_EQ(back->sr.series_number, 42);
  // Every key is written (the key list and the writer come from the same table).
  for (const auto& key : server_config_keys()) {
    EXPECT_NE(yaml.find(key.substr(key.find('.') + 1) + ":"), std::string::npos) << key;
  }
}

}  // namespace
}  // namespace cmn::server
