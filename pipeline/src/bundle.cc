#include "cmn/pipeline/bundle.h"
#include "cmn/pipeline/model_loader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <system_error>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <openssl/evp.h>
#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include "absl/strings/str_cat.h"
#include "cmn/common/config_reader.h"
#include "cmn/common/durable_write.h"
#include "cmn/common/status_macros.h"
#include "cmn/model/checkpoint.h"
#include "cmn/model/config_fields.h"
#include "cmn/pipeline/annotation.h"

namespace cmn::pipeline {
namespace fs = std::filesystem;
namespace {

std::string path_in(const std::string& dir, const std::string& file) { return (fs::path(dir) / file).string(); }

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

// --- SHA-256 -------------------------------------------------------------------------------------------

struct EvpCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
using EvpCtx = std::unique_ptr<EVP_MD_CTX, EvpCtxDeleter>;

std::string to_hex(const unsigned char* data, unsigned int size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(size * 2, '0');
  for (unsigned int i = 0; i < size; ++i) {
    out[2 * i] = kDigits[data[i] >> 4];
    out[2 * i + 1] = kDigits[data[i] & 0xf];
  }
  return out;
}

EvpCtx new_sha256_ctx() {
  EvpCtx ctx(EVP_MD_CTX_new());
  if (ctx && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) ctx.reset();
  return ctx;
}

std::string finish_hex(EVP_MD_CTX* ctx) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int size = 0;
  if (EVP_DigestFinal_ex(ctx, md.data(), &size) != 1) return "";
  return to_hex(md.data(), size);
}

// --- SHA256SUMS ----------------------------------------------------------------------------------------

struct ChecksumEntry {
  std::string hex;
  std::string file;
};

// sha256sum's output: "<64 hex><space><space or '*'><name>". Names with escapes (a leading '\') are not
// produced for our plain names and are rejected with the rest.
absl::StatusOr<std::vector<ChecksumEntry>> parse_sha256sums(const std::string& text, const std::string& where) {
  std::vector<ChecksumEntry> entries;
  std::set<std::string> seen;
  std::istringstream lines(text);
  std::string line;
  int number = 0;
  while (std::getline(lines, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const auto bad = [&](const std::string& why) {
      return absl::InvalidArgumentError(absl::StrCat(where, " line ", number, ": ", why, ": '", line, "'"));
    };
    if (line.size() < 67 || line[64] != ' ' || (line[65] != ' ' && line[65] != '*')) {
      return bad("expected '<64 hex digits>  <file>'");
    }
    ChecksumEntry entry{line.substr(0, 64), line.substr(66)};
    for (char& c : entry.hex) {
      if (!std::isxdigit(static_cast<unsigned char>(c))) return bad("not a SHA-256 hex digest");
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    if (!is_plain_file_name(entry.file)) return bad("file names must not contain '/' or be '.'/'..'");
    if (!seen.insert(entry.file).second) return bad(absl::StrCat("'", entry.file, "' is listed twice"));
    entries.push_back(std::move(entry));
  }
  return entries;
}

// --- model.yaml ------------------------------------------------------------------------------------------

// model.yaml's field table (cmn/common/config_reader.h); ModelConfig's own fields come from its table
// (cmn/model/config_fields.h). Reading, writing and the known keys all follow from it.
template <class V>
void visit(V& v, BundleInfo& b) {
  v("name", b.name, config::kRequired);
  v("version", b.version, config::kRequired);  // a YAML number is read as its text
  v("untrained", b.untrained, config::kRequired);
  v("intended_use", b.intended_use);
  v.section("architecture", [&](auto& s) { model::visit_architecture(s, b.config); }, config::kRequired);
  v.section("decoding", [&](auto& s) { model::visit_decoding(s, b.config); });
  v.section("preprocessing", [&](auto& s) {
    s("image_size", b.image.size);
    s("mean", b.image.mean);
    s("std", b.image.std);
    s("allowed_modalities", b.allowed_modalities);
  });
  v("weights", b.weights_file, config::kRequired);
  v("weights_format", b.weights_format, config::kRequired);
  v("weights_dtype", b.weights_dtype);
}

absl::StatusOr<BundleInfo> parse_model_yaml(const std::string& text, const std::string& file) {
  CMN_ASSIGN_OR_RETURN(const YAML::Node root, config::parse_document(text, file));
  config::Section top(root, "", file);
  BundleInfo info;
  config::ReadVisitor reader(top, model::kBundleYaml);
  visit(reader, info);
  CMN_RETURN_IF_ERROR(reader.finish());

  const auto error = [&](const std::string& key, const std::string& what) { return top.error(key, what); };
  if (info.name.empty()) return error("name", "must not be empty");
  if (info.version.empty()) return error("version", "must not be empty");
  if (!is_plain_file_name(info.weights_file)) return error("weights", "must be a file name inside the bundle");
  if (info.weights_format != kWeightsFormatR2GenCMN) {
    return error("weights_format", absl::StrCat("'", info.weights_format, "' is not supported (only ",
                                                kWeightsFormatR2GenCMN, ")"));
  }
  if (info.weights_dtype != "float32" && info.weights_dtype != "float16") {
    return error("weights_dtype", absl::StrCat("must be float32 or float16, got '", info.weights_dtype, "'"));
  }
  const model::ModelConfig& c = info.config;
  // The view count decides the input tensor's shape: a bundle must say it rather than lean on a default.
  const YAML::Node& document = root;
  if (const YAML::Node views = document["architecture"]["views"]; !views.IsDefined() || views.IsNull()) {
    return error("architecture.views", "is required");
  }
  if (c.views < 1 || c.views > 4) return error("architecture.views", absl::StrCat("must be 1..4, got ", c.views));
  if (c.vocab_size < 0) return error("architecture.vocab_size", "must not be negative");
  if (info.allowed_modalities.empty()) {
    return error("preprocessing.allowed_modalities", "must be a non-empty list of modality codes");
  }
  for (const std::string& m : info.allowed_modalities) {
    if (m.empty()) return error("preprocessing.allowed_modalities", "entries must be modality codes such as CR");
  }
  // ResNet-101 downsamples by 32; below 32 pixels there is no patch grid left.
  if (info.image.size < 32 || info.image.size > 4096) {
    return error("preprocessing.image_size", absl::StrCat("must be 32..4096, got ", info.image.size));
  }
  for (float s : info.image.std) {
    if (!(s > 0.0f)) return error("preprocessing.std", "values must be positive");
  }

  // The model library's own range checks (heads divide d_model, sample_method known, ...) name the field.
  try {
    model::validate_model_config(c);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": ", e.msg()));
  }
  return info;
}

std::string emit_model_yaml(const BundleInfo& info) {
  BundleInfo copy = info;
  YAML::Emitter out;
  out << YAML::Comment(
      "cmn model bundle. After editing this file, refresh the checksums:\n"
      "  sha256sum model.yaml " + info.weights_file + " vocab.txt > SHA256SUMS");
  out << YAML::Newline;
  out << YAML::BeginMap;
  config::EmitVisitor emit(out, model::kBundleYaml);
  visit(emit, copy);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

// --- shared by import and init --------------------------------------------------------------------------

// Which dtype a checkpoint stores its weights in (the first floating tensor decides).
std::string stored_float_dtype(const model::StateDict& state_dict) {
  for (const auto& [key, tensor] : state_dict) {
    if (tensor.is_floating_point()) return tensor.scalar_type() == torch::kHalf ? "float16" : "float32";
  }
  return "float32";
}

absl::Status check_publish_target(const std::string& dir, bool overwrite) {
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (!fs::exists(st)) return absl::OkStatus();
  if (!fs::is_directory(st)) {
    return absl::AlreadyExistsError(absl::StrCat("'", dir, "' exists and is not a directory"));
  }
  if (!overwrite && !fs::is_empty(dir, ec)) {
    return absl::AlreadyExistsError(
        absl::StrCat("bundle directory '", dir, "' already exists and is not empty (replace it with overwrite, cmn-bundle --force)"));
  }
  return absl::OkStatus();
}

// Moves the finished temporary directory into place.
absl::Status publish(const std::string& tmp, const std::string& dir, bool overwrite) {
  CMN_RETURN_IF_ERROR(check_publish_target(dir, overwrite));
  std::error_code ec;
  if (fs::exists(dir, ec)) {
    if (fs::is_empty(dir, ec)) {
      fs::remove(dir, ec);
    } else {
      // Swap both names in one step so readers see the old or the new bundle, never neither; the old one
      // then sits under the temporary name and is deleted.
      if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) == 0) {
        fs::remove_all(tmp, ec);
        return absl::OkStatus();
      }
      // File systems without RENAME_EXCHANGE: a short window without `dir` is the best POSIX offers.
      const std::string old = tmp + ".old";
      if (std::rename(dir.c_str(), old.c_str()) != 0) {
        return absl::InternalError(absl::StrCat("cannot move the old bundle '", dir, "' aside: ", std::strerror(errno)));
      }
      if (std::rename(tmp.c_str(), dir.c_str()) != 0) {
        const int err = errno;
        std::rename(old.c_str(), dir.c_str());
        return absl::InternalError(absl::StrCat("cannot rename '", tmp, "' to '", dir, "': ", std::strerror(err)));
      }
      fs::remove_all(old, ec);
      return absl::OkStatus();
    }
  }
  if (std::rename(tmp.c_str(), dir.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot rename '", tmp, "' to '", dir, "': ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

// Removes the temporary directory unless it was published.
class TempDirGuard {
 public:
  explicit TempDirGuard(std::string path) : path_(std::move(path)) {}
  ~TempDirGuard() {
    if (!path_.empty()) {
      std::error_code ec;
      fs::remove_all(path_, ec);
    }
  }
  void release() { path_.clear(); }
  TempDirGuard(const TempDirGuard&) = delete;
  TempDirGuard& operator=(const TempDirGuard&) = delete;

 private:
  std::string path_;
};

absl::StatusOr<std::string> sums_text(const std::string& dir, const std::vector<std::string>& files) {
  std::string text;
  for (const std::string& file : files) {
    CMN_ASSIGN_OR_RETURN(const std::string hex, sha256_file(path_in(dir, file)));
    absl::StrAppend(&text, hex, "  ", file, "\n");
  }
  return text;
}

}  // namespace

// --- public ------------------------------------------------------------------------------------------------

std::string sha256_hex(const std::string& bytes) {
  EvpCtx ctx = new_sha256_ctx();
  if (!ctx || EVP_DigestUpdate(ctx.get(), bytes.data(), bytes.size()) != 1) return "";
  return finish_hex(ctx.get());
}

absl::StatusOr<std::string> sha256_file(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot open '", path, "': ", std::strerror(errno)));
  EvpCtx ctx = new_sha256_ctx();
  if (!ctx) return absl::InternalError("OpenSSL: cannot initialise SHA-256");
  std::vector<unsigned char> block(1 << 20);
  while (true) {
    const size_t n = std::fread(block.data(), 1, block.size(), file.get());
    if (n > 0 && EVP_DigestUpdate(ctx.get(), block.data(), n) != 1) {
      return absl::InternalError(absl::StrCat("OpenSSL: SHA-256 update failed on '", path, "'"));
    }
    if (n < block.size()) break;
  }
  if (std::ferror(file.get())) return absl::DataLossError(absl::StrCat("read error on '", path, "'"));
  std::string hex = finish_hex(ctx.get());
  if (hex.empty()) return absl::InternalError(absl::StrCat("OpenSSL: SHA-256 final failed on '", path, "'"));
  return hex;
}

absl::StatusOr<BundleInfo> read_bundle_info(const std::string& dir) {
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (!fs::exists(st)) return absl::NotFoundError(absl::StrCat("bundle directory '", dir, "' does not exist"));
  if (!fs::is_directory(st)) return absl::InvalidArgumentError(absl::StrCat("bundle '", dir, "' is not a directory"));

  const std::string sums_path = path_in(dir, kChecksumFile);
  if (!fs::exists(sums_path, ec)) {
    return absl::NotFoundError(absl::StrCat(sums_path, " is missing: '", dir, "' is not a model bundle"));
  }
  CMN_ASSIGN_OR_RETURN(const std::string sums, read_file_bytes(sums_path));
  CMN_ASSIGN_OR_RETURN(const std::vector<ChecksumEntry> entries, parse_sha256sums(sums, sums_path));

  // Integrity first: nothing of a file is interpreted before its bytes are known to be the published ones.
  // model.yaml is hashed from the same bytes that are parsed, so an edit between the two cannot slip in.
  const std::string yaml_path = path_in(dir, kModelYaml);
  std::string yaml_text;
  bool yaml_listed = false;
  for (const ChecksumEntry& entry : entries) {
    const std::string file_path = path_in(dir, entry.file);
    std::string actual;
    if (entry.file == kModelYaml) {
      CMN_ASSIGN_OR_RETURN(yaml_text, read_file_bytes(file_path));
      actual = sha256_hex(yaml_text);
      yaml_listed = true;
    } else {
      auto hashed = sha256_file(file_path);
      if (!hashed.ok()) {
        return absl::Status(hashed.status().code(),
                            absl::StrCat("bundle '", dir, "': ", entry.file, " (listed in SHA256SUMS): ",
                                         hashed.status().message()));
      }
      actual = *std::move(hashed);
    }
    if (actual != entry.hex) {
      return absl::DataLossError(absl::StrCat("bundle '", dir, "': ", entry.file,
                                              " does not match its SHA256SUMS entry (expected ", entry.hex,
                                              ", got ", actual, "): the file was changed or damaged"));
    }
  }
  if (!yaml_listed) {
    return absl::InvalidArgumentError(absl::StrCat(sums_path, " does not cover ", kModelYaml));
  }

  CMN_ASSIGN_OR_RETURN(BundleInfo info, parse_model_yaml(yaml_text, yaml_path));
  for (const std::string& required : {info.weights_file, std::string(kVocabFile)}) {
    bool listed = false;
    for (const ChecksumEntry& entry : entries) listed = listed || entry.file == required;
    if (!listed) return absl::InvalidArgumentError(absl::StrCat(sums_path, " does not cover ", required));
  }
  info.dir = dir;
  info.digest = "sha256:" + sha256_hex(sums);
  return info;
}

absl::StatusOr<LoadedBundle> load_bundle(const std::string& dir) {
  LoadedBundle bundle;
  CMN_ASSIGN_OR_RETURN(bundle.info, read_bundle_info(dir));
  model::ModelConfig config = bundle.info.config;

  const std::string vocab_path = path_in(dir, kVocabFile);
  try {
    bundle.tokenizer = model::Tokenizer::from_vocab_file(vocab_path, model::cleaning_rule_for_dataset(config.dataset_name));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("bundle '", dir, "': ", kVocabFile, ": ", e.what()));
  }
  if (config.vocab_size != 0 && config.vocab_size != bundle.tokenizer.vocab_size()) {
    return absl::InvalidArgumentError(absl::StrCat("bundle '", dir, "': ", kVocabFile, " has ",
                                                   bundle.tokenizer.vocab_size(), " tokens but model.yaml's ",
                                                   "architecture.vocab_size is ", config.vocab_size));
  }
  config.vocab_size = bundle.tokenizer.vocab_size();

  const std::string weights_path = path_in(dir, bundle.info.weights_file);
  try {
    bundle.model = model::load_r2gencmn(weights_path, config);
    bundle.model->eval();
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("bundle '", dir, "': ", bundle.info.weights_file, ": ", e.what_without_backtrace()));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("bundle '", dir, "': out of memory loading ", bundle.info.weights_file));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("bundle '", dir, "': ", bundle.info.weights_file, ": ", e.what()));
  }
  bundle.info.config = config;
  return bundle;
}

