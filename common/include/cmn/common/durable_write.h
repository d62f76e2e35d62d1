#pragma once
// One durable whole-file replacement for every library: temporary file in the target's folder, write, fsync
// the file, rename it over the target, fsync the folder. A reader (or a crash, or a power cut) sees the old
// file or the new one, never a torn one, and a failure leaves no temporary file behind.
//
// Header-only on purpose, with POSIX and the standard library only: cmn_model links LibTorch and nothing else
// (it also builds against PyTorch's LibTorch on a GPU host), and it writes checkpoints through this header.
// cmn::write_file_atomically (file_util.h) is the absl::Status face of the same code.
//
// Errors are returned as text ("" = success) naming the path and the system's reason (errno text).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <string_view>
#include <system_error>

namespace cmn::durable {

// strerror is not thread-safe; the generic category's message is.
inline std::string errno_text(int err) { return std::generic_category().message(err); }

// The folder holding `path`: "a/b.txt" -> "a", "b.txt" -> ".", "/b" -> "/".
inline std::string parent_dir(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// fsync of a folder, so that a rename in it survives a crash. File systems that cannot sync a directory
// (EINVAL, ENOTSUP, EROFS) count as done: the rename is still atomic there, only not yet durable.
[[nodiscard]] inline std::string sync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return "cannot open folder '" + dir + "' to sync it: " + errno_text(errno);
  std::string error;
  if (::fsync(fd) != 0 && errno != EINVAL && errno != ENOTSUP && errno != EROFS) {
    error = "cannot sync folder '" + dir + "': " + errno_text(errno);
  }
  ::close(fd);
  return error;
}

// fsync of a written file by name (writers such as LibTorch's archive or DCMTK own their descriptors).
[[nodiscard]] inline std::string sync_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "cannot open '" + path + "' to sync it: " + errno_text(errno);
  std::string error;
  if (::fsync(fd) != 0) error = "cannot sync '" + path + "': " + errno_text(errno);
  ::close(fd);
  return error;
}

// Creates a new empty file beside `path` named "<stem>.tmp<pid>_<n>_<random>" (stem "" = the file name of
// `path`) and stores its name in *tmp. The stem matters to LibTorch: its zip writer names the archive's
// folder after the text before the last '.', so a checkpoint's temporary file keeps its archive name.
// Not mkstemp: it creates files 0600, and the result should get the usual 0666 & ~umask.
[[nodiscard]] inline std::string create_temp_beside(const std::string& path, std::string* tmp,
                                                    const std::string& stem = "") {
  const std::string dir = parent_dir(path);
  const size_t slash = path.find_last_of('/');
  const std::string base = stem.empty() ? (slash == std::string::npos ? path : path.substr(slash + 1)) : stem;
  if (base.empty()) return "cannot write '" + path + "': not a file name";
  static std::atomic<uint64_t> counter{0};
  std::random_device random;
  for (int attempt = 0; attempt < 100; ++attempt) {
    const std::string candidate = (dir == "/" ? "" : dir) + "/" + base + ".tmp" + std::to_string(::getpid()) +
                                  "_" + std::to_string(counter++) + "_" + std::to_string(random());
    const int fd = ::open(candidate.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0) {
      ::close(fd);
      *tmp = candidate;
      return "";
    }
    if (errno != EEXIST) {
      return "cannot write '" + path + "': cannot create a temporary file in '" + dir + "': " + errno_text(errno);
    }
  }
  return "cannot write '" + path + "': too many temporary name collisions in '" + dir + "'";
}

// Writes all of `bytes` to the existing file `path` (truncating it).
[[nodiscard]] inline std::string write_all(const std::string& path, std::string_view bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  if (fd < 0) return "cannot open '" + path + "': " + errno_text(errno);
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : EIO;
      ::close(fd);
      return "cannot write '" + path + "': " + errno_text(err);
    }
    done += static_cast<size_t>(n);
  }
  if (::close(fd) != 0) return "cannot write '" + path + "': " + errno_text(errno);
  return "";
}

// Replaces `path` durably with what `fill` writes into the temporary file whose name it is given. `fill`
// returns "" or its own error text. On any failure the temporary file is removed and the error returned; if
// `fill` throws, the temporary file is removed and the exception propagates. `temp_stem`: see
// create_temp_beside.
[[nodiscard]] inline std::string replace_file(const std::string& path,
                                              const std::function<std::string(const std::string& tmp)>& fill,
                                              const std::string& temp_stem = "") {
  std::string tmp;
  if (std::string error = create_temp_beside(path, &tmp, temp_stem); !error.empty()) return error;
  std::string error;
  try {
    error = fill(tmp);
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  if (error.empty()) error = sync_file(tmp);
  if (error.empty() && std::rename(tmp.c_str(), path.c_str()) != 0) {
    error = "cannot rename '" + tmp + "' to '" + path + "': " + errno_text(errno);
  }
  if (!error.empty()) {
    std::remove(tmp.c_str());
    return error;
  }
  return sync_directory(parent_dir(path));
}

// Replaces `path` durably with `bytes`.
[[nodiscard]] inline std::string write_file(const std::string& path, std::string_view bytes) {
  return replace_file(path, [bytes](const std::string& tmp) { return write_all(tmp, bytes); });
}

}  // namespace cmn::durable
