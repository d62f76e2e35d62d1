// read_annotation (pipeline/annotation.h) on what the fuzz target (fuzz/annotation_fuzzer.cc) feeds it.
#include "cmn/pipeline/annotation.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

namespace cmn::pipeline {
namespace {

std::string write_temp(const std::string& text) {
  const std::string path = (std::filesystem::path(::testing::TempDir()) /
                            ("cmn_annotation_test_" + std::to_string(::getpid()) + ".json"))
                               .string();
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

TEST(AnnotationTest, StringAndNumberIds) {
  const std::string path = write_temp(
      R"({"train": [{"id": "a", "report": "Clear.", "image_path": ["a/0.png"]}, {"id": 7, "report": "x"}]})");
  auto a = read_annotation(path);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_EQ(a->train.size(), 2u);
  EXPECT_EQ(a->train[0].id, "a");
  EXPECT_EQ(a->train[0].image_paths, std::vector<std::string>{"a/0.png"});
  EXPECT_EQ(a->train[1].id, "7");
  std::remove(path.c_str());
}

// Finding (fuzz): an id of a million nested lists parsed fine (nlohmann's parser is iterative) but the
// id was then dump()ed, which recurses once per level: a stack overflow. Such ids are now refused.
TEST(AnnotationTest, DeeplyNestedIdIsRefusedNotDumped) {
  const size_t depth = 1'000'000;
  const std::string path = write_temp(R"({"test": [{"report": "r", "id": )" + std::string(depth, '[') +
                                      std::string(depth, ']') + "}]}");
  auto a = read_annotation(path);
  ASSERT_FALSE(a.ok());
  EXPECT_NE(std::string(a.status().message()).find("test[0].id is not a string or number"), std::string::npos)
      << a.status();
  std::remove(path.c_str());
}

}  // namespace
}  // namespace cmn::pipeline
