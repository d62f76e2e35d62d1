#pragma once
// Whole-file writes that a reader (or a crash) never sees half done.
#include <string>

#include "absl/status/status.h"
#include "cmn/common/durable_write.h"

namespace cmn {

// Replaces `path` with `bytes` durably (durable_write.h: temporary file beside it, fsync, rename, fsync of the
// folder). The error names the path and the system's reason; a failure leaves no temporary file behind.
inline absl::Status write_file_atomically(const std::string& path, const std::string& bytes) {
  const std::string error = durable::write_file(path, bytes);
  if (!error.empty()) return absl::InternalError(error);
  return absl::OkStatus();
}

}  // namespace cmn
