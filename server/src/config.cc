#include "cmn/server/config.h"

#include <fstream>
#include <set>
#include <sstream>
#include <utility>

#include <yaml-cpp/yaml.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cmn/common/status_macros.h"
#include "cmn/pipeline/dicom_sr.h"

namespace cmn::server {
namespace {

// Reads one YAML mapping strictly: every key must be read with get(), finish() reports the others.
class Section {
 public:
  // `keys`, when given, collects the dotted name of every key read (the schema, for documentation checks).
  Section(YAML::Node node, std::string prefix, std::string source, std::vector<std::string>* keys = nullptr)
      : node_(std::move(node)), prefix_(std::move(prefix)), source_(std::move(source)), keys_(keys) {}

  absl::Status check_map() const {
    if (!node_.IsDefined() || node_.IsNull() || node_.IsMap()) return absl::OkStatus();
    return error(prefix_.empty() ? "the document" : prefix_, "must be a mapping");
  }

  template <typename T>
  absl::Status get(const char* key, T* out) {
    seen_.insert(key);
    if (keys_ != nullptr) keys_->push_back(name(key));
    if (!node_.IsMap()) return absl::OkStatus();
    const YAML::Node value = node_[key];
    if (!value.IsDefined() || value.IsNull()) return absl::OkStatus();
    if (!value.IsScalar()) return error(name(key), "must be a single value");
    try {
      *out = value.as<T>();
    } catch (const YAML::Exception&) {
      return error(name(key), absl::StrCat("'", value.Scalar(), "' is not a ", type_name(T{})));
    }
    return absl::OkStatus();
  }

  absl::Status get_list(const char* key, std::vector<std::string>* out) {
    seen_.insert(key);
    if (keys_ != nullptr) keys_->push_back(name(key));
    if (!node_.IsMap()) return absl::OkStatus();
    const YAML::Node value = node_[key];
    if (!value.IsDefined() || value.IsNull()) return absl::OkStatus();
    if (!value.IsSequence()) return error(name(key), "must be a list");
    out->clear();
    for (const auto& item : value) {
      if (!item.IsScalar()) return error(name(key), "items must be single values");
      out->push_back(item.Scalar());
    }
    return absl::OkStatus();
  }

  Section child(const char* key) {
    seen_.insert(key);
    return Section(node_.IsMap() ? node_[key] : YAML::Node(), name(key), source_, keys_);
  }

  absl::Status finish() const {
    if (!node_.IsMap()) return absl::OkStatus();
    for (const auto& entry : node_) {
      const std::string key = entry.first.Scalar();
      if (seen_.count(key) == 0) return error(name(key), "unknown key");
    }
    return absl::OkStatus();
  }

 private:
  static const char* type_name(int) { return "whole number"; }
  static const char* type_name(int64_t) { return "whole number"; }
  static const char* type_name(double) { return "number"; }
  static const char* type_name(bool) { return "boolean (true/false)"; }
  static const char* type_name(const std::string&) { return "string"; }

  std::string name(const std::string& key) const { return prefix_.empty() ? key : prefix_ + "." + key; }
  absl::Status error(const std::string& key, const std::string& what) const {
    if (what == "unknown key") return absl::InvalidArgumentError(absl::StrCat(source_, ": unknown key '", key, "'"));
    return absl::InvalidArgumentError(absl::StrCat(source_, ": ", key, ": ", what));
  }

