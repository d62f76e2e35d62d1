// cmn-client: sends one study (DICOM files, or folders of them) to a cmn-server and prints the report.
//
//   cmn-client --server localhost:50051 study_folder/
//   cmn-client --server host:443 --tls --ca ca.pem --token-file token.txt --json a.dcm b.dcm
//   cmn-client --server localhost:50051 --info
//   cmn-client --server localhost:50051 --attention-dir maps/ study/   (per-sentence attention PNGs)
//   cmn-client --server localhost:50051 --health [--service cmn.v1.ReportService]   (probes, HEALTHCHECK)
//   cmn-client --server localhost:50051 --stat study/                  (PRIORITY_STAT: ahead of routine studies)
//   cmn-client --server localhost:50051 --token-file t --reload /srv/bundles/v2   (admin: hot reload)
//
// Exit codes: 0 report printed (or --info, or --health and SERVING); 1 the input could not be read; 2 bad command line;
// 10 + the gRPC status code otherwise (13 INVALID_ARGUMENT, 14 DEADLINE_EXCEEDED, 18 RESOURCE_EXHAUSTED,
// 19 FAILED_PRECONDITION, 22 UNIMPLEMENTED, 24 UNAVAILABLE, 26 UNAUTHENTICATED, ...).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include "cmn/common/file_util.h"
#include "cmn/v1/report_service.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace {

namespace fs = std::filesystem;

constexpr int kExitInput = 1;
constexpr int kExitNotServing = 3;
constexpr int kExitStatusBase = 10;

bool read_file(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream buffer;
  buffer << in.rdbuf();
  *out = buffer.str();
  return !in.bad();
}

