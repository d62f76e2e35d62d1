#pragma once
// Bearer-token authentication. The server stores only SHA-256 digests of the accepted tokens (a file of
// lower-case hex lines, `printf %s "$TOKEN" | sha256sum`), so the file is not a secret worth stealing.
// Clients send the gRPC metadata "authorization: Bearer <token>".
#include <map>
#include <set>
#include <string>

#include <grpcpp/support/string_ref.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cmn::server {

class TokenAuthenticator {
 public:
  // One digest per line (64 hex digits, optionally "sha256:"-prefixed); blank lines and '#' comments skipped.
  // NotFound for a missing file; InvalidArgument naming the line for anything else, or when no digest is given.
  static absl::StatusOr<TokenAuthenticator> from_file(const std::string& path);
  static absl::StatusOr<TokenAuthenticator> from_text(const std::string& text, const std::string& source);

  // OK when the metadata carries "authorization: Bearer <token>" with a listed digest; UNAUTHENTICATED
  // otherwise (the message says what was missing, never echoes the token).
  absl::Status check(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) const;

  size_t size() const { return hashes_.size(); }

 private:
  std::set<std::string> hashes_;
};

}  // namespace cmn::server
