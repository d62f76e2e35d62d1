// The output JSONL: what a previous run already wrote (keys, a torn last line), appending one synced line per
// study, the shard's key list beside it, and file names made from study keys.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "batch_internal.h"
#include "cmn/batch/batch.h"
#include "cmn/common/durable_write.h"
#include "cmn/common/file_util.h"
#include "cmn/common/status_macros.h"

namespace cmn::batch {

namespace fs = std::filesystem;

std::optional<std::string> detail::line_key(const nlohmann::json& j) {
  if (!j.is_object()) return std::nullopt;
  for (const char* field : {"id", "study"}) {
    if (!j.contains(field)) continue;
    if (j[field].is_string()) return j[field].get<std::string>();
    if (j[field].is_number()) return j[field].dump();
  }
  return std::nullopt;
}

absl::StatusOr<ExistingOutput> scan_output(const std::string& path) {
  ExistingOutput out;
  std::error_code ec;
  if (!fs::exists(path, ec)) return out;
  CMN_ASSIGN_OR_RETURN(const std::string bytes, detail::read_bytes(path));
  size_t pos = 0;
  int64_t line_no = 0;
  while (pos < bytes.size()) {
    const size_t nl = bytes.find('\n', pos);
    ++line_no;
    const bool complete = nl != std::string::npos;
    const std::string line = bytes.substr(pos, complete ? nl - pos : std::string::npos);
    std::optional<std::string> key;
    try {
      key = detail::line_key(nlohmann::json::parse(line));
    } catch (const nlohmann::json::exception&) {
    }
    const bool last = !complete || nl + 1 == bytes.size();
    if (!complete || !key) {
      if (!last) {
        return absl::DataLossError(absl::StrCat(path, ":", line_no, ": not a study line (JSON with \"id\"); ",
                                                "refusing to append to it"));
      }
      out.torn_tail = true;  // a kill mid-write: this study runs again
      break;
    }
    out.keys.insert(*key);
    ++out.lines;
    pos = nl + 1;
    out.valid_bytes = pos;
  }
  return out;
}

absl::StatusOr<JsonlAppender> JsonlAppender::open(const std::string& path, uint64_t keep_bytes, bool sync) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("cannot open '", path, "' for writing: ", durable::errno_text(errno)));
  }
  if (::ftruncate(fd, static_cast<off_t>(keep_bytes)) != 0 || ::lseek(fd, 0, SEEK_END) < 0) {
    const int err = errno;
    ::close(fd);
    return absl::InternalError(absl::StrCat("cannot truncate '", path, "': ", durable::errno_text(err)));
  }
  return JsonlAppender(fd, path, sync);
}

JsonlAppender::JsonlAppender(JsonlAppender&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), path_(std::move(other.path_)), sync_(other.sync_) {}
JsonlAppender& JsonlAppender::operator=(JsonlAppender&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
    sync_ = other.sync_;
  }
  return *this;
}
JsonlAppender::~JsonlAppender() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status JsonlAppender::append(const std::string& line) {
  // A failed append (disk full, I/O error) is cut off again, so the file never ends in a torn line that a
  // reader might mistake for a study's output; the caller stops and a later run redoes this study. Should the
  // cut fail too, the torn tail is still recognised (no newline) and dropped by scan_output on resume.
  const off_t start = ::lseek(fd_, 0, SEEK_CUR);
  if (start < 0) {
    return absl::InternalError(absl::StrCat("cannot append to '", path_, "': ", durable::errno_text(errno)));
  }
  auto fail = [&](const char* what, int err) {
    if (::ftruncate(fd_, start) == 0) ::lseek(fd_, start, SEEK_SET);
    const std::string message = absl::StrCat("cannot ", what, " '", path_, "': ", durable::errno_text(err),
                                             " (the study's line is not written; a rerun resumes here)");
    return err == ENOSPC || err == EDQUOT ? absl::ResourceExhaustedError(message) : absl::InternalError(message);
  };
  const std::string bytes = line + "\n";
  size_t written = 0;
  while (written < bytes.size()) {  // one write call in practice; a short write continues
    const ssize_t n = ::write(fd_, bytes.data() + written, bytes.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("write to", errno);
    }
    written += static_cast<size_t>(n);
  }
  if (sync_ && ::fdatasync(fd_) != 0) return fail("sync", errno);
  return absl::OkStatus();
}

std::string safe_file_name(const std::string& key) {
  std::string out = key;
  for (char& c : out) {
    if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) c = '_';
  }
  if (out.empty() || out == "." || out == "..") out = "_" + out;
  return out;
}

std::string keys_file_for(const std::string& output) { return output + ".keys.json"; }

absl::Status write_keys_file(const std::string& output, const Shard& shard, const std::vector<std::string>& keys) {
  nlohmann::json j = {{"shard", shard.text()}, {"keys", keys}};
  return write_file_atomically(keys_file_for(output), j.dump() + "\n");
}

}  // namespace cmn::batch