// Files given, and every regular file under the folders given (sorted, DICOMDIR index files left out).
std::vector<std::string> collect(const std::vector<std::string>& paths) {
  std::vector<std::string> files;
  for (const auto& p : paths) {
    if (fs::is_directory(p)) {
      std::vector<std::string> found;
      for (const auto& entry : fs::recursive_directory_iterator(p)) {
        if (entry.is_regular_file() && entry.path().filename() != "DICOMDIR") found.push_back(entry.path().string());
      }
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else {
      files.push_back(p);
    }
  }
  return files;
}

std::string json(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

int fail(const grpc::Status& status) {
  std::cerr << "cmn-client: " << status.error_code() << " " << status.error_message() << "\n";
  return kExitStatusBase + static_cast<int>(status.error_code());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cmn-client: send a study's DICOM files to a cmn-server and print the report"};
  std::string server = "localhost:50051";
  std::vector<std::string> paths;
  bool health = false;
  bool stat = false;
  std::optional<std::string> reload;
  std::string health_service, attention_dir;
  bool tls = false, info = false, as_json = false, stream = false, require_trained = false, token_scores = false;
  std::string ca_file, cert_file, key_file, token, token_file, target_name_override, method, request_id;
  double deadline_s = 120;
  int beam_size = 0, max_length = 0;
  app.add_option("--server", server, "host:port of the cmn-server")->capture_default_str();
  app.add_option("paths", paths, "DICOM files or folders (searched recursively) of one study");
  app.add_flag("--info", info, "print the server's model and limits (GetModelInfo) instead");
  app.add_flag("--health", health, "grpc.health.v1 Check: print the status; exit 0 if SERVING, 3 if not");
  app.add_option("--reload", reload,
                 "admin: ReloadModel with this bundle directory on the server (\"\" = its configured model); prints "
                 "the new model")
      ->expected(0, 1);
  app.add_flag("--stat", stat, "send the study as STAT: ahead of every routine study in the server's queue");
  app.add_option("--service", health_service, "--health: the service to ask about (\"\" = the whole server)");
  app.add_flag("--tls", tls, "use TLS (implied by --ca/--cert)");
  app.add_option("--ca", ca_file, "PEM CA bundle to verify the server with (default: system roots)");
  app.add_option("--cert", cert_file, "PEM client certificate (mutual TLS)");
  app.add_option("--key", key_file, "PEM client private key (mutual TLS)");
  app.add_option("--server-name", target_name_override, "TLS: expect this name in the server certificate");
  app.add_option("--token", token, "bearer token (prefer --token-file: arguments are visible to other users)");
  app.add_option("--token-file", token_file, "file holding the bearer token");
  app.add_option("--deadline-s", deadline_s, "call deadline in seconds")->capture_default_str();
  app.add_option("--beam-size", beam_size, "beam size override (0 = the model's default)");
  app.add_option("--max-length", max_length, "maximum generated tokens override (0 = default)");
  app.add_option("--method", method, "decoding method override")->check(CLI::IsMember({"beam_search", "greedy", "sample"}));
  app.add_option("--request-id", request_id, "correlation id echoed in the response and the server log");
  app.add_flag("--require-trained", require_trained, "fail (FAILED_PRECONDITION) if the server's model is untrained");
  app.add_flag("--scores", token_scores, "ask for per-token log-probabilities");
  app.add_flag("--stream", stream, "StreamReport: print certain text to stderr while it is decoded");
  app.add_option("--attention-dir", attention_dir,
                 "ask for attention maps and write them as DIR/s<NN>_layer<L>_view<V>.png (sentence, decoder layer, "
                 "view slot)");
  app.add_flag("--json", as_json, "print the whole response as JSON instead of the report text");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (!info && !health && !reload && paths.empty()) {
    std::cerr << "cmn-client: give DICOM files or folders (or --info, --health, --reload)\n";
    return 2;
  }
  if (!token_file.empty()) {
    if (!read_file(token_file, &token)) {
      std::cerr << "cmn-client: cannot read --token-file '" << token_file << "'\n";
      return kExitInput;
    }
    token.erase(token.find_last_not_of(" \t\r\n") + 1);
  }

  // Channel.
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (tls || !ca_file.empty() || !cert_file.empty()) {
    grpc::SslCredentialsOptions ssl;
    if ((!ca_file.empty() && !read_file(ca_file, &ssl.pem_root_certs)) ||
        (!cert_file.empty() && !read_file(cert_file, &ssl.pem_cert_chain)) ||
        (!key_file.empty() && !read_file(key_file, &ssl.pem_private_key))) {
      std::cerr << "cmn-client: cannot read a TLS file (--ca/--cert/--key)\n";
      return kExitInput;
    }
    creds = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 * 1024 * 1024);
  args.SetMaxSendMessageSize(-1);
  if (!target_name_override.empty()) args.SetSslTargetNameOverride(target_name_override);
  auto channel = grpc::CreateCustomChannel(server, creds, args);
  auto stub = cmn::v1::ReportService::NewStub(channel);

  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(static_cast<int64_t>(deadline_s * 1000)));
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);

  if (health) {
    grpc::health::v1::HealthCheckRequest check;
    check.set_service(health_service);
    grpc::health::v1::HealthCheckResponse reply;
    const grpc::Status status = grpc::health::v1::Health::NewStub(channel)->Check(&context, check, &reply);
    if (!status.ok()) return fail(status);
    std::cout << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(reply.status()) << "\n";
    return reply.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : kExitNotServing;
  }
  if (reload) {
    cmn::v1::ReloadModelRequest ask;
    ask.set_bundle(*reload);
    cmn::v1::ModelInfo model;
    const grpc::Status status = stub->ReloadModel(&context, ask, &model);
    if (!status.ok()) return fail(status);
    std::cout << json(model) << "\n";
    return 0;
  }
  if (info) {
    cmn::v1::ModelInfo model;
    const grpc::Status status = stub->GetModelInfo(&context, cmn::v1::GetModelInfoRequest(), &model);
    if (!status.ok()) return fail(status);
    std::cout << json(model) << "\n";
    return 0;
  }

  // Request.
  cmn::v1::GenerateReportRequest request;
  for (const auto& path : collect(paths)) {
    auto* instance = request.add_instances();
    if (!read_file(path, instance->mutable_data())) {
      std::cerr << "cmn-client: cannot read '" << path << "'\n";
      return kExitInput;
    }
    instance->set_name(fs::path(path).filename().string());
  }
  if (request.instances_size() == 0) {
    std::cerr << "cmn-client: no files found\n";
    return kExitInput;
  }
  auto* decoding = request.mutable_decoding();
  decoding->set_beam_size(beam_size);
  decoding->set_max_length(max_length);
  if (method == "beam_search") decoding->set_method(cmn::v1::DECODING_METHOD_BEAM_SEARCH);
  if (method == "greedy") decoding->set_method(cmn::v1::DECODING_METHOD_GREEDY);
  if (method == "sample") decoding->set_method(cmn::v1::DECODING_METHOD_SAMPLE);
  request.mutable_output()->set_token_scores(token_scores);
  request.mutable_output()->set_attention_maps(!attention_dir.empty());
  request.set_require_trained_model(require_trained);
  request.set_request_id(request_id);
  if (stat) request.set_priority(cmn::v1::PRIORITY_STAT);

  cmn::v1::GenerateReportResponse response;
  if (stream) {
    auto reader = stub->StreamReport(&context, request);
    cmn::v1::StreamReportResponse message;
    while (reader->Read(&message)) {
      if (message.has_progress()) {
        for (const auto& sentence : message.progress().sentences()) std::cerr << "... " << sentence << "\n";
      } else if (message.has_final()) {
        response = message.final();
      }
    }
    const grpc::Status status = reader->Finish();
    if (!status.ok()) return fail(status);
  } else {
    const grpc::Status status = stub->GenerateReport(&context, request, &response);
    if (!status.ok()) return fail(status);
  }
  if (!attention_dir.empty()) {
    std::error_code ec;
    fs::create_directories(attention_dir, ec);
    for (const auto& map : response.attention_maps()) {
      char name[64];
      std::snprintf(name, sizeof(name), "s%02d_layer%d_view%d.png", map.sentence(), map.layer(), map.view());
      if (!cmn::write_file_atomically((fs::path(attention_dir) / name).string(), map.png()).ok()) {
        std::cerr << "cmn-client: cannot write '" << (fs::path(attention_dir) / name).string() << "'\n";
        return kExitInput;
      }
    }
    // The PNG bytes are not worth printing as base64 in --json.
    response.clear_attention_maps();
  }
  if (as_json) {
    std::cout << json(response) << "\n";
  } else {
    for (const auto& warning : response.warnings()) std::cerr << "warning: " << warning << "\n";
    std::cout << response.report() << "\n";
  }
  return 0;
}
