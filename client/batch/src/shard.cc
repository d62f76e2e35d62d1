// Which studies this shard takes: a stable 64-bit FNV-1a hash of the study key, modulo the shard count.
#include <stdexcept>
#include <string>

#include "absl/strings/str_cat.h"
#include "cmn/batch/batch.h"

namespace cmn::batch {

uint64_t fnv1a64(const std::string& bytes) {
  uint64_t h = 14695981039346656037ull;  // FNV offset basis
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;  // FNV prime
  }
  return h;
}

absl::StatusOr<Shard> parse_shard(const std::string& text) {
  const auto slash = text.find('/');
  Shard s;
  try {
    if (slash == std::string::npos) throw std::invalid_argument("no slash");
    size_t used = 0;
    s.index = std::stoll(text.substr(0, slash), &used);
    if (used != slash) throw std::invalid_argument("index");
    const std::string n = text.substr(slash + 1);
    s.count = std::stoll(n, &used);
    if (used != n.size()) throw std::invalid_argument("count");
  } catch (const std::exception&) {
    return absl::InvalidArgumentError(absl::StrCat("--shard '", text, "' is not i/n (e.g. 0/4)"));
  }
  if (s.count < 1 || s.index < 0 || s.index >= s.count) {
    return absl::InvalidArgumentError(absl::StrCat("--shard '", text, "': want 0 <= i < n"));
  }
  return s;
}

}  // namespace cmn::batch
