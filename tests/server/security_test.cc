// Bearer tokens, TLS and mutual TLS on a real server. Certificates are made at test time with the openssl CLI.
#include <cstdlib>

#include <gtest/gtest.h>

#include "cmn/pipeline/bundle.h"
#include "server_test_util.h"

namespace cmn::server {
namespace {

using namespace cmn::server::testing;  // NOLINT: test helpers

grpc::Status model_info(v1::ReportService::Stub& stub, const std::string& token = "",
                        v1::ModelInfo* out = nullptr) {
  grpc::ClientContext context;
  set_deadline(&context, std::chrono::seconds(10));
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  v1::ModelInfo info;
  const grpc::Status status = stub.GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
  if (out != nullptr) *out = info;
  return status;
}

TEST(AuthTest, BearerTokenIsRequiredWhenConfigured) {
  ScopedDir dir("auth");
  write_bytes(dir.file("tokens.sha256"), "# test tokens\n" + pipeline::sha256_hex("right-token") + "\n");
  auto config = test_config(untrained_bundle_dir());
  config.auth.token_hashes_file = dir.file("tokens.sha256");
  auto s = start_server(config, untrained_model());
  ASSERT_TRUE(s.server);

  EXPECT_EQ(model_info(*s.stub).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(model_info(*s.stub, "wrong-token").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  v1::ModelInfo info;
  ASSERT_TRUE(model_info(*s.stub, "right-token", &info).ok());
  EXPECT_EQ(info.name(), "cmn-untrained-test");

  // The report RPCs too, before any work is done.
  {
    grpc::ClientContext context;
    v1::GenerateReportResponse response;
    EXPECT_EQ(s.stub->GenerateReport(&context, make_request({chest("RG1_J2KI.dcm")}), &response).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext context;
    auto reader = s.stub->StreamReport(&context, make_request({chest("RG1_J2KI.dcm")}));
    v1::StreamReportResponse message;
    EXPECT_FALSE(reader->Read(&message));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  // The admin call too: without the token nothing is loaded (a reload of the same bundle would succeed).
  {
    grpc::ClientContext context;
    v1::ReloadModelRequest request;
    request.set_bundle(untrained_bundle_dir());
    v1::ModelInfo reloaded;
    EXPECT_EQ(s.stub->ReloadModel(&context, request, &reloaded).error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(request_count(*s.server, "ReloadModel", "UNAUTHENTICATED"), 1);
  }
  EXPECT_EQ(request_count(*s.server, "GenerateReport", "UNAUTHENTICATED"), 1);
  EXPECT_EQ(s.server->metrics().render().find("cmn_batch_size_count 1"), std::string::npos);

  // Health stays open for load balancers and probes.
  int serving = 0;
  ASSERT_TRUE(health_check(s.channel, "cmn.v1.ReportService", &serving).ok());
  EXPECT_EQ(serving, 1);
}

TEST(AuthTest, MissingTokenFileIsRefusedAtStart) {
  auto config = test_config(untrained_bundle_dir());
  config.auth.token_hashes_file = "/nonexistent/tokens.sha256";
  auto server = ReportServer::serve(config, untrained_model());
  ASSERT_FALSE(server.ok());
  EXPECT_NE(server.status().message().find("auth.token_hashes_file"), std::string::npos) << server.status();
}

// A CA, a server certificate for localhost / 127.0.0.1 and a client certificate, all signed by the CA; and a
// second, unrelated CA.
class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (std::system("command -v openssl >/dev/null 2>&1") != 0) return;
    dir_ = new ScopedDir("tls");
    const std::string d = dir_->path();
    write_bytes(d + "/server.ext", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
    write_bytes(d + "/client.ext", "extendedKeyUsage=clientAuth\n");
    const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    const std::string script =
        "cd " + d + " && (" +
        "openssl req -x509 " + key + " -keyout ca.key -out ca.pem -days 2 -subj '/CN=cmn test CA' && " +
        "openssl req -x509 " + key + " -keyout other_ca.key -out other_ca.pem -days 2 -subj '/CN=other CA' && " +
        "openssl req " + key + " -keyout server.key -out server.csr -subj '/CN=localhost' && " +
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 "
        "-extfile server.ext && " +
        "openssl req " + key + " -keyout client.key -out client.csr -subj '/CN=cmn test client' && " +
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 "
        "-extfile client.ext) > openssl.log 2>&1";
    made_ = std::system(script.c_str()) == 0;
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (dir_ == nullptr) GTEST_SKIP() << "openssl CLI not installed";
    ASSERT_TRUE(made_) << read_bytes(file("openssl.log"));
  }
  static std::string file(const std::string& name) { return dir_->file(name); }

  static std::shared_ptr<grpc::ChannelCredentials> tls_client(const std::string& ca, bool with_client_cert) {
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = read_bytes(file(ca));
    if (with_client_cert) {
      options.pem_cert_chain = read_bytes(file("client.pem"));
      options.pem_private_key = read_bytes(file("client.key"));
    }
    return grpc::SslCredentials(options);
  }

  static ServerConfig tls_config(bool mutual) {
    auto config = test_config(untrained_bundle_dir());
    config.tls.cert_file = file("server.pem");
    config.tls.key_file = file("server.key");
    if (mutual) config.tls.client_ca_file = file("ca.pem");
    return config;
  }

  static ScopedDir* dir_;
  static bool made_;
};
ScopedDir* TlsTest::dir_ = nullptr;
bool TlsTest::made_ = false;

TEST_F(TlsTest, TlsServerServesTlsClientsOnly) {
  auto s = start_server(tls_config(false), untrained_model(), tls_client("ca.pem", false), "localhost");
  ASSERT_TRUE(s.server);
  const grpc::Status ok = model_info(*s.stub);
  EXPECT_TRUE(ok.ok()) << ok.error_code() << " " << ok.error_message();

  auto plaintext = v1::ReportService::NewStub(grpc::CreateChannel(s.address(), grpc::InsecureChannelCredentials()));
  EXPECT_EQ(model_info(*plaintext).error_code(), grpc::StatusCode::UNAVAILABLE);

  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("localhost");
  auto untrusted = v1::ReportService::NewStub(
      grpc::CreateCustomChannel(s.address(), tls_client("other_ca.pem", false), args));
  EXPECT_EQ(model_info(*untrusted).error_code(), grpc::StatusCode::UNAVAILABLE)
      << "a client must not trust a server its CA did not sign";
}

TEST_F(TlsTest, MutualTlsRequiresAClientCertificateFromTheCa) {
  auto s = start_server(tls_config(true), untrained_model(), tls_client("ca.pem", true), "localhost");
  ASSERT_TRUE(s.server);
  const grpc::Status ok = model_info(*s.stub);
  EXPECT_TRUE(ok.ok()) << ok.error_code() << " " << ok.error_message();

  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("localhost");
  auto anonymous = v1::ReportService::NewStub(
      grpc::CreateCustomChannel(s.address(), tls_client("ca.pem", false), args));
  EXPECT_EQ(model_info(*anonymous).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsTest, PlaintextHealthPortServesOnlyHealthNextToTls) {
  auto config = tls_config(false);
  config.server.health_port = 0;
  auto s = start_server(config, untrained_model(), tls_client("ca.pem", false), "localhost");
  ASSERT_TRUE(s.server);
  ASSERT_GT(s.server->health_port(), 0);
  ASSERT_NE(s.server->health_port(), s.server->port());
  auto plaintext = grpc::CreateChannel("127.0.0.1:" + std::to_string(s.server->health_port()),
                                       grpc::InsecureChannelCredentials());
  int serving = 0;
  ASSERT_TRUE(health_check(plaintext, "cmn.v1.ReportService", &serving).ok());
  EXPECT_EQ(serving, 1);
  // Nothing else is there: the report service is only behind TLS.
  auto stub = v1::ReportService::NewStub(plaintext);
  EXPECT_EQ(model_info(*stub).error_code(), grpc::StatusCode::UNIMPLEMENTED);
  // Draining shows on the health port too.
  s.server->shutdown(std::chrono::milliseconds(0));
  EXPECT_FALSE(health_check(plaintext, "cmn.v1.ReportService", &serving).ok() && serving == 1);
}

TEST_F(TlsTest, NonPemCertificateIsRefusedAtStartNamingTheKey) {
  auto config = tls_config(false);
  config.tls.cert_file = file("openssl.log");
  auto server = ReportServer::serve(config, untrained_model());
  ASSERT_FALSE(server.ok());
  EXPECT_NE(server.status().message().find("tls.cert_file"), std::string::npos) << server.status();
}

}  // namespace
}  // namespace cmn::server