  YAML::Node node_;
  std::string prefix_;
  std::string source_;
  std::vector<std::string>* keys_;
  std::set<std::string> seen_;
};

// Sets root[a][b][c] = value for "a.b.c=value"; intermediate mappings are created.
absl::Status apply_override(YAML::Node& root, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("command line: '", assignment, "' is not key=value (e.g. server.port=50051)"));
  }
  const std::string key = assignment.substr(0, eq);
  const std::string text = assignment.substr(eq + 1);
  std::vector<std::string> parts = absl::StrSplit(key, '.');
  for (const auto& part : parts) {
    if (part.empty()) return absl::InvalidArgumentError(absl::StrCat("command line: bad key '", key, "'"));
  }
  YAML::Node value;
  try {
    value = text.empty() ? YAML::Node(std::string()) : YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("command line: ", key, ": cannot parse '", text, "': ", e.msg));
  }
  if (!root.IsDefined() || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  YAML::Node current = root;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node next = current[parts[i]];
    if (!next.IsDefined() || next.IsNull()) {
      current[parts[i]] = YAML::Node(YAML::NodeType::Map);
      next = current[parts[i]];
    } else if (!next.IsMap()) {
      return absl::InvalidArgumentError(absl::StrCat("command line: '", absl::StrJoin(parts.begin(),
                                                     parts.begin() + static_cast<long>(i) + 1, "."),
                                                     "' is not a section"));
    }
    current.reset(next);  // re-seat the handle; `current = next` would overwrite the node's content
  }
  current[parts.back()] = value;
  return absl::OkStatus();
}

absl::Status read_config(const YAML::Node& root, const std::string& source, ServerConfig* c,
                         std::vector<std::string>* keys = nullptr) {
  Section top(root, "", source, keys);
  CMN_RETURN_IF_ERROR(top.check_map());
  {
    Section s = top.child("server");
    CMN_RETURN_IF_ERROR(s.check_map());
    CMN_RETURN_IF_ERROR(s.get("host", &c->server.host));
    CMN_RETURN_IF_ERROR(s.get("port", &c->server.port));
    CMN_RETURN_IF_ERROR(s.get("max_receive_message_mb", &c->server.max_receive_message_mb));
    CMN_RETURN_IF_ERROR(s.get("max_send_message_mb", &c->server.max_send_message_mb));
    CMN_RETURN_IF_ERROR(s.get("max_threads", &c->server.max_threads));
    CMN_RETURN_IF_ERROR(s.get("shutdown_grace_s", &c->server.shutdown_grace_s));
    CMN_RETURN_IF_ERROR(s.get("reflection", &c->server.reflection));
    CMN_RETURN_IF_ERROR(s.get("health_port", &c->server.health_port));
    CMN_RETURN_IF_ERROR(s.finish());
  }
  {
    Section s = top.child("model");
    CMN_RETURN_IF_ERROR(s.check_map());
    CMN_RETURN_IF_ERROR(s.get("bundle", &c->model.bundle));
    CMN_RETURN_IF_ERROR(s.get("r2gencmn", &c->model.r2gencmn));
    CMN_RETURN_IF_ERROR(s.get("args", &c->model.args));
    CMN_RETURN_IF_ERROR(s.get("annotation", &c->model.annotation));
    CMN_RETURN_IF_ERROR(s.get("threads", &c->model.threads));
    CMN_RETURN_IF_ERROR(s.get("allow_untrained", &c->model.allow_untrained));
    CMN_RETURN_IF_ERROR(s.finish());
  }
  {
    Section s = top.child("engine");
    CMN_RETURN_IF_ERROR(s.check_map());
    CMN_RETURN_IF_ERROR(s.get("max_batch_size", &c->engine.max_batch_size));
    CMN_RETURN_IF_ERROR(s.get("max_queue_delay_ms", &c->engine.max_queue_delay_ms));
    CMN_RETURN_IF_ERROR(s.get("max_pending", &c->engine.max_pending));
    CMN_RETURN_IF_ERROR(s.get("preprocess_threads", &c->engine.preprocess_threads));
    CMN_RETURN_IF_ERROR(s.finish());
  }
  {
    Section s = top.child("limits");
    CMN_RETURN_IF_ERROR(s.check_map());
    CMN_RETURN_IF_ERROR(s.get("max_instances", &c->limits.max_instances));
    CMN_RETURN_IF_ERROR(s.get("max_pixels", &c->limits.max_pixels));
    CMN_RETURN_IF_ERROR(s.get("max_dimension", &c->limits.max_dimension));
    CMN_RETURN_IF_ERROR(s.get("max_beam_size", &c->limits.max_beam_size));
    CMN_RETURN_IF_ERROR(s.get("max_length", &c->limits.max_length));
    CMN_RETURN_IF_ERROR(s.finish());
  }
  {
    Section s = top.child("study");
    CMN_RETURN_IF_ERROR(s.check_map());
    CMN_RETURN_IF_ERROR(s.get_list("allowed_modalities", &c->study.allowed_modalities));
    CMN_RETURN_IF_ERROR(s.finish());
  }
  {
    Section s = top.child("auth");
    CMN_RETURN_IF_ERROR(s.check_map());
    CMN_RETURN_IF_ERROR(s.get("token_hashes_file", &c->auth.token_hashes_file));
    CMN_RETURN_IF_ERROR(s.finish());
  }
  {
    Section s = top.child("tls");
    CMN_RETURN_IF_ERROR(s.check_map());
    CMN_RETURN_IF_ERROR(s.get("cert_file", &c->tls.cert_file));
    CMN_RETURN_IF_ERROR(s.get("key_file", &c->tls.key_file));
    CMN_RETURN_IF_ERROR(s.get("client_ca_file", &c->tls.client_ca_file));
    CMN_RETURN_IF_ERROR(s.finish());
  }
  {
    Section s = top.child("metrics");
    CMN_RETURN_IF_ERROR(s.check_map());
    CMN_RETURN_IF_ERROR(s.get("host", &c->metrics.host));
    CMN_RETURN_IF_ERROR(s.get("port", &c->metrics.port));
    CMN_RETURN_IF_ERROR(s.finish());
  }
  {
    Section s = top.child("logging");
    CMN_RETURN_IF_ERROR(s.check_map());
    CMN_RETURN_IF_ERROR(s.get("requests", &c->logging.requests));
    CMN_RETURN_IF_ERROR(s.finish());
  }
  {
    Section s = top.child("sr");
    CMN_RETURN_IF_ERROR(s.check_map());
    CMN_RETURN_IF_ERROR(s.get("uid_root", &c->sr.uid_root));
    CMN_RETURN_IF_ERROR(s.get("device_uid", &c->sr.device_uid));
    CMN_RETURN_IF_ERROR(s.get("manufacturer", &c->sr.manufacturer));
    CMN_RETURN_IF_ERROR(s.get("series_description", &c->sr.series_description));
    CMN_RETURN_IF_ERROR(s.get("series_number", &c->sr.series_number));
    CMN_RETURN_IF_ERROR(s.finish());
  }
  return top.finish();
}

