#pragma once
// The summary JSON cmn-generate prints last on stderr ("cmn-generate: summary: {...}"); null when absent.
#include <string>

#include <nlohmann/json.hpp>

namespace cmn::testing {

inline nlohmann::json summary_of(const std::string& err) {
  const std::string tag = "cmn-generate: summary: ";
  const auto at = err.rfind(tag);
  if (at == std::string::npos) return nlohmann::json();
  const auto end = err.find('\n', at);
  return nlohmann::json::parse(err.substr(at + tag.size(), end - at - tag.size()));
}

}  // namespace cmn::testing
