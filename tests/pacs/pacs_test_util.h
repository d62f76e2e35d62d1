#pragma once
// Shared helpers of the PACS tests: chest DICOMs from ../shared edited in memory with DCMTK (so that several
// real images form one study), per-process temp dirs, and subprocesses with captured output.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dcostrmb.h>
#include <dcmtk/dcmdata/dctk.h>
#include <gtest/gtest.h>

#include "common/test_files.h"

namespace cmn::pacs::testing {

namespace fs = std::filesystem;

using cmn::testing::chest;
using cmn::testing::read_bytes;
using cmn::testing::shared_path;
using cmn::testing::write_bytes;

// A directory for one test, removed afterwards; the pid keeps parallel ctest processes apart.
class ScopedDir : public cmn::testing::ScopedDir {
 public:
  explicit ScopedDir(const std::string& name) : cmn::testing::ScopedDir("cmn_pacs_test", name) {}
};

// Parses bytes (Part 10 or bare dataset) with DCMTK.
inline std::unique_ptr<DcmFileFormat> parse(const std::string& bytes) {
  auto file = std::make_unique<DcmFileFormat>();
  DcmInputBufferStream stream;
  stream.setBuffer(bytes.data(), static_cast<offile_off_t>(bytes.size()));
  stream.setEos();
  file->transferInit();
  const OFCondition cond = file->read(stream, EXS_Unknown, EGL_noChange, DCM_MaxReadLength);
  file->transferEnd();
  EXPECT_TRUE(cond.good()) << cond.text();
  return file;
}

inline std::string get(DcmItem* item, const DcmTagKey& key) {
  OFString value;
  item->findAndGetOFStringArray(key, value);
  return value.c_str();
}

// The instance with the given attributes set, as Part 10 bytes in its original transfer syntax.
inline std::string edit_dicom(const std::string& bytes, const std::vector<std::pair<DcmTagKey, std::string>>& values) {
  auto file = parse(bytes);
  for (const auto& [tag, value] : values) {
    const OFCondition cond = file->getDataset()->putAndInsertString(tag, value.c_str());
    EXPECT_TRUE(cond.good()) << cond.text();
  }
  E_TransferSyntax xfer = file->getDataset()->getOriginalXfer();
  if (xfer == EXS_Unknown) xfer = EXS_LittleEndianImplicit;
  file->validateMetaInfo(xfer);
  std::string out;
  std::vector<char> buffer(1 << 20);
  DcmOutputBufferStream stream(buffer.data(), buffer.size());
  file->transferInit();
  OFCondition cond = EC_StreamNotifyClient;
  while (cond == EC_StreamNotifyClient) {
    cond = file->write(stream, xfer, EET_ExplicitLength, nullptr);
    void* data = nullptr;
    offile_off_t length = 0;
    stream.flushBuffer(data, length);
    out.append(static_cast<const char*>(data), static_cast<size_t>(length));
  }
  file->transferEnd();
  EXPECT_TRUE(cond.good()) << cond.text();
  return out;
}

struct ProcessResult {
  int exit_code = -1;
  std::string out, err;
};

// Runs argv (no shell) with stdout/stderr captured in files of `dir`.
inline ProcessResult run_process(const std::vector<std::string>& argv, const std::string& dir) {
  static int counter = 0;
  const std::string base = dir + "/proc" + std::to_string(counter++);
  const pid_t pid = ::fork();
  if (pid == 0) {
    std::freopen((base + ".out").c_str(), "w", stdout);
    std::freopen((base + ".err").c_str(), "w", stderr);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    std::_Exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ProcessResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_bytes(base + ".out");
  r.err = read_bytes(base + ".err");
  return r;
}

}  // namespace cmn::pacs::testing
