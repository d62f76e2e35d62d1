#pragma once
// Splits the base URLs the senders take (STOW-RS in dicom_send.cc, FHIR in fhir_send.cc); private to pipeline/src.
#include <string>

namespace cmn::pipeline {

// "http://host:port/path" -> ("http://host:port", "/path" without trailing slashes). False without a host.
inline bool split_url(const std::string& url, std::string* origin, std::string* path) {
  const size_t scheme = url.find("://");
  if (scheme == std::string::npos) return false;
  const size_t slash = url.find('/', scheme + 3);
  *origin = url.substr(0, slash);
  *path = slash == std::string::npos ? "" : url.substr(slash);
  while (!path->empty() && path->back() == '/') path->pop_back();
  return origin->size() > scheme + 3;
}

}  // namespace cmn::pipeline
