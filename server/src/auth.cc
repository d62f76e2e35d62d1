#include "cmn/server/auth.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "cmn/pipeline/bundle_info.h"

namespace cmn::server {

absl::StatusOr<TokenAuthenticator> TokenAuthenticator::from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("auth.token_hashes_file: cannot open '", path, "'"));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return from_text(buffer.str(), path);
}

absl::StatusOr<TokenAuthenticator> TokenAuthenticator::from_text(const std::string& text, const std::string& source) {
  TokenAuthenticator auth;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    if (const size_t hash = line.find('#'); hash != absl::string_view::npos) line = line.substr(0, hash);
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    if (absl::StartsWith(line, "sha256:")) line.remove_prefix(7);
    // `sha256sum` output carries "  -" or a file name after the digest.
    line = line.substr(0, line.find_first_of(" \t"));
    std::string digest = absl::AsciiStrToLower(line);
    const bool hex = digest.size() == 64 &&
                     digest.find_first_not_of("0123456789abcdef") == std::string::npos;
    if (!hex) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ":", line_number, ": not a SHA-256 hex digest (64 hex digits)"));
    }
    auth.hashes_.insert(std::move(digest));
  }
  if (auth.hashes_.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": no token digest: every call would be refused"));
  }
  return auth;
}

absl::Status TokenAuthenticator::check(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) const {
  const auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return absl::UnauthenticatedError("missing 'authorization: Bearer <token>' metadata");
  }
  const absl::string_view value(it->second.data(), it->second.size());
  constexpr absl::string_view kScheme = "Bearer ";
  if (value.size() <= kScheme.size() || !absl::EqualsIgnoreCase(value.substr(0, kScheme.size()), kScheme)) {
    return absl::UnauthenticatedError("authorization metadata is not 'Bearer <token>'");
  }
  const std::string token(absl::StripAsciiWhitespace(value.substr(kScheme.size())));
  if (hashes_.count(pipeline::sha256_hex(token)) == 0) return absl::UnauthenticatedError("invalid token");
  return absl::OkStatus();
}

}  // namespace cmn::server