absl::Status write_bundle(const std::string& dir, const BundleInfo& meta, model::R2GenCMN& model,
                          const model::Tokenizer& tokenizer, const WriteBundleOptions& options) {
  if (dir.empty()) return absl::InvalidArgumentError("write_bundle: empty directory name");
  if (model.is_empty()) return absl::InvalidArgumentError("write_bundle: no model");
  if (meta.name.empty() || meta.version.empty()) {
    return absl::InvalidArgumentError("write_bundle: name and version must not be empty");
  }
  if (!is_plain_file_name(meta.weights_file) || meta.weights_file == kModelYaml || meta.weights_file == kVocabFile ||
      meta.weights_file == kChecksumFile) {
    return absl::InvalidArgumentError(absl::StrCat("write_bundle: bad weights file name '", meta.weights_file, "'"));
  }
  if (meta.weights_format != kWeightsFormatR2GenCMN) {
    return absl::InvalidArgumentError(absl::StrCat("write_bundle: weights_format '", meta.weights_format,
                                                   "' is not supported (only ", kWeightsFormatR2GenCMN, ")"));
  }
  if (meta.weights_dtype != "float32" && meta.weights_dtype != "float16") {
    return absl::InvalidArgumentError(
        absl::StrCat("write_bundle: weights_dtype must be float32 or float16, got '", meta.weights_dtype, "'"));
  }
  // Fail before writing hundreds of megabytes, and again at publication (someone may race us).
  CMN_RETURN_IF_ERROR(check_publish_target(dir, options.overwrite));

  BundleInfo info = meta;
  model::ModelConfig& c = info.config;
  c = model->config();
  model::copy_fields([](auto& v, model::ModelConfig& m) { model::visit_decoding(v, m); }, meta.config, c);
  c.views = c.effective_views();
  c.vocab_size = tokenizer.vocab_size();

  model::StateDict state;
  try {
    model::validate_model_config(c);
    torch::NoGradGuard no_grad;
    const torch::ScalarType dtype = info.weights_dtype == "float16" ? torch::kHalf : torch::kFloat;
    for (auto& [key, tensor] : model::module_state_dict(*model)) {
      torch::Tensor t = tensor.to(torch::kCPU);
      if (t.is_floating_point()) t = t.to(dtype);
      state.emplace_back(key, t.contiguous());
    }
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat("write_bundle: ", e.what_without_backtrace()));
  }
  const torch::Tensor* logit = nullptr;
  for (const auto& [key, tensor] : state) {
    if (key == "encoder_decoder.logit.weight") logit = &tensor;
  }
  if (logit == nullptr) return absl::InvalidArgumentError("write_bundle: model has no encoder_decoder.logit.weight");
  if (logit->size(0) - 1 != tokenizer.vocab_size()) {
    return absl::InvalidArgumentError(absl::StrCat("write_bundle: the model predicts ", logit->size(0) - 1,
                                                   " tokens but the tokenizer has ", tokenizer.vocab_size()));
  }

  // The temporary directory sits beside `dir` so the final rename stays on one file system.
  fs::path target(dir);
  if (target.filename().empty()) target = target.parent_path();  // "out/bundle/" -> "out/bundle"
  fs::path parent = target.parent_path();
  if (parent.empty()) parent = ".";
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create '", parent.string(), "': ", ec.message()));
  std::string pattern = (parent / ("." + target.filename().string() + ".tmp-XXXXXX")).string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create a temporary directory beside '", dir, "': ", std::strerror(errno)));
  }
  const std::string tmp = pattern;
  TempDirGuard guard(tmp);
  ::chmod(tmp.c_str(), 0755);  // mkdtemp makes it 0700; a bundle is read by other users (the server)

  try {
    model::CheckpointWriteOptions write_options;
    write_options.archive_name = fs::path(info.weights_file).stem().string();
    if (write_options.archive_name.empty() || write_options.archive_name == ".") write_options.archive_name = "weights";
    model::write_checkpoint(path_in(tmp, info.weights_file), state, write_options);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("write_bundle: ", info.weights_file, ": ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("write_bundle: ", info.weights_file, ": ", e.what()));
  }
  state.clear();
  try {
    tokenizer.save_vocab_file(path_in(tmp, kVocabFile));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("write_bundle: ", kVocabFile, ": ", e.what()));
  }
  CMN_RETURN_IF_ERROR(write_file_durably(path_in(tmp, kModelYaml), emit_model_yaml(info)));
  CMN_ASSIGN_OR_RETURN(const std::string sums, sums_text(tmp, {kModelYaml, info.weights_file, kVocabFile}));
  CMN_RETURN_IF_ERROR(write_file_durably(path_in(tmp, kChecksumFile), sums));
  CMN_RETURN_IF_ERROR(fsync_dir(tmp));

  CMN_RETURN_IF_ERROR(publish(tmp, target.string(), options.overwrite));
  guard.release();
  return fsync_dir(parent.string());
}

