// Model bundles: import of the parity checkpoint, checksum verification, strict model.yaml, untrained init.
#include "cmn/pipeline/bundle.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cmn/model/checkpoint.h"

namespace cmn::pipeline {
namespace {

namespace fs = std::filesystem;

std::string shared(const std::string& relative) { return std::string(CMN_SHARED_DIR) + "/" + relative; }

// tests/pipeline/bundle_test.cc -> <checkout>/configs/default_vocab.txt
std::string default_vocab() {
  return (fs::path(__FILE__).parent_path().parent_path().parent_path() / "configs" / "default_vocab.txt").string();
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_all(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// A directory under the test temp dir, removed (with what the test put there) when it goes out of scope.
// The pid keeps parallel ctest processes apart.
class ScopedDir {
 public:
  explicit ScopedDir(const std::string& name)
      : path_((fs::path(::testing::TempDir()) / ("cmn_bundle_test_" + std::to_string(::getpid()) + "_" + name))
                  .string()) {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  ~ScopedDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  ScopedDir(const ScopedDir&) = delete;
  ScopedDir& operator=(const ScopedDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Importing the 130 MB parity checkpoint takes seconds: do it once for the suite.
class ImportedBundleTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scoped_ = new ScopedDir("parity_bundle");
    dir_ = &scoped_->path();
    ImportOptions options;
    options.name = "iu-xray-parity";
    options.version = "0.1";
    auto info = import_r2gencmn(shared("parity/dev/model.pth"), shared("parity/dev/config.json"),
                                shared("data/iu_xray/annotation.json"), *dir_, options);
    import_status_ = new absl::Status(info.status());
  }
  static void TearDownTestSuite() {
    delete scoped_;
    delete import_status_;
  }
  void SetUp() override { ASSERT_TRUE(import_status_->ok()) << *import_status_; }

  static ScopedDir* scoped_;
  static const std::string* dir_;
  static absl::Status* import_status_;
};
ScopedDir* ImportedBundleTest::scoped_ = nullptr;
const std::string* ImportedBundleTest::dir_ = nullptr;
absl::Status* ImportedBundleTest::import_status_ = nullptr;

TEST_F(ImportedBundleTest, LoadsWithTheReferenceVocabularyAndWeights) {
  auto bundle = load_bundle(*dir_);
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  EXPECT_EQ(bundle->tokenizer.vocab_size(), 760);
  EXPECT_EQ(bundle->info.config.vocab_size, 760);
  EXPECT_EQ(bundle->info.name, "iu-xray-parity");
  EXPECT_EQ(bundle->info.version, "0.1");
  EXPECT_FALSE(bundle->info.untrained);
  EXPECT_EQ(bundle->info.config.views, 4);  // from config.json, not the iu_xray default of 2
  EXPECT_EQ(bundle->info.config.dataset_name, "iu_xray");
  EXPECT_EQ(bundle->info.weights_dtype, "float16");  // kept as the checkpoint stores it
  EXPECT_FALSE(bundle->model->is_training());

  // Every tensor survived import -> bundle -> load unchanged.
  const model::CheckpointInfo original = model::read_checkpoint(shared("parity/dev/model.pth"));
  const model::StateDict loaded = model::module_state_dict(*bundle->model);
  ASSERT_EQ(loaded.size(), original.state_dict.size());
  for (size_t i = 0; i < loaded.size(); ++i) {
    const auto& [key, tensor] = loaded[i];
    const auto match = std::find_if(original.state_dict.begin(), original.state_dict.end(),
                                     [&](const auto& item) { return item.first == key; });
    ASSERT_NE(match, original.state_dict.end()) << key;
    EXPECT_TRUE(torch::equal(tensor, match->second.to(tensor.scalar_type()))) << key;
  }
}

TEST_F(ImportedBundleTest, DigestIsStableAndMatchesSha256sums) {
  auto first = read_bundle_info(*dir_);
  auto second = read_bundle_info(*dir_);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(first->digest, second->digest);
  EXPECT_EQ(first->digest, "sha256:" + sha256_hex(read_all(*dir_ + "/SHA256SUMS")));
  EXPECT_EQ(first->digest.size(), 7u + 64u);

  // The sums file is sha256sum's format, so `sha256sum -c` accepts it too.
  auto yaml_hash = sha256_file(*dir_ + "/model.yaml");
  ASSERT_TRUE(yaml_hash.ok()) << yaml_hash.status();
  EXPECT_NE(read_all(*dir_ + "/SHA256SUMS").find(*yaml_hash + "  model.yaml\n"), std::string::npos);
}

TEST_F(ImportedBundleTest, TamperedWeightsAreRejectedNamingTheFile) {
  const std::string weights = *dir_ + "/weights.pth";
  const auto size = fs::file_size(weights);
  std::fstream f(weights, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f.good());
  f.seekg(static_cast<std::streamoff>(size / 2));
  const char original = static_cast<char>(f.get());
  f.seekp(static_cast<std::streamoff>(size / 2));
  f.put(static_cast<char>(original ^ 0x01));
  f.flush();

  auto tampered = read_bundle_info(*dir_);
  EXPECT_FALSE(tampered.ok());
  EXPECT_EQ(tampered.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(tampered.status().message().find("weights.pth"), std::string::npos) << tampered.status();
  EXPECT_FALSE(load_bundle(*dir_).ok());

  // Restore the byte: the bundle verifies again (so the failure above was the tampering, not the bundle).
  f.seekp(static_cast<std::streamoff>(size / 2));
  f.put(original);
  f.close();
  auto restored = read_bundle_info(*dir_);
  EXPECT_TRUE(restored.ok()) << restored.status();
}

TEST_F(ImportedBundleTest, ModelYamlIsStrict) {
  // A small bundle around the imported model.yaml: read_bundle_info hashes the weights but never loads them.
  const ScopedDir scoped("strict_yaml");
  const std::string& dir = scoped.path();
  fs::create_directories(dir);
  const std::string yaml = read_all(*dir_ + "/model.yaml");
  write_all(dir + "/weights.pth", "not really weights");
  fs::copy_file(*dir_ + "/vocab.txt", dir + "/vocab.txt");

  write_all(dir + "/model.yaml", yaml);
  ASSERT_TRUE(write_sha256sums(dir).ok());
  auto plain = read_bundle_info(dir);
  ASSERT_TRUE(plain.ok()) << plain.status();

  // Edited without refreshing the sums: the checksum names model.yaml.
  std::string edited = yaml;
  const std::string beam = "beam_size: 3";
  ASSERT_NE(edited.find(beam), std::string::npos) << yaml;
  edited.replace(edited.find(beam), beam.size(), "beam_szie: 3");
  write_all(dir + "/model.yaml", edited);
  auto stale = read_bundle_info(dir);
  EXPECT_FALSE(stale.ok());
  EXPECT_NE(stale.status().message().find("model.yaml"), std::string::npos) << stale.status();

  // Sums refreshed: now the misspelt key itself is the error, with its full name.
  ASSERT_TRUE(write_sha256sums(dir).ok());
  auto unknown = read_bundle_info(dir);
  EXPECT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find("decoding.beam_szie"), std::string::npos) << unknown.status();

  // Unknown top-level key, too.
  write_all(dir + "/model.yaml", yaml + "colour: blue\n");
  ASSERT_TRUE(write_sha256sums(dir).ok());
  auto top = read_bundle_info(dir);
  EXPECT_FALSE(top.ok());
  EXPECT_NE(top.status().message().find("'colour'"), std::string::npos) << top.status();

  // The modalities a model reads: chest radiographs by default, widened by the bundle, never empty.
  EXPECT_EQ(plain->allowed_modalities, (std::vector<std::string>{"CR", "DX", "DR"}));
  const std::string mods = "allowed_modalities: [CR, DX, DR]";
  ASSERT_NE(yaml.find(mods), std::string::npos) << yaml;
  std::string widened = yaml;
  widened.replace(widened.find(mods), mods.size(), "allowed_modalities: [DX, RG]");
  write_all(dir + "/model.yaml", widened);
  ASSERT_TRUE(write_sha256sums(dir).ok());
  auto wide = read_bundle_info(dir);
  ASSERT_TRUE(wide.ok()) << wide.status();
  EXPECT_EQ(wide->allowed_modalities, (std::vector<std::string>{"DX", "RG"}));
  std::string emptied = yaml;
  emptied.replace(emptied.find(mods), mods.size(), "allowed_modalities: []");
  write_all(dir + "/model.yaml", emptied);
  ASSERT_TRUE(write_sha256sums(dir).ok());
  auto none = read_bundle_info(dir);
  EXPECT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("preprocessing.allowed_modalities"), std::string::npos) << none.status();

  // Finding (fuzz/bundle_fuzzer.cc): YAML is UTF-8 and yaml-cpp's emitter writes U+FFFD for other bytes, so a
  // Latin-1 name did not survive a write_bundle of what read_bundle_info returned. Such a model.yaml is refused.
  const std::string name_line = "\nname: ";
  ASSERT_NE(yaml.find(name_line), std::string::npos) << yaml;
  std::string latin1 = yaml;
  latin1.replace(latin1.find(name_line), name_line.size(), "\nname: caf\xe9-");
  write_all(dir + "/model.yaml", latin1);
  ASSERT_TRUE(write_sha256sums(dir).ok());
  auto not_utf8 = read_bundle_info(dir);
  EXPECT_FALSE(not_utf8.ok());
  EXPECT_NE(not_utf8.status().message().find("not UTF-8 text (byte "), std::string::npos) << not_utf8.status();
}

TEST(BundleTest, UntrainedBundleLoadsAndIsMarked) {
  const ScopedDir scoped("untrained");
  const std::string& dir = scoped.path();
  InitUntrainedOptions options;
  options.vocab_file = default_vocab();
  options.views = 2;
  options.seed = 7;
  options.name = "demo";
  auto info = init_untrained(dir, options);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->untrained);

  auto bundle = load_bundle(dir);
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  EXPECT_TRUE(bundle->info.untrained);
  EXPECT_EQ(bundle->info.name, "demo");
  EXPECT_EQ(bundle->info.config.views, 2);
  EXPECT_EQ(bundle->info.digest, info->digest);
  EXPECT_EQ(bundle->tokenizer.tokens().front(), ".");
  EXPECT_GT(bundle->tokenizer.vocab_size(), 250);
  EXPECT_EQ(bundle->tokenizer.vocab_size(), bundle->info.config.vocab_size);
  EXPECT_NE(bundle->tokenizer.id_of("<unk>"), bundle->tokenizer.id_of("heart"));  // "heart" is in the list

  // No second bundle over an existing one unless asked.
  auto again = init_untrained(dir, options);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists) << again.status();
}

TEST(BundleTest, MissingDirectoryIsAClearError) {
  const ScopedDir scoped("does_not_exist");
  const std::string& dir = scoped.path();
  auto info = read_bundle_info(dir);
  EXPECT_EQ(info.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(info.status().message().find(dir), std::string::npos) << info.status();
  EXPECT_NE(info.status().message().find("does not exist"), std::string::npos) << info.status();
  EXPECT_EQ(load_bundle(dir).status().code(), absl::StatusCode::kNotFound);

  // A directory that is not a bundle names the missing SHA256SUMS.
  fs::create_directories(dir);
  auto empty = read_bundle_info(dir);
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(empty.status().message().find("SHA256SUMS"), std::string::npos) << empty.status();
}

}  // namespace
}  // namespace cmn::pipeline
