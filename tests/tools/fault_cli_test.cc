// Faults (issue 13): a full disk under cmn-generate's archive output and under a bundle write. The disk is a
// real tmpfs of a few pages mounted for the test (root only: the test skips, saying why, where mount is not
// allowed) and filled with a filler file, so the tools meet a real ENOSPC from the kernel, not a simulated one.
// Both must stop with one clear error naming the file and the reason, leave nothing half-written that a later
// reader would take as done, and succeed once there is space again.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dctk.h"

#include "common/run_command.h"
#include "tools/generate_summary.h"

namespace {

namespace fs = std::filesystem;
using cmn::testing::RunResult;

constexpr size_t kPage = 4096;  // tmpfs counts its size in pages

std::string shared(const std::string& rel) { return std::string(CMN_SHARED_DIR) + "/" + rel; }

fs::path temp(const std::string& name) {
  return fs::path(::testing::TempDir()) / (name + "_" + std::to_string(getpid()));
}

RunResult run(const std::string& command) { return cmn::testing::run_command(command, "cmn_fault_cli"); }

std::string slurp(const fs::path& p) {
  std::stringstream ss;
  ss << std::ifstream(p, std::ios::binary).rdbuf();
  return ss.str();
}

// A tmpfs mounted on a fresh folder for one test, unmounted (lazily, so a failed test cannot leave it busy)
// and removed afterwards.
class Tmpfs {
 public:
  explicit Tmpfs(const std::string& name) : dir_(temp(name)) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
    fs::create_directories(dir_);
  }
  ~Tmpfs() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  Tmpfs(const Tmpfs&) = delete;
  Tmpfs& operator=(const Tmpfs&) = delete;

  // "" or why it could not be mounted (not root, no CAP_SYS_ADMIN in a container, ...).
  std::string mount(size_t bytes) {
    const std::string options = "size=" + std::to_string(bytes) + ",mode=0755";
    if (::mount("tmpfs", dir_.c_str(), "tmpfs", 0, options.c_str()) != 0) {
      return "cannot mount a tmpfs on " + dir_.string() + ": " + std::strerror(errno);
    }
    mounted_ = true;
    return "";
  }
  // A new size for the mounted file system (the files stay).
  bool resize(size_t bytes) {
    const std::string options = "size=" + std::to_string(bytes);
    return ::mount("tmpfs", dir_.c_str(), "tmpfs", MS_REMOUNT, options.c_str()) == 0;
  }
  // Fills every free page with `name`, then frees `leave_pages` of them again. Returns the filler's path.
  fs::path fill(const std::string& name, size_t leave_pages) const {
    const fs::path filler = dir_ / name;
    const int fd = ::open(filler.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    EXPECT_GE(fd, 0) << std::strerror(errno);
    const std::string page(kPage, 'x');
    off_t size = 0;
    for (;;) {
      const ssize_t n = ::write(fd, page.data(), page.size());
      if (n <= 0) {
        EXPECT_EQ(errno, ENOSPC) << "the filler stopped for another reason: " << std::strerror(errno);
        break;
      }
      size += n;
    }
    // A partly written last page is a whole page in use: free `leave_pages` whole pages counted from there.
    const off_t pages = (size + static_cast<off_t>(kPage) - 1) / static_cast<off_t>(kPage);
    EXPECT_GT(pages, static_cast<off_t>(leave_pages)) << "the tmpfs is too small for the filler";
    if (leave_pages > 0 && pages > static_cast<off_t>(leave_pages)) {
      EXPECT_EQ(::ftruncate(fd, (pages - static_cast<off_t>(leave_pages)) * static_cast<off_t>(kPage)), 0);
    }
    ::close(fd);
    return filler;
  }
  const fs::path& dir() const { return dir_; }

 private:
  fs::path dir_;
  bool mounted_ = false;
};

// The lines of `text`; a last piece without its newline is returned as is (a torn tail).
std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    lines.push_back(text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos));
    if (nl == std::string::npos) break;
    pos = nl + 1;
  }
  return lines;
}