absl::Status write_sha256sums(const std::string& dir) {
  const std::string yaml_path = path_in(dir, kModelYaml);
  CMN_ASSIGN_OR_RETURN(const std::string yaml_text, read_file_bytes(yaml_path));
  std::string weights = kDefaultWeightsFile;
  try {
    const YAML::Node root = YAML::Load(yaml_text);
    if (root.IsMap() && root["weights"].IsScalar()) weights = root["weights"].as<std::string>();
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(yaml_path, ": not valid YAML: ", e.what()));
  }
  if (!is_plain_file_name(weights)) {
    return absl::InvalidArgumentError(absl::StrCat(yaml_path, ": key 'weights' must be a file name inside the bundle"));
  }
  CMN_ASSIGN_OR_RETURN(const std::string sums, sums_text(dir, {kModelYaml, weights, kVocabFile}));
  // Durable replace: a reader never sees a half-written checksum list.
  return write_file_durably(path_in(dir, kChecksumFile), sums);
}

absl::StatusOr<BundleInfo> import_r2gencmn(const std::string& checkpoint_pth, const std::string& args_json,
                                           const std::string& annotation_json, const std::string& out_dir,
                                           const ImportOptions& options) {
  model::ModelConfig config;
  try {
    config = model::read_model_config(args_json);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(e.what_without_backtrace());
  }
  CMN_ASSIGN_OR_RETURN(model::Tokenizer tokenizer,
                       tokenizer_from_annotation(annotation_json, model::cleaning_rule_for_dataset(config.dataset_name),
                                                 static_cast<int>(config.threshold)));
  if (config.vocab_size != 0 && config.vocab_size != tokenizer.vocab_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        args_json, " says vocab_size ", config.vocab_size, " but ", annotation_json, " gives ", tokenizer.vocab_size(),
        " tokens (dataset_name '", config.dataset_name, "', threshold ", config.threshold,
        "): is it the annotation file the model was trained with?"));
  }
  config.vocab_size = tokenizer.vocab_size();
  // Before reading 100+ MB: is there somewhere to put the result?
  CMN_RETURN_IF_ERROR(check_publish_target(out_dir, options.overwrite));

  BundleInfo meta;
  meta.name = options.name;
  meta.version = options.version;
  meta.untrained = false;
  meta.intended_use = options.intended_use.empty()
                          ? absl::StrCat("Research use only. Drafts the findings section of a chest radiograph "
                                         "report from ", config.effective_views(), " view(s) (R2GenCMN, imported "
                                         "from ", fs::path(checkpoint_pth).filename().string(), "). Not a "
                                         "medical device: a radiologist must review and edit every report.")
                          : options.intended_use;
  model::R2GenCMN model{nullptr};
  try {
    // Read the checkpoint here rather than through load_r2gencmn to learn the stored dtype without a second
    // pass over the file; the checks mirror load_r2gencmn's.
    model::CheckpointInfo ckpt = model::read_checkpoint(checkpoint_pth);
    meta.weights_dtype = options.weights_dtype.empty() ? stored_float_dtype(ckpt.state_dict) : options.weights_dtype;
    const torch::Tensor* logit = nullptr;
    for (const auto& [key, tensor] : ckpt.state_dict) {
      if (key == "encoder_decoder.logit.weight") logit = &tensor;
    }
    if (logit == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(checkpoint_pth, " has no encoder_decoder.logit.weight: not an R2GenCMN checkpoint"));
    }
    if (logit->dim() != 2 || logit->size(0) - 1 != tokenizer.vocab_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          checkpoint_pth, " predicts ", logit->size(0) - 1, " tokens but ", annotation_json, " gives ",
          tokenizer.vocab_size(), " (dataset_name '", config.dataset_name, "', threshold ", config.threshold, ")"));
    }
    model = model::R2GenCMN(config);
    model::load_state_dict(*model, ckpt.state_dict);
    model->eval();
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat(checkpoint_pth, ": ", e.what_without_backtrace()));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat("out of memory reading ", checkpoint_pth));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(checkpoint_pth, ": ", e.what()));
  }
  meta.config = config;
  CMN_RETURN_IF_ERROR(write_bundle(out_dir, meta, model, tokenizer, WriteBundleOptions{options.overwrite}));
  return read_bundle_info(out_dir);
}