absl::Status at_least(const char* key, int64_t value, int64_t min) {
  if (value >= min) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(key, ": must be >= ", min, ", got ", value));
}

}  // namespace

std::vector<std::string> server_config_keys() {
  std::vector<std::string> keys;
  ServerConfig ignored;
  (void)read_config(YAML::Node(), "schema", &ignored, &keys);
  return keys;
}

absl::Status validate_server_config(const ServerConfig& c) {
  if (c.server.port < 0 || c.server.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("server.port: must be 0..65535, got ", c.server.port));
  }
  if (c.server.host.empty()) return absl::InvalidArgumentError("server.host: must not be empty");
  if (c.server.health_port < -1 || c.server.health_port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("server.health_port: must be -1 (off), 0 (any) or a port, got ", c.server.health_port));
  }
  CMN_RETURN_IF_ERROR(at_least("server.max_receive_message_mb", c.server.max_receive_message_mb, 1));
  CMN_RETURN_IF_ERROR(at_least("server.max_send_message_mb", c.server.max_send_message_mb, 1));
  if (c.server.max_receive_message_mb > 2047 || c.server.max_send_message_mb > 2047) {
    return absl::InvalidArgumentError("server.max_receive_message_mb / max_send_message_mb: at most 2047 (gRPC limit)");
  }
  CMN_RETURN_IF_ERROR(at_least("server.max_threads", c.server.max_threads, 2));
  if (!(c.server.shutdown_grace_s >= 0)) {
    return absl::InvalidArgumentError(absl::StrCat("server.shutdown_grace_s: must be >= 0, got ", c.server.shutdown_grace_s));
  }

  const bool has_bundle = !c.model.bundle.empty();
  const bool has_ckpt = !c.model.r2gencmn.empty() || !c.model.args.empty() || !c.model.annotation.empty();
  if (has_bundle == has_ckpt) {
    return absl::InvalidArgumentError(
        "model: give either model.bundle=DIR or model.r2gencmn=MODEL.pth with model.args and model.annotation");
  }
  if (has_ckpt && (c.model.r2gencmn.empty() || c.model.args.empty() || c.model.annotation.empty())) {
    return absl::InvalidArgumentError("model.r2gencmn needs model.args and model.annotation (and the other way round)");
  }
  CMN_RETURN_IF_ERROR(at_least("model.threads", c.model.threads, 0));

  CMN_RETURN_IF_ERROR(at_least("engine.max_batch_size", c.engine.max_batch_size, 1));
  CMN_RETURN_IF_ERROR(at_least("engine.max_queue_delay_ms", c.engine.max_queue_delay_ms, 0));
  CMN_RETURN_IF_ERROR(at_least("engine.max_pending", c.engine.max_pending, 1));
  CMN_RETURN_IF_ERROR(at_least("engine.preprocess_threads", c.engine.preprocess_threads, 1));

  CMN_RETURN_IF_ERROR(at_least("limits.max_instances", c.limits.max_instances, 1));
  CMN_RETURN_IF_ERROR(at_least("limits.max_pixels", c.limits.max_pixels, 1));
  CMN_RETURN_IF_ERROR(at_least("limits.max_dimension", c.limits.max_dimension, 1));
  CMN_RETURN_IF_ERROR(at_least("limits.max_beam_size", c.limits.max_beam_size, 1));
  CMN_RETURN_IF_ERROR(at_least("limits.max_length", c.limits.max_length, 1));
  for (const auto& modality : c.study.allowed_modalities) {
    if (modality.empty()) return absl::InvalidArgumentError("study.allowed_modalities: empty modality name");
  }

  if (c.tls.cert_file.empty() != c.tls.key_file.empty()) {
    return absl::InvalidArgumentError("tls.cert_file and tls.key_file: give both or neither");
  }
  if (!c.tls.client_ca_file.empty() && c.tls.cert_file.empty()) {
    return absl::InvalidArgumentError("tls.client_ca_file (mutual TLS) needs tls.cert_file and tls.key_file");
  }
  if (c.metrics.port < -1 || c.metrics.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("metrics.port: must be -1 (off), 0 (any) or a port, got ", c.metrics.port));
  }
  // A bad root would only show when the first SR is asked for: check it at start-up.
  if (!c.sr.uid_root.empty()) {
    const auto uid = pipeline::make_uid(c.sr.uid_root);
    if (!uid.ok()) return absl::InvalidArgumentError(absl::StrCat("sr.uid_root: ", uid.status().message()));
  }
  if (c.sr.manufacturer.empty()) return absl::InvalidArgumentError("sr.manufacturer: must not be empty");
  CMN_RETURN_IF_ERROR(at_least("sr.series_number", c.sr.series_number, 1));
  return absl::OkStatus();
}

absl::StatusOr<ServerConfig> parse_server_config(const std::string& yaml_text, const std::string& source,
                                                 const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid YAML: ", e.what()));
  }
  if (root.IsDefined() && !root.IsNull() && !root.IsMap()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": must be a mapping of sections"));
  }
  // Overrides are checked against the schema on their own first, so an error names the command line.
  ServerConfig scratch;
  for (const auto& assignment : overrides) {
    YAML::Node single;
    CMN_RETURN_IF_ERROR(apply_override(single, assignment));
    CMN_RETURN_IF_ERROR(read_config(single, "command line", &scratch));
    CMN_RETURN_IF_ERROR(apply_override(root, assignment));
  }
  ServerConfig config;
  CMN_RETURN_IF_ERROR(read_config(root, source, &config));
  CMN_RETURN_IF_ERROR(validate_server_config(config));
  return config;
}

absl::StatusOr<ServerConfig> load_server_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::string text;
  if (!path.empty()) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot open config '", path, "'"));
    std::ostringstream buffer;
    buffer << in.rdbuf();
    text = buffer.str();
  }
  return parse_server_config(text, path.empty() ? "defaults" : path, overrides);
}

}  // namespace cmn::server
