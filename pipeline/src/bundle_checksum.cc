// Bundle integrity: SHA-256 of bytes and files (OpenSSL EVP), SHA256SUMS as sha256sum writes and reads it,
// and write_sha256sums for a bundle edited by hand.
#include "cmn/pipeline/bundle.h"

#include <array>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <set>
#include <sstream>
#include <utility>
#include <vector>

#include <openssl/evp.h>
#include <yaml-cpp/yaml.h>

#include "absl/strings/str_cat.h"
#include "bundle_internal.h"
#include "cmn/common/status_macros.h"

namespace cmn::pipeline {
namespace {

// --- SHA-256 -------------------------------------------------------------------------------------------

struct EvpCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
using EvpCtx = std::unique_ptr<EVP_MD_CTX, EvpCtxDeleter>;

std::string to_hex(const unsigned char* data, unsigned int size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(size * 2, '0');
  for (unsigned int i = 0; i < size; ++i) {
    out[2 * i] = kDigits[data[i] >> 4];
    out[2 * i + 1] = kDigits[data[i] & 0xf];
  }
  return out;
}

EvpCtx new_sha256_ctx() {
  EvpCtx ctx(EVP_MD_CTX_new());
  if (ctx && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) ctx.reset();
  return ctx;
}

std::string finish_hex(EVP_MD_CTX* ctx) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int size = 0;
  if (EVP_DigestFinal_ex(ctx, md.data(), &size) != 1) return "";
  return to_hex(md.data(), size);
}

}  // namespace

namespace bundle_detail {

// --- SHA256SUMS ----------------------------------------------------------------------------------------

// sha256sum's output: "<64 hex><space><space or '*'><name>". Names with escapes (a leading '\') are not
// produced for our plain names and are rejected with the rest.
absl::StatusOr<std::vector<ChecksumEntry>> parse_sha256sums(const std::string& text, const std::string& where) {
  std::vector<ChecksumEntry> entries;
  std::set<std::string> seen;
  std::istringstream lines(text);
  std::string line;
  int number = 0;
  while (std::getline(lines, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const auto bad = [&](const std::string& why) {
      return absl::InvalidArgumentError(absl::StrCat(where, " line ", number, ": ", why, ": '", line, "'"));
    };
    if (line.size() < 67 || line[64] != ' ' || (line[65] != ' ' && line[65] != '*')) {
      return bad("expected '<64 hex digits>  <file>'");
    }
    ChecksumEntry entry{line.substr(0, 64), line.substr(66)};
    for (char& c : entry.hex) {
      if (!std::isxdigit(static_cast<unsigned char>(c))) return bad("not a SHA-256 hex digest");
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    if (!is_plain_file_name(entry.file)) return bad("file names must not contain '/' or be '.'/'..'");
    if (!seen.insert(entry.file).second) return bad(absl::StrCat("'", entry.file, "' is listed twice"));
    entries.push_back(std::move(entry));
  }
  return entries;
}

absl::StatusOr<std::string> sums_text(const std::string& dir, const std::vector<std::string>& files) {
  std::string text;
  for (const std::string& file : files) {
    CMN_ASSIGN_OR_RETURN(const std::string hex, sha256_file(path_in(dir, file)));
    absl::StrAppend(&text, hex, "  ", file, "\n");
  }
  return text;
}

}  // namespace bundle_detail

using bundle_detail::is_plain_file_name;
using bundle_detail::path_in;
using bundle_detail::read_file_bytes;
using bundle_detail::sums_text;
using bundle_detail::write_file_durably;

std::string sha256_hex(const std::string& bytes) {
  EvpCtx ctx = new_sha256_ctx();
  if (!ctx || EVP_DigestUpdate(ctx.get(), bytes.data(), bytes.size()) != 1) return "";
  return finish_hex(ctx.get());
}

absl::StatusOr<std::string> sha256_file(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot open '", path, "': ", std::strerror(errno)));
  EvpCtx ctx = new_sha256_ctx();
  if (!ctx) return absl::InternalError("OpenSSL: cannot initialise SHA-256");
  std::vector<unsigned char> block(1 << 20);
  while (true) {
    const size_t n = std::fread(block.data(), 1, block.size(), file.get());
    if (n > 0 && EVP_DigestUpdate(ctx.get(), block.data(), n) != 1) {
      return absl::InternalError(absl::StrCat("OpenSSL: SHA-256 update failed on '", path, "'"));
    }
    if (n < block.size()) break;
  }
  if (std::ferror(file.get())) return absl::DataLossError(absl::StrCat("read error on '", path, "'"));
  std::string hex = finish_hex(ctx.get());
  if (hex.empty()) return absl::InternalError(absl::StrCat("OpenSSL: SHA-256 final failed on '", path, "'"));
  return hex;
}

absl::Status write_sha256sums(const std::string& dir) {
  const std::string yaml_path = path_in(dir, kModelYaml);
  CMN_ASSIGN_OR_RETURN(const std::string yaml_text, read_file_bytes(yaml_path));
  std::string weights = kDefaultWeightsFile;
  try {
    const YAML::Node root = YAML::Load(yaml_text);
    if (root.IsMap() && root["weights"].IsScalar()) weights = root["weights"].as<std::string>();
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(yaml_path, ": not valid YAML: ", e.what()));
  }
  if (!is_plain_file_name(weights)) {
    return absl::InvalidArgumentError(absl::StrCat(yaml_path, ": key 'weights' must be a file name inside the bundle"));
  }
  CMN_ASSIGN_OR_RETURN(const std::string sums, sums_text(dir, {kModelYaml, weights, kVocabFile}));
  // Durable replace: a reader never sees a half-written checksum list.
  return write_file_durably(path_in(dir, kChecksumFile), sums);
}

}  // namespace cmn::pipeline