absl::StatusOr<BundleInfo> init_untrained(const std::string& out_dir, const InitUntrainedOptions& options) {
  if (options.vocab_file.empty() == options.annotation_json.empty()) {
    return absl::InvalidArgumentError("init_untrained: give exactly one vocabulary source (a vocab file or an "
                                      "annotation.json)");
  }
  if (options.views < 1 || options.views > 4) {
    return absl::InvalidArgumentError(absl::StrCat("init_untrained: views must be 1..4, got ", options.views));
  }
  CMN_RETURN_IF_ERROR(check_publish_target(out_dir, options.overwrite));
  const model::CleaningRule rule = model::cleaning_rule_for_dataset(options.dataset_name);
  model::Tokenizer tokenizer;
  if (!options.vocab_file.empty()) {
    try {
      tokenizer = model::Tokenizer::from_vocab_file(options.vocab_file, rule);
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(e.what());
    }
  } else {
    CMN_ASSIGN_OR_RETURN(tokenizer, tokenizer_from_annotation(options.annotation_json, rule, options.threshold));
  }

  model::ModelConfig config;
  config.views = options.views;
  config.dataset_name = options.dataset_name;
  config.threshold = options.threshold;
  config.vocab_size = tokenizer.vocab_size();

  model::R2GenCMN model{nullptr};
  try {
    // Seed the global generator right before the parameters are drawn: same seed, same weights, same digest.
    torch::manual_seed(options.seed);
    model = model::R2GenCMN(config);
    model->eval();
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat("init_untrained: ", e.what_without_backtrace()));
  }

  BundleInfo meta;
  meta.name = options.name;
  meta.version = options.version;
  meta.untrained = true;
  meta.intended_use = absl::StrCat("UNTRAINED: random weights (seed ", options.seed, ") for pipeline demos and "
                                   "tests. The reports it writes are meaningless; never use it on patient data.");
  meta.config = config;
  meta.weights_dtype = options.weights_dtype;
  CMN_RETURN_IF_ERROR(write_bundle(out_dir, meta, model, tokenizer, WriteBundleOptions{options.overwrite}));
  return read_bundle_info(out_dir);
}

}  // namespace cmn::pipeline
