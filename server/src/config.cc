#include "cmn/server/config.h"

#include <yaml-cpp/yaml.h>

#include "absl/strings/str_cat.h"
#include "cmn/common/config_reader.h"
#include "cmn/common/status_macros.h"
#include "cmn/model/precision.h"
#include "cmn/pipeline/dicom_sr.h"

namespace cmn::server {
namespace {

// ---- the field tables (config_reader.h): each key once; read, write and the key list follow from them ----

template <class V>
void visit(V& v, ListenOptions& o) {
  v("host", o.host);
  v("port", o.port);
  v("max_receive_message_mb", o.max_receive_message_mb);
  v("max_send_message_mb", o.max_send_message_mb);
  v("max_threads", o.max_threads);
  v("shutdown_grace_s", o.shutdown_grace_s);
  v("reflection", o.reflection);
  v("health_port", o.health_port);
}

template <class V>
void visit(V& v, ModelOptions& o) {
  v("bundle", o.bundle);
  v("r2gencmn", o.r2gencmn);
  v("args", o.args);
  v("annotation", o.annotation);
  v("threads", o.threads);
  v("device", o.device);
  v("precision", o.precision);
  v("decode_threads", o.decode_threads);
  v("allow_untrained", o.allow_untrained);
}

template <class V>
void visit(V& v, EngineOptions& o) {
  v("max_batch_size", o.max_batch_size);
  v("max_queue_delay_ms", o.max_queue_delay_ms);
  v("max_pending", o.max_pending);
  v("stat_reserved_slots", o.stat_reserved_slots);
  v("preprocess_threads", o.preprocess_threads);
}

template <class V>
void visit(V& v, LimitsOptions& o) {
  v("max_instances", o.max_instances);
  v("max_pixels", o.max_pixels);
  v("max_dimension", o.max_dimension);
  v("max_beam_size", o.max_beam_size);
  v("max_length", o.max_length);
  v("max_request_mb", o.max_request_mb);
}

template <class V>
void visit(V& v, pipeline::SrOptions& o) {
  // model_name, model_version, untrained and draft_statement are the bundle's, not the file's.
  v("uid_root", o.uid_root);
  v("device_uid", o.device_uid);
  v("manufacturer", o.manufacturer);
  v("series_description", o.series_description);
  v("series_number", o.series_number);
}

template <class V>
void visit(V& v, ServerConfig& c) {
  v.section("server", [&](auto& s) { visit(s, c.server); });
  v.section("model", [&](auto& s) { visit(s, c.model); });
  v.section("engine", [&](auto& s) { visit(s, c.engine); });
  v.section("limits", [&](auto& s) { visit(s, c.limits); });
  v.section("study", [&](auto& s) {
    s("allowed_modalities", c.study.allowed_modalities);
    s("draft_decode", c.study.draft_decode);
    s("consistency_warn_below", c.study.consistency_warn_below);
  });
  v.section("auth", [&](auto& s) { s("token_hashes_file", c.auth.token_hashes_file); });
  v.section("tls", [&](auto& s) {
    s("cert_file", c.tls.cert_file);
    s("key_file", c.tls.key_file);
    s("client_ca_file", c.tls.client_ca_file);
  });
  v.section("metrics", [&](auto& s) {
    s("host", c.metrics.host);
    s("port", c.metrics.port);
  });
  v.section("logging", [&](auto& s) { s("requests", c.logging.requests); });
  v.section("sr", [&](auto& s) { visit(s, c.sr); });
}

absl::Status read_config(const YAML::Node& root, const std::string& source, ServerConfig* c) {
  config::Section top(root, "", source);
  CMN_RETURN_IF_ERROR(top.check_map());
  config::ReadVisitor reader(top);
  visit(reader, *c);
  return reader.finish();
}

absl::Status at_least(const char* key, int64_t value, int64_t min) {
  if (value >= min) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(key, ": must be >= ", min, ", got ", value));
}

}  // namespace

std::vector<std::string> server_config_keys() {
  std::vector<std::string> keys;
  config::KeysVisitor collect(&keys);
  ServerConfig defaults;
  visit(collect, defaults);
  return keys;
}

std::string to_yaml(const ServerConfig& config) {
  ServerConfig copy = config;
  YAML::Emitter out;
  out << YAML::BeginMap;
  config::EmitVisitor emit(out);
  visit(emit, copy);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
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
  CMN_RETURN_IF_ERROR(at_least("model.decode_threads", c.model.decode_threads, 0));
  if (!model::parse_precision(c.model.precision)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.precision: must be fp32, bf16 or int8, got '", c.model.precision, "'"));
  }

  CMN_RETURN_IF_ERROR(at_least("engine.max_batch_size", c.engine.max_batch_size, 1));
  CMN_RETURN_IF_ERROR(at_least("engine.max_queue_delay_ms", c.engine.max_queue_delay_ms, 0));
  CMN_RETURN_IF_ERROR(at_least("engine.max_pending", c.engine.max_pending, 1));
  CMN_RETURN_IF_ERROR(at_least("engine.stat_reserved_slots", c.engine.stat_reserved_slots, 0));
  CMN_RETURN_IF_ERROR(at_least("engine.preprocess_threads", c.engine.preprocess_threads, 1));

  CMN_RETURN_IF_ERROR(at_least("limits.max_instances", c.limits.max_instances, 1));
  CMN_RETURN_IF_ERROR(at_least("limits.max_pixels", c.limits.max_pixels, 1));
  CMN_RETURN_IF_ERROR(at_least("limits.max_dimension", c.limits.max_dimension, 1));
  CMN_RETURN_IF_ERROR(at_least("limits.max_beam_size", c.limits.max_beam_size, 1));
  CMN_RETURN_IF_ERROR(at_least("limits.max_length", c.limits.max_length, 1));
  CMN_RETURN_IF_ERROR(at_least("limits.max_request_mb", c.limits.max_request_mb, 1));
  if (!(c.study.consistency_warn_below >= 0.0 && c.study.consistency_warn_below <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("study.consistency_warn_below must be in [0, 1] (0 = no warning), got ",
                                                   c.study.consistency_warn_below));
  }
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
  const auto check = [](const YAML::Node& document, const std::string& where) {
    ServerConfig scratch;
    return read_config(document, where, &scratch);
  };
  CMN_ASSIGN_OR_RETURN(const YAML::Node root, config::load_with_overrides(yaml_text, source, overrides, check));
  ServerConfig config;
  CMN_RETURN_IF_ERROR(read_config(root, source, &config));
  CMN_RETURN_IF_ERROR(validate_server_config(config));
  return config;
}

absl::StatusOr<ServerConfig> load_server_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::string text;
  if (!path.empty()) {
    CMN_ASSIGN_OR_RETURN(text, config::read_text_file(path));
  }
  return parse_server_config(text, path.empty() ? "defaults" : path, overrides);
}

}  // namespace cmn::server
