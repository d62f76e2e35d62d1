#include "cmn/server/server.h"

#include <fstream>
#include <sstream>
#include <utility>

#include <glog/logging.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/strings/str_cat.h"
#include "cmn/common/status_macros.h"

namespace cmn::server {
namespace {

absl::StatusOr<std::string> read_pem(const char* key, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(key, ": cannot open '", path, "'"));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (buffer.str().find("-----BEGIN") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(key, ": '", path, "' is not a PEM file"));
  }
  return buffer.str();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials(const TlsOptions& tls) {
  if (tls.cert_file.empty()) return grpc::InsecureServerCredentials();
  CMN_ASSIGN_OR_RETURN(std::string cert, read_pem("tls.cert_file", tls.cert_file));
  CMN_ASSIGN_OR_RETURN(std::string key, read_pem("tls.key_file", tls.key_file));
  const bool mutual = !tls.client_ca_file.empty();
  grpc::SslServerCredentialsOptions options(mutual ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                                   : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  if (mutual) {
    CMN_ASSIGN_OR_RETURN(options.pem_root_certs, read_pem("tls.client_ca_file", tls.client_ca_file));
  }
  options.pem_key_cert_pairs.push_back({std::move(key), std::move(cert)});
  return grpc::SslServerCredentials(options);
}

std::string listen_address(const std::string& host, int port) {
  const bool ipv6 = host.find(':') != std::string::npos && host.front() != '[';
  return ipv6 ? absl::StrCat("[", host, "]:", port) : absl::StrCat(host, ":", port);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ReportServer>> ReportServer::start(const ServerConfig& config) {
  CMN_RETURN_IF_ERROR(validate_server_config(config));
  CMN_ASSIGN_OR_RETURN(ServingModel model, load_serving_model(config.model));
  return serve(config, std::move(model));
}

absl::StatusOr<std::unique_ptr<ReportServer>> ReportServer::serve(const ServerConfig& config, ServingModel model) {
  CMN_RETURN_IF_ERROR(validate_server_config(config));
  std::unique_ptr<ReportServer> s(new ReportServer());
  s->config_ = config;
  if (!config.auth.token_hashes_file.empty()) {
    CMN_ASSIGN_OR_RETURN(TokenAuthenticator auth, TokenAuthenticator::from_file(config.auth.token_hashes_file));
    s->auth_ = std::make_unique<TokenAuthenticator>(std::move(auth));
  }
  CMN_ASSIGN_OR_RETURN(auto creds, credentials(config.tls));

  const pipeline::BundleInfo info = model.info;
  s->metrics_.set_model_info(info.name, info.version, info.digest, info.untrained);
  CMN_ASSIGN_OR_RETURN(std::shared_ptr<engine::Replica> replica, make_serving_replica(config.model, model.model));
  LOG(INFO) << "cmn-server: replica on " << replica->device() << " in " << model::precision_name(replica->precision());
  s->engine_ = std::make_unique<Engine>(replica, config.engine, &s->metrics_);
  ServiceOptions service_options;
  service_options.limits = config.limits;
  service_options.engine = config.engine;
  service_options.study = config.study;
  service_options.logging = config.logging;
  service_options.sr = config.sr;
  service_options.max_receive_message_bytes = config.server.max_receive_message_mb * 1024 * 1024;
  s->service_ = std::make_unique<ReportServiceImpl>(std::move(model), std::move(replica), s->engine_.get(),
                                                    &s->metrics_, s->auth_.get(), service_options);
  s->service_->set_reload([server = s.get()](const std::string& bundle) { return server->reload(bundle); });

  // Both are process-wide switches that a ServerBuilder reads when it is constructed.
  grpc::EnableDefaultHealthCheckService(true);
  if (config.server.reflection) grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  const std::string address = listen_address(config.server.host, config.server.port);
  builder.AddListeningPort(address, creds, &s->port_);
  builder.RegisterService(s->service_.get());
  builder.SetMaxReceiveMessageSize(static_cast<int>(service_options.max_receive_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(config.server.max_send_message_mb * 1024 * 1024));
  grpc::ResourceQuota quota("cmn-server");
  quota.SetMaxThreads(config.server.max_threads);
  builder.SetResourceQuota(quota);
  s->grpc_ = builder.BuildAndStart();
  if (s->grpc_ == nullptr || s->port_ == 0) {
    s->engine_->stop();
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address, " (in use, or not a local address)"));
  }
  if (config.server.health_port >= 0) {
    grpc::ServerBuilder health_builder;
    const std::string health_address = listen_address(config.server.host, config.server.health_port);
    health_builder.AddListeningPort(health_address, grpc::InsecureServerCredentials(), &s->health_port_);
    s->health_grpc_ = health_builder.BuildAndStart();
    if (s->health_grpc_ == nullptr || s->health_port_ == 0) {
      s->health_port_ = -1;
      s->shutdown(std::chrono::milliseconds(0));
      return absl::UnavailableError(absl::StrCat("server.health_port: cannot listen on ", health_address));
    }
  }
  for (grpc::Server* server : {s->grpc_.get(), s->health_grpc_.get()}) {
    if (server == nullptr) continue;
    if (auto* health = server->GetHealthCheckService()) {
      health->SetServingStatus(true);
      health->SetServingStatus(kServiceName, true);
    }
  }
  if (config.metrics.port >= 0) {
    auto http = MetricsHttpServer::start(config.metrics.host, config.metrics.port, &s->metrics_);
    if (!http.ok()) {
      s->shutdown(std::chrono::milliseconds(0));
      return http.status();
    }
    s->metrics_http_ = std::move(*http);
  }
  LOG(INFO) << "cmn-server: model " << info.name << " version " << info.version << " " << info.digest
            << (info.untrained ? " (UNTRAINED: random weights, demo only)" : "") << "; gRPC on "
            << listen_address(config.server.host, s->port_) << (config.tls.cert_file.empty() ? " (plaintext)" : " (TLS)")
            << (config.tls.client_ca_file.empty() ? "" : " (mutual TLS)") << (s->auth_ ? " (bearer tokens)" : "")
            << "; metrics on " << (s->metrics_http_ ? std::to_string(s->metrics_http_->port()) : std::string("(off)"));
  return s;
}

absl::StatusOr<v1::ModelInfo> ReportServer::reload(const std::string& bundle) {
  std::lock_guard<std::mutex> lock(reload_mutex_);  // one reload at a time; calls keep being served meanwhile
  ModelOptions options = config_.model;
  if (!bundle.empty()) {
    options.bundle = bundle;
    options.r2gencmn = options.args = options.annotation = "";
  } else if (model_options_source_) {
    CMN_ASSIGN_OR_RETURN(ModelOptions read, model_options_source_());
    // Where the replica runs is the server's, not the file's: only what to load is taken from it.
    read.device = options.device;
    read.precision = options.precision;
    read.threads = options.threads;
    read.decode_threads = options.decode_threads;
    options = std::move(read);
  }
  const auto start = std::chrono::steady_clock::now();
  CMN_ASSIGN_OR_RETURN(ServingModel model, load_serving_model(options));
  CMN_ASSIGN_OR_RETURN(std::shared_ptr<engine::Replica> replica, make_serving_replica(options, model.model));
  auto next = service_->make_served(std::move(model), std::move(replica));
  // Warm it before anyone waits on it: the first pass folds batch norm, projects the memory and builds the
  // derived bf16 / int8 weights. This thread is the only one that knows the replica until the swap.
  {
    const int64_t views = next->info.views();
    const int size = next->study_options.image.size;
    preprocessing::FloatImage blank;
    blank.height = blank.width = size;
    blank.data.assign(static_cast<size_t>(3 * size * size), 0.0f);
    model::DecodingOptions warm;
    warm.beam_size = 1;
    warm.max_length = 2;
    auto ran = next->replica->run({std::vector<preprocessing::FloatImage>(static_cast<size_t>(views), blank)}, warm);
    if (!ran.ok()) {
      return absl::InternalError(absl::StrCat("the new model failed its warm-up pass: ", ran.status().message()));
    }
  }
  const auto& info = next->serving.info;
  metrics_.set_model_info(info.name, info.version, info.digest, info.untrained);
  v1::ModelInfo served_info = next->info;
  engine_->set_replica(next->replica);  // the engine keeps no reference to the old model
  service_->swap(std::move(next));
  LOG(INFO) << "cmn-server: reloaded: now serving model " << info.name << " version " << info.version << " "
            << info.digest << " (" << served_info.precision() << "; loaded and warmed in "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()
            << " s); calls in flight finish on the previous model";
  return served_info;
}

int ReportServer::metrics_port() const { return metrics_http_ ? metrics_http_->port() : -1; }

void ReportServer::shutdown(std::chrono::milliseconds grace) {
  std::lock_guard<std::mutex> lock(shutdown_mutex_);
  if (shut_down_) return;
  shut_down_ = true;
  for (grpc::Server* server : {grpc_.get(), health_grpc_.get()}) {
    if (server == nullptr) continue;
    if (auto* health = server->GetHealthCheckService()) {
      health->SetServingStatus(kServiceName, false);
      health->SetServingStatus(false);
    }
  }
  // Queued studies start now rather than at the end of their batching windows, so draining takes the time
  // of the work in flight and no more.
  if (engine_) engine_->flush_batches();
  if (grpc_ != nullptr) {
    // Stops accepting, waits for in-flight calls until the deadline, then cancels the rest (our handlers
    // notice within milliseconds) and returns when every handler has returned.
    grpc_->Shutdown(std::chrono::system_clock::now() + grace);
  }
  if (health_grpc_ != nullptr) health_grpc_->Shutdown(std::chrono::system_clock::now());
  if (engine_) engine_->stop();
  if (metrics_http_) metrics_http_->stop();
}

void ReportServer::wait() {
  if (grpc_ != nullptr) grpc_->Wait();
}

ReportServer::~ReportServer() {
  shutdown(std::chrono::milliseconds(0));
}

}  // namespace cmn::server
