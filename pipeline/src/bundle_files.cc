// The small file helpers of the bundle code (bundle_internal.h): std, absl and durable_write.h only, in their
// own file so that the parsers (bundle_yaml.cc, bundle_checksum.cc) link without the model (fuzz/).
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "bundle_internal.h"
#include "cmn/common/durable_write.h"

namespace cmn::pipeline {

namespace bundle_detail {

// --- files ---------------------------------------------------------------------------------------------

absl::StatusOr<std::string> read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open '", path, "': ", std::strerror(errno)));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("read error on '", path, "'"));
  return buffer.str();
}

// durable_write.h with the error as a status: the files inside the temporary bundle directory are synced
// before the rename that publishes the directory, so a crash cannot publish truncated files.
absl::Status write_file_durably(const std::string& path, const std::string& bytes) {
  const std::string error = durable::write_file(path, bytes);
  if (!error.empty()) return absl::InternalError(error);
  return absl::OkStatus();
}

absl::Status fsync_dir(const std::string& dir) {
  const std::string error = durable::sync_directory(dir);
  if (!error.empty()) return absl::InternalError(error);
  return absl::OkStatus();
}

// A weights/vocab file name from model.yaml or SHA256SUMS must stay inside the bundle.
bool is_plain_file_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find_first_of("/\\\n\r") == std::string::npos;
}

}  // namespace bundle_detail

}  // namespace cmn::pipeline