using cmn::testing::summary_of;

std::string bundle_command(const std::string& out, int seed, bool force) {
  return std::string(CMN_BUNDLE_BIN) + " init-untrained --out " + out + " --vocab " + CMN_SOURCE_DIR +
         "/configs/default_vocab.txt --views 4 --seed " + std::to_string(seed) + (force ? " --force" : "");
}

// Removes a path when the test ends, however it ends (the bundle is over 100 MB).
struct RemovedAtEnd {
  fs::path path;
  ~RemovedAtEnd() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// `count` one-image studies: the NIH DX instance under new StudyInstanceUIDs.
std::set<std::string> make_tree(const fs::path& root, int count) {
  fs::remove_all(root);
  fs::create_directories(root);
  std::set<std::string> uids;
  for (int i = 0; i < count; ++i) {
    const std::string uid = "1.2.826.0.1.3680043.8.498." + std::to_string(2000 + i);
    DcmFileFormat file;
    EXPECT_TRUE(file.loadFile(shared("data/dicom/chest/NIH-ChestXray14_DX_implicitLE.dcm").c_str()).good());
    EXPECT_TRUE(file.getDataset()->putAndInsertString(DCM_StudyInstanceUID, uid.c_str()).good());
    EXPECT_TRUE(file.saveFile((root / ("s" + std::to_string(i) + ".dcm")).c_str()).good());
    uids.insert(uid);
  }
  return uids;
}

// Lines of stderr that are errors (not the untrained-model note or the summary).
std::vector<std::string> error_lines(const std::string& err) {
  std::vector<std::string> out;
  for (const auto& line : lines_of(err)) {
    if (line.find("NOTE:") == std::string::npos && line.find("summary:") == std::string::npos && !line.empty()) {
      out.push_back(line);
    }
  }
  return out;
}

TEST(FaultCli, ArchiveOutputOnAFullDiskFailsCleanlyAndResumesWhenThereIsSpace) {
  const RemovedAtEnd tree{temp("cmn_fault_tree")}, bundle{temp("cmn_fault_bundle")};
  const auto uids = make_tree(tree.path, 8);
  // The 4-view untrained model, on the ordinary disk.
  const RunResult made = run(bundle_command(bundle.path.string(), 1, false));
  ASSERT_EQ(made.exit_code, 0) << made.err;
  Tmpfs disk("cmn_fault_jsonl");
  if (const std::string why = disk.mount(1 << 20); !why.empty()) GTEST_SKIP() << why;
  // Room for the key list (one page) and two pages of output: a few study lines (about 1.5 kB each), not all
  // eight. The run then hits ENOSPC, almost surely part-way through a line (a short write).
  const fs::path filler = disk.fill("filler", 3);
  const fs::path out = disk.dir() / "out.jsonl";
  const std::string command = std::string(CMN_GENERATE_BIN) + " --bundle " + bundle.path.string() + " --dicom " +
                              tree.path.string() + " --output " + out.string() +
                              " --max-length 3 --beam-size 1 --threads 1 --batch-size 1 --progress never";

  const RunResult full = run(command);
  EXPECT_NE(full.exit_code, 0) << full.err;
  const auto errors = error_lines(full.err);
  ASSERT_EQ(errors.size(), 1u) << full.err;
  EXPECT_NE(errors[0].find(out.string()), std::string::npos) << errors[0];
  EXPECT_NE(errors[0].find("No space left on device"), std::string::npos) << errors[0];
  // Only whole lines are left: every one a finished study, the file ending in a newline.
  const std::string partial = slurp(out);
  ASSERT_FALSE(partial.empty()) << "no study fitted: the filler left too little room\n" << full.err;
  EXPECT_EQ(partial.back(), '\n') << "a torn line was left behind";
  std::set<std::string> first_ids;
  for (const auto& line : lines_of(partial)) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << "not JSON: " << line;
    EXPECT_TRUE(j.contains("report")) << line;
    first_ids.insert(j.at("id").get<std::string>());
  }
  ASSERT_LT(first_ids.size(), uids.size()) << "every study fitted: the disk never filled";

