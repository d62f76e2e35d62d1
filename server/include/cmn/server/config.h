#pragma once
// cmn-server's configuration: configs/server.yaml (every key documented there) plus dotted command-line
// overrides (`server.port=0 model.bundle=bundles/iu_xray`), parsed once into these plain structs.
//
// Strict: a key this file does not list, at any level, is an error naming it ("unknown key 'server.prot'"),
// and so is a value of the wrong type or out of range ("engine.max_batch_size: must be >= 1, got 0").
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cmn/pipeline/dicom_sr.h"

namespace cmn::server {

// `server:` the gRPC listener.
struct ListenOptions {
  std::string host = "0.0.0.0";          // address to bind ("127.0.0.1" for local only, "[::]" for IPv6)
  int port = 50051;                      // 0 = let the OS pick one (ReportServer::port() tells which)
  int64_t max_receive_message_mb = 64;   // largest request accepted (all DICOM instances together), MiB
  int64_t max_send_message_mb = 16;      // largest response sent, MiB
  int max_threads = 64;                  // gRPC handler threads at most (calls beyond wait or get RESOURCE_EXHAUSTED)
  double shutdown_grace_s = 30;          // SIGTERM: in-flight calls get this long to finish, then are cancelled
  bool reflection = true;                // gRPC server reflection (grpcurl, grpc_cli)
  // A second, plaintext gRPC port serving only grpc.health.v1.Health (same status as the main port), for
  // probes that cannot speak TLS (Kubernetes' native gRPC probes). -1 = off, 0 = any free port.
  int health_port = -1;
};

// `model:` what to load. Exactly one of `bundle` or (`r2gencmn` + `args` + `annotation`).
struct ModelOptions {
  std::string bundle;       // model bundle directory (model.yaml, weights, vocab.txt, SHA256SUMS)
  std::string r2gencmn;     // or: an R2GenCMN checkpoint (.pth) ...
  std::string args;         // ... its argument JSON (R2GenCMN names) ...
  std::string annotation;   // ... and the annotation.json its vocabulary was built from
  int threads = 0;          // LibTorch intra-op threads; 0 = the process's CPU budget (affinity, cgroup cpu.max)
  std::string device = "cpu";  // the replica's device: cpu | cuda | cuda:N (a LibTorch without CUDA refuses to start)
  // The replica's precision: fp32 (exact, the default) | bf16 (needs AVX512_BF16 / AMX, or CUDA) | int8 (CPU);
  // a host that cannot run it refuses to start, naming what is missing (model/precision.h).
  std::string precision = "fp32";
  // Intra-op threads of the decode loop; 0 = model.threads. 1 by default: a decode step is ~100 small ops, and
  // on a CPU shared with other work (a pod's CPU limit, a PACS host) threads that wait for each other at every op
  // collapse (measured: 2 threads beside two CPU hogs decode 80x slower than quiet, 1 thread 2.2x), while 1
  // thread costs 1.56x on a quiet 2-core host. The trunk keeps model.threads.
  int decode_threads = 1;
  bool allow_untrained = true;  // false: refuse to start on a bundle marked untrained (production)
};

// `engine:` the request queue and the in-flight decode loop of the single model worker.
struct EngineOptions {
  int max_batch_size = 8;        // studies decoding at once in the in-flight loop (others join between steps)
  int max_queue_delay_ms = 10;   // with the loop empty: how long the oldest waiting request waits for partners
  // STAT calls (cmn.v1.Priority) may be admitted past max_pending into this many more slots, so that a queue
  // full of routine work never refuses one.
  int stat_reserved_slots = 4;
  int max_pending = 16;          // requests admitted at once (preprocessing, waiting or decoding); more get
                                 // RESOURCE_EXHAUSTED at once
  int preprocess_threads = 2;    // DICOM decodes running at once (each in its caller's handler thread)
};

// `limits:` what a single request may ask for. Decoding overrides above a limit are clamped to it.
struct LimitsOptions {
  int max_instances = 16;                // DICOM instances per request (more: RESOURCE_EXHAUSTED)
  int64_t max_pixels = 50'000'000;       // rows * columns per image (more: INVALID_ARGUMENT, before decoding)
  int64_t max_dimension = 16384;         // rows or columns per image
  int max_beam_size = 5;                 // beam_size override clamp
  int max_length = 100;                  // max_length override clamp (also clamps the bundle default)
  // Estimated peak memory of one request (its bytes, decoding its largest chosen image, the model's inputs,
  // activations and beam state; request_memory.h); a request above it: RESOURCE_EXHAUSTED with the figures.
  int64_t max_request_mb = 2048;
};

// `study:` how instances become the model's view slots (preprocessing::StudyOptions).
struct StudyConfig {
  // Images of other modalities are skipped (and listed as skipped). Empty = the model bundle's
  // preprocessing.allowed_modalities (CR, DX, DR unless the bundle says otherwise).
  std::vector<std::string> allowed_modalities;
  // Draft decoding: JPEG 2000 and 8-bit JPEG decoded at the smallest size still covering the model input
  // (preprocessing::DicomReadOptions::draft_min_side). Faster, not bit-exact; false = the exact path.
  bool draft_decode = false;
  // Drafts whose image-report consistency (GenerateReportResponse.consistency) is below this get the warning
  // "low image-text consistency: review first" (response, DICOM SR, FHIR). 0 = never; needs a model with an
  // alignment head to mean anything (without one there is no score and no warning).
  double consistency_warn_below = 0.0;
};

// `auth:` bearer tokens. Clients send "authorization: Bearer <token>"; the server keeps only hashes.
struct AuthOptions {
  // File of lower-case hex SHA-256 digests of the accepted tokens, one per line (`printf %s TOKEN |
  // sha256sum`); '#' starts a comment. "" = no authentication. Health and reflection stay open.
  std::string token_hashes_file;
};

// `tls:` transport security. Both empty = plaintext (only behind a TLS-terminating proxy or on localhost).
struct TlsOptions {
  std::string cert_file;        // PEM certificate chain of the server
  std::string key_file;         // PEM private key of the server
  std::string client_ca_file;   // PEM CA bundle: set = mutual TLS, clients must present a certificate it signed
};

// `metrics:` Prometheus text exposition over HTTP (GET /metrics).
struct MetricsOptions {
  std::string host = "0.0.0.0";
  int port = 9090;              // 0 = let the OS pick one; -1 = no metrics endpoint
};

// `logging:`
struct LoggingOptions {
  bool requests = true;         // one INFO line per call (method, status, study UID, timings; no patient data)
};

struct ServerConfig {
  ListenOptions server;
  ModelOptions model;
  EngineOptions engine;
  LimitsOptions limits;
  StudyConfig study;
  AuthOptions auth;
  TlsOptions tls;
  MetricsOptions metrics;
  LoggingOptions logging;
  // `sr:` the DICOM SR returned when a request sets output.dicom_sr. The file sets uid_root, device_uid,
  // manufacturer, series_description and series_number; the model's name, version and untrained flag come
  // from the loaded bundle.
  pipeline::SrOptions sr;
};

// Reads `path` ("" = all defaults), applies each "dotted.key=value" override (the value is parsed as YAML, so
// `study.allowed_modalities=[CR,DX]` works) and validates. Errors name the file or "command line", and the key.
absl::StatusOr<ServerConfig> load_server_config(const std::string& path,
                                                const std::vector<std::string>& overrides = {});
// The same from YAML text (tests).
absl::StatusOr<ServerConfig> parse_server_config(const std::string& yaml_text, const std::string& source,
                                                 const std::vector<std::string>& overrides = {});
// Range and consistency checks (exactly one model source, both TLS files or none, ...).
absl::Status validate_server_config(const ServerConfig& config);
// Every key the reader knows, dotted ("server.port", ...), in reading order.
std::vector<std::string> server_config_keys();
// The configuration as YAML that parse_server_config reads back to the same values (every key written).
std::string to_yaml(const ServerConfig& config);

}  // namespace cmn::server
