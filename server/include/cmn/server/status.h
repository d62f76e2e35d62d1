#pragma once
// absl::Status <-> grpc::Status at the RPC boundary (STYLE.md §3: convert, never re-interpret).
#include <string>

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace cmn::server {

// absl::StatusCode values are the canonical gRPC codes, so the cast is 1:1.
inline grpc::Status to_grpc_status(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

// "OK", "INVALID_ARGUMENT", ... (the names metrics and logs use).
inline std::string status_code_name(absl::StatusCode code) { return absl::StatusCodeToString(code); }

}  // namespace cmn::server