  // Space again: the rerun does only the missing studies, and the output holds every study exactly once.
  fs::remove(filler);
  const RunResult resumed = run(command);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_EQ(resumed.err.find("torn"), std::string::npos) << resumed.err;
  const auto summary = summary_of(resumed.err);
  EXPECT_EQ(summary.value("skipped_already_in_output", -1), static_cast<int>(first_ids.size())) << resumed.err;
  EXPECT_EQ(summary.value("done", -1), static_cast<int>(uids.size() - first_ids.size())) << resumed.err;
  std::multiset<std::string> ids;
  for (const auto& line : lines_of(slurp(out))) {
    const auto j = nlohmann::json::parse(line);
    ids.insert(j.at("id").get<std::string>());
    EXPECT_FALSE(j.contains("error")) << line;
  }
  EXPECT_EQ(ids, std::multiset<std::string>(uids.begin(), uids.end()));
}

TEST(FaultCli, BundleWriteOnAFullDiskFailsCleanlyAndKeepsTheOldBundle) {
  Tmpfs disk("cmn_fault_bundle_disk");
  // 16 MiB: the weights (over 100 MB) cannot fit.
  if (const std::string why = disk.mount(16 << 20); !why.empty()) GTEST_SKIP() << why;
  const std::string target = (disk.dir() / "bundle").string();

  const RunResult full = run(bundle_command(target, 3, false));
  EXPECT_EQ(full.exit_code, 1) << full.err;
  const auto errors = lines_of(full.err);
  ASSERT_EQ(errors.size(), 1u) << full.err;
  EXPECT_NE(errors[0].find("'" + target + "'"), std::string::npos) << errors[0];
  EXPECT_NE(errors[0].find("No space left on device"), std::string::npos) << errors[0];
  // Nothing is published, no temporary folder is left, and what a reader finds is refused.
  EXPECT_TRUE(fs::is_empty(disk.dir())) << "left behind: " << fs::directory_iterator(disk.dir())->path();
  EXPECT_NE(run(std::string(CMN_BUNDLE_BIN) + " verify --load " + target).exit_code, 0);

  // Space again: the same command writes a bundle that loads.
  ASSERT_TRUE(disk.resize(512 << 20)) << std::strerror(errno);
  const RunResult written = run(bundle_command(target, 3, false));
  ASSERT_EQ(written.exit_code, 0) << written.err;
  const RunResult loaded = run(std::string(CMN_BUNDLE_BIN) + " verify --load " + target);
  ASSERT_EQ(loaded.exit_code, 0) << loaded.err;
  ASSERT_NE(loaded.out.find("digest: sha256:"), std::string::npos) << loaded.out;

  // Replacing it (--force) on a full disk fails the same way and leaves the old bundle whole and in place.
  const fs::path filler = disk.fill("filler", 0);
  const RunResult replace = run(bundle_command(target, 4, true));
  EXPECT_EQ(replace.exit_code, 1) << replace.err;
  EXPECT_NE(replace.err.find("No space left on device"), std::string::npos) << replace.err;
  const RunResult still = run(std::string(CMN_BUNDLE_BIN) + " verify --load " + target);
  EXPECT_EQ(still.exit_code, 0) << still.err;
  EXPECT_EQ(still.out, loaded.out) << "the old bundle changed";
  std::set<std::string> left;
  for (const auto& e : fs::directory_iterator(disk.dir())) left.insert(e.path().filename().string());
  EXPECT_EQ(left, (std::set<std::string>{"bundle", "filler"})) << "a temporary folder was left behind";
}

}  // namespace
