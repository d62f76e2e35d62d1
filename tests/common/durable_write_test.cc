// The one durable write (cmn/common/durable_write.h, and cmn::write_file_atomically over it): the content
// arrives, an old file is replaced whole, and every failure names the path and leaves no temporary file.
#include "cmn/common/durable_write.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "cmn/common/file_util.h"
#include "common/test_files.h"

namespace cmn::durable {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> names_in(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(DurableWriteTest, WritesAndReplacesTheWholeContent) {
  testing::ScopedDir dir("common", ::testing::UnitTest::GetInstance()->current_test_info()->name());
  const std::string path = dir.path() + "/state.json";
  ASSERT_EQ(write_file(path, std::string("first version, longer than the second\n")), "");
  EXPECT_EQ(testing::read_bytes(path), "first version, longer than the second\n");
  ASSERT_EQ(write_file(path, std::string("second\0binary", 13)), "");
  EXPECT_EQ(testing::read_bytes(path), std::string("second\0binary", 13));
  ASSERT_EQ(write_file(path, ""), "");
  EXPECT_EQ(testing::read_bytes(path), "");
  EXPECT_EQ(names_in(dir.path()), std::vector<std::string>{"state.json"});  // no temporary file left
}

TEST(DurableWriteTest, FailedRenameNamesThePathAndLeavesNoTemporaryFile) {
  testing::ScopedDir dir("common", ::testing::UnitTest::GetInstance()->current_test_info()->name());
  // A non-empty folder where the file should go: the temporary file is written, the rename fails.
  const std::string path = dir.path() + "/taken";
  fs::create_directories(path + "/inside");
  const std::string error = write_file(path, "bytes");
  EXPECT_NE(error.find("'" + path + "'"), std::string::npos) << error;
  EXPECT_NE(error.find(errno_text(EISDIR)), std::string::npos) << error;
  EXPECT_EQ(names_in(dir.path()), std::vector<std::string>{"taken"});
  EXPECT_EQ(names_in(path), std::vector<std::string>{"inside"});
}

TEST(DurableWriteTest, MissingFolderNamesThePathAndTheReason) {
  testing::ScopedDir dir("common", ::testing::UnitTest::GetInstance()->current_test_info()->name());
  const std::string path = dir.path() + "/no/such/folder/file.txt";
  const std::string error = write_file(path, "bytes");
  EXPECT_NE(error.find("'" + path + "'"), std::string::npos) << error;
  EXPECT_NE(error.find(errno_text(ENOENT)), std::string::npos) << error;
  EXPECT_EQ(names_in(dir.path()), std::vector<std::string>{});
}

TEST(DurableWriteTest, FailingOrThrowingWriterKeepsTheOldFileAndLeavesNoTemporaryFile) {
  testing::ScopedDir dir("common", ::testing::UnitTest::GetInstance()->current_test_info()->name());
  const std::string path = dir.path() + "/model.pth";
  ASSERT_EQ(write_file(path, "old"), "");
  std::string seen_tmp;
  const std::string error = replace_file(path, [&](const std::string& tmp) {
    seen_tmp = tmp;
    EXPECT_EQ(write_all(tmp, "half"), "");
    return std::string("encoder failed");
  });
  EXPECT_EQ(error, "encoder failed");
  EXPECT_EQ(parent_dir(seen_tmp), dir.path());  // beside the target: the rename stays on one file system
  EXPECT_FALSE(fs::exists(seen_tmp));
  EXPECT_THROW(replace_file(path, [](const std::string& tmp) -> std::string { throw std::runtime_error("x"); }),
               std::runtime_error);
  EXPECT_EQ(testing::read_bytes(path), "old");
  EXPECT_EQ(names_in(dir.path()), std::vector<std::string>{"model.pth"});
}

TEST(DurableWriteTest, TemporaryFileKeepsTheRequestedStem) {
  testing::ScopedDir dir("common", ::testing::UnitTest::GetInstance()->current_test_info()->name());
  std::string seen_tmp;
  ASSERT_EQ(replace_file(
                dir.path() + "/best.pth",
                [&](const std::string& tmp) {
                  seen_tmp = tmp;
                  return write_all(tmp, "x");
                },
                "archive"),
            "");
  // LibTorch's zip writer names the archive after the text before the last '.'.
  const std::string name = fs::path(seen_tmp).filename().string();
  EXPECT_EQ(name.substr(0, name.find_last_of('.')), "archive") << name;
  EXPECT_EQ(testing::read_bytes(dir.path() + "/best.pth"), "x");
}

TEST(DurableWriteTest, ParentDirOfPlainAndRootedNames) {
  EXPECT_EQ(parent_dir("a/b.txt"), "a");
  EXPECT_EQ(parent_dir("b.txt"), ".");
  EXPECT_EQ(parent_dir("/b.txt"), "/");
}

TEST(DurableWriteTest, StatusWrapperCarriesThePathAndReason) {
  testing::ScopedDir dir("common", ::testing::UnitTest::GetInstance()->current_test_info()->name());
  const std::string path = dir.path() + "/missing/out.jsonl";
  const absl::Status status = cmn::write_file_atomically(path, "x");
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find(path), std::string::npos) << status;
  EXPECT_NE(status.message().find(errno_text(ENOENT)), std::string::npos) << status;
  ASSERT_TRUE(cmn::write_file_atomically(dir.path() + "/out.jsonl", "{}\n").ok());
  EXPECT_EQ(testing::read_bytes(dir.path() + "/out.jsonl"), "{}\n");
}

}  // namespace
}  // namespace cmn::durable
