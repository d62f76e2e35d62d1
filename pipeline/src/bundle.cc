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
#include <initializer_list>
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
#include "absl/strings/str_join.h"
#include "cmn/common/status_macros.h"
#include "cmn/model/checkpoint.h"
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

// fsync so that the rename publishing the bundle cannot be reordered before the data on a crash.
absl::Status write_file_durably(const std::string& path, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::PermissionDeniedError(absl::StrCat("cannot create '", path, "': ", std::strerror(errno)));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      return absl::InternalError(absl::StrCat("write failed on '", path, "': ", std::strerror(err)));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    return absl::InternalError(absl::StrCat("cannot flush '", path, "': ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

void fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // best effort: durability of the directory entry, not correctness
  ::fsync(fd);
  ::close(fd);
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

// --- YAML reading ----------------------------------------------------------------------------------------

// Reads typed values out of model.yaml and produces errors that name the file and the dotted key.
class YamlReader {
 public:
  explicit YamlReader(std::string file) : file_(std::move(file)) {}

  absl::Status error(const std::string& key, const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(file_, ": key '", key, "' ", what));
  }

  absl::Status expect_map(const YAML::Node& node, const std::string& key) const {
    if (!node.IsMap()) return error(key.empty() ? std::string("<top level>") : key, "must be a mapping");
    return absl::OkStatus();
  }

  // Unknown keys are errors: a misspelt `beam_szie` must not silently leave the default in place.
  absl::Status check_keys(const YAML::Node& map, const std::string& prefix,
                          std::initializer_list<const char*> allowed) const {
    for (const auto& item : map) {
      if (!item.first.IsScalar()) return error(prefix.empty() ? "<top level>" : prefix, "has a non-scalar key");
      const std::string key = item.first.Scalar();
      bool known = false;
      for (const char* a : allowed) known = known || key == a;
      if (!known) {
        return absl::InvalidArgumentError(absl::StrCat(file_, ": unknown key '", dotted(prefix, key),
                                                       "' (allowed: ", absl::StrJoin(allowed, ", "), ")"));
      }
    }
    return absl::OkStatus();
  }

  // Leaves *out unchanged when the key is absent and not required.
  template <typename T>
  absl::Status get(const YAML::Node& map, const std::string& prefix, const char* key, T* out,
                   bool required = false) const {
    const std::string name = dotted(prefix, key);
    const YAML::Node node = map[key];
    if (!node.IsDefined()) return required ? error(name, "is required") : absl::OkStatus();
    if (!node.IsScalar()) return error(name, "must be a single value");
    try {
      *out = node.as<T>();
    } catch (const YAML::Exception&) {
      return error(name, absl::StrCat("must be ", type_name<T>(), ", got '", node.Scalar(), "'"));
    }
    return absl::OkStatus();
  }

  template <typename T, size_t N>
  absl::Status get_array(const YAML::Node& map, const std::string& prefix, const char* key,
                         std::array<T, N>* out) const {
    const std::string name = dotted(prefix, key);
    const YAML::Node node = map[key];
    if (!node.IsDefined()) return absl::OkStatus();
    if (!node.IsSequence() || node.size() != N) return error(name, absl::StrCat("must be a list of ", N, " numbers"));
    for (size_t i = 0; i < N; ++i) {
      try {
        (*out)[i] = node[i].as<T>();
      } catch (const YAML::Exception&) {
        return error(name, absl::StrCat("must be a list of ", N, " numbers"));
      }
    }
    return absl::OkStatus();
  }

  const std::string& file() const { return file_; }

 private:
  static std::string dotted(const std::string& prefix, const std::string& key) {
    return prefix.empty() ? key : prefix + "." + key;
  }
  template <typename T>
  static const char* type_name() {
    if constexpr (std::is_same_v<T, bool>) return "true or false";
    else if constexpr (std::is_integral_v<T>) return "an integer";
    else if constexpr (std::is_floating_point_v<T>) return "a number";
    else return "a string";
  }

  std::string file_;
};

absl::StatusOr<BundleInfo> parse_model_yaml(const std::string& text, const std::string& file) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": not valid YAML: ", e.what()));
  }
  const YamlReader r(file);
  CMN_RETURN_IF_ERROR(r.expect_map(root, ""));
  CMN_RETURN_IF_ERROR(r.check_keys(root, "",
                                   {"name", "version", "untrained", "intended_use", "architecture", "decoding",
                                    "preprocessing", "weights", "weights_format", "weights_dtype"}));
  BundleInfo info;
  CMN_RETURN_IF_ERROR(r.get(root, "", "name", &info.name, /*required=*/true));
  CMN_RETURN_IF_ERROR(r.get(root, "", "version", &info.version, /*required=*/true));
  CMN_RETURN_IF_ERROR(r.get(root, "", "untrained", &info.untrained, /*required=*/true));
  CMN_RETURN_IF_ERROR(r.get(root, "", "intended_use", &info.intended_use));
  CMN_RETURN_IF_ERROR(r.get(root, "", "weights", &info.weights_file, /*required=*/true));
  CMN_RETURN_IF_ERROR(r.get(root, "", "weights_format", &info.weights_format, /*required=*/true));
  CMN_RETURN_IF_ERROR(r.get(root, "", "weights_dtype", &info.weights_dtype));
  if (info.name.empty()) return r.error("name", "must not be empty");
  if (info.version.empty()) return r.error("version", "must not be empty");
  if (!is_plain_file_name(info.weights_file)) return r.error("weights", "must be a file name inside the bundle");
  if (info.weights_format != kWeightsFormatR2GenCMN) {
    return r.error("weights_format", absl::StrCat("'", info.weights_format, "' is not supported (only ",
                                                  kWeightsFormatR2GenCMN, ")"));
  }
  if (info.weights_dtype != "float32" && info.weights_dtype != "float16") {
    return r.error("weights_dtype", absl::StrCat("must be float32 or float16, got '", info.weights_dtype, "'"));
  }

  model::ModelConfig& c = info.config;
  {
    const YAML::Node a = root["architecture"];
    if (!a.IsDefined()) return r.error("architecture", "is required");
    CMN_RETURN_IF_ERROR(r.expect_map(a, "architecture"));
    CMN_RETURN_IF_ERROR(r.check_keys(a, "architecture",
                                     {"visual_extractor", "d_vf", "d_model", "d_ff", "num_heads", "num_layers",
                                      "cmm_size", "cmm_dim", "topk", "use_bn", "dropout", "drop_prob_lm",
                                      "vocab_size", "views", "dataset_name", "threshold"}));
    const std::string p = "architecture";
    CMN_RETURN_IF_ERROR(r.get(a, p, "visual_extractor", &c.visual_extractor));
    CMN_RETURN_IF_ERROR(r.get(a, p, "d_vf", &c.d_vf));
    CMN_RETURN_IF_ERROR(r.get(a, p, "d_model", &c.d_model));
    CMN_RETURN_IF_ERROR(r.get(a, p, "d_ff", &c.d_ff));
    CMN_RETURN_IF_ERROR(r.get(a, p, "num_heads", &c.num_heads));
    CMN_RETURN_IF_ERROR(r.get(a, p, "num_layers", &c.num_layers));
    CMN_RETURN_IF_ERROR(r.get(a, p, "cmm_size", &c.cmm_size));
    CMN_RETURN_IF_ERROR(r.get(a, p, "cmm_dim", &c.cmm_dim));
    CMN_RETURN_IF_ERROR(r.get(a, p, "topk", &c.topk));
    CMN_RETURN_IF_ERROR(r.get(a, p, "use_bn", &c.use_bn));
    CMN_RETURN_IF_ERROR(r.get(a, p, "dropout", &c.dropout));
    CMN_RETURN_IF_ERROR(r.get(a, p, "drop_prob_lm", &c.drop_prob_lm));
    CMN_RETURN_IF_ERROR(r.get(a, p, "vocab_size", &c.vocab_size));
    // The view count decides the input tensor's shape: a bundle must say it rather than lean on a default.
    CMN_RETURN_IF_ERROR(r.get(a, p, "views", &c.views, /*required=*/true));
    CMN_RETURN_IF_ERROR(r.get(a, p, "dataset_name", &c.dataset_name));
    CMN_RETURN_IF_ERROR(r.get(a, p, "threshold", &c.threshold));
    if (c.views < 1 || c.views > 4) return r.error("architecture.views", absl::StrCat("must be 1..4, got ", c.views));
    if (c.vocab_size < 0) return r.error("architecture.vocab_size", "must not be negative");
  }
  if (const YAML::Node d = root["decoding"]; d.IsDefined()) {
    CMN_RETURN_IF_ERROR(r.expect_map(d, "decoding"));
    CMN_RETURN_IF_ERROR(r.check_keys(d, "decoding",
                                     {"beam_size", "max_seq_length", "sample_method", "temperature",
                                      "block_trigrams", "length_penalty", "seed"}));
    const std::string p = "decoding";
    CMN_RETURN_IF_ERROR(r.get(d, p, "beam_size", &c.beam_size));
    CMN_RETURN_IF_ERROR(r.get(d, p, "max_seq_length", &c.max_seq_length));
    CMN_RETURN_IF_ERROR(r.get(d, p, "sample_method", &c.sample_method));
    CMN_RETURN_IF_ERROR(r.get(d, p, "temperature", &c.temperature));
    CMN_RETURN_IF_ERROR(r.get(d, p, "block_trigrams", &c.block_trigrams));
    CMN_RETURN_IF_ERROR(r.get(d, p, "length_penalty", &c.length_penalty));
    CMN_RETURN_IF_ERROR(r.get(d, p, "seed", &c.seed));
  }
  if (const YAML::Node pre = root["preprocessing"]; pre.IsDefined()) {
    CMN_RETURN_IF_ERROR(r.expect_map(pre, "preprocessing"));
    CMN_RETURN_IF_ERROR(r.check_keys(pre, "preprocessing", {"image_size", "mean", "std", "allowed_modalities"}));
    if (const YAML::Node mods = pre["allowed_modalities"]; mods.IsDefined()) {
      if (!mods.IsSequence() || mods.size() == 0) {
        return r.error("preprocessing.allowed_modalities", "must be a non-empty list of modality codes");
      }
      info.allowed_modalities.clear();
      for (const auto& m : mods) {
        if (!m.IsScalar() || m.Scalar().empty()) {
          return r.error("preprocessing.allowed_modalities", "entries must be modality codes such as CR");
        }
        info.allowed_modalities.push_back(m.Scalar());
      }
    }
    CMN_RETURN_IF_ERROR(r.get(pre, "preprocessing", "image_size", &info.image.size));
    CMN_RETURN_IF_ERROR(r.get_array(pre, "preprocessing", "mean", &info.image.mean));
    CMN_RETURN_IF_ERROR(r.get_array(pre, "preprocessing", "std", &info.image.std));
    // ResNet-101 downsamples by 32; below 32 pixels there is no patch grid left.
    if (info.image.size < 32 || info.image.size > 4096) {
      return r.error("preprocessing.image_size", absl::StrCat("must be 32..4096, got ", info.image.size));
    }
    for (float s : info.image.std) {
      if (!(s > 0.0f)) return r.error("preprocessing.std", "values must be positive");
    }
  }

  // The model library's own range checks (heads divide d_model, sample_method known, ...) name the field.
  try {
    model::validate_model_config(c);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": ", e.msg()));
  }
  return info;
}

// --- YAML writing ----------------------------------------------------------------------------------------

// Shortest decimal text that reads back to the same value, so model.yaml shows 0.485 rather than
// 0.485000014901161.
template <typename T>
std::string shortest(T value) {
  for (int precision = 1; precision <= 17; ++precision) {
    std::ostringstream s;
    s.precision(precision);
    s << value;
    std::istringstream back(s.str());
    T parsed{};
    back >> parsed;
    if (parsed == value) {
      std::string text = s.str();
      // Keep floats recognisably floats in YAML (1 -> 1.0).
      if (text.find_first_of(".eEn") == std::string::npos) text += ".0";
      return text;
    }
  }
  return std::to_string(value);
}

std::string emit_model_yaml(const BundleInfo& info) {
  const model::ModelConfig& c = info.config;
  YAML::Emitter out;
  out << YAML::Comment(
      "cmn model bundle. After editing this file, refresh the checksums:\n"
      "  sha256sum model.yaml " + info.weights_file + " vocab.txt > SHA256SUMS");
  out << YAML::Newline;
  out << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << YAML::DoubleQuoted << info.name;
  out << YAML::Key << "version" << YAML::Value << YAML::DoubleQuoted << info.version;
  out << YAML::Key << "untrained" << YAML::Value << info.untrained;
  out << YAML::Key << "intended_use" << YAML::Value << YAML::DoubleQuoted << info.intended_use;

  out << YAML::Key << "architecture" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "visual_extractor" << YAML::Value << c.visual_extractor;
  out << YAML::Key << "d_vf" << YAML::Value << c.d_vf;
  out << YAML::Key << "d_model" << YAML::Value << c.d_model;
  out << YAML::Key << "d_ff" << YAML::Value << c.d_ff;
  out << YAML::Key << "num_heads" << YAML::Value << c.num_heads;
  out << YAML::Key << "num_layers" << YAML::Value << c.num_layers;
  out << YAML::Key << "cmm_size" << YAML::Value << c.cmm_size;
  out << YAML::Key << "cmm_dim" << YAML::Value << c.cmm_dim;
  out << YAML::Key << "topk" << YAML::Value << c.topk;
  out << YAML::Key << "use_bn" << YAML::Value << c.use_bn;
  out << YAML::Key << "dropout" << YAML::Value << shortest(c.dropout);
  out << YAML::Key << "drop_prob_lm" << YAML::Value << shortest(c.drop_prob_lm);
  out << YAML::Key << "vocab_size" << YAML::Value << c.vocab_size;
  out << YAML::Key << "views" << YAML::Value << c.effective_views();
  out << YAML::Key << "dataset_name" << YAML::Value << c.dataset_name;
  out << YAML::Key << "threshold" << YAML::Value << c.threshold;
  out << YAML::EndMap;

  out << YAML::Key << "decoding" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "beam_size" << YAML::Value << c.beam_size;
  out << YAML::Key << "max_seq_length" << YAML::Value << c.max_seq_length;
  out << YAML::Key << "sample_method" << YAML::Value << c.sample_method;
  out << YAML::Key << "temperature" << YAML::Value << shortest(c.temperature);
  out << YAML::Key << "block_trigrams" << YAML::Value << c.block_trigrams;
  out << YAML::Key << "length_penalty" << YAML::Value << YAML::DoubleQuoted << c.length_penalty;
  out << YAML::Key << "seed" << YAML::Value << c.seed;
  out << YAML::EndMap;

  out << YAML::Key << "preprocessing" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "image_size" << YAML::Value << info.image.size;
  out << YAML::Key << "mean" << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (float v : info.image.mean) out << shortest(v);
  out << YAML::EndSeq;
  out << YAML::Key << "std" << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (float v : info.image.std) out << shortest(v);
  out << YAML::EndSeq;
  out << YAML::Key << "allowed_modalities" << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (const auto& m : info.allowed_modalities) out << m;
  out << YAML::EndSeq;
  out << YAML::EndMap;

  out << YAML::Key << "weights" << YAML::Value << info.weights_file;
  out << YAML::Key << "weights_format" << YAML::Value << info.weights_format;
  out << YAML::Key << "weights_dtype" << YAML::Value << info.weights_dtype;
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
  c.beam_size = meta.config.beam_size;
  c.max_seq_length = meta.config.max_seq_length;
  c.sample_method = meta.config.sample_method;
  c.temperature = meta.config.temperature;
  c.block_trigrams = meta.config.block_trigrams;
  c.length_penalty = meta.config.length_penalty;
  c.seed = meta.config.seed;
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
  fsync_dir(tmp);

  CMN_RETURN_IF_ERROR(publish(tmp, target.string(), options.overwrite));
  guard.release();
  fsync_dir(parent.string());
  return absl::OkStatus();
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
  // Write-then-rename: a reader never sees a half-written checksum list.
  const std::string sums_path = path_in(dir, kChecksumFile);
  const std::string tmp = sums_path + ".tmp";
  CMN_RETURN_IF_ERROR(write_file_durably(tmp, sums));
  if (std::rename(tmp.c_str(), sums_path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot rename '", tmp, "' to '", sums_path, "': ", std::strerror(errno)));
  }
  return absl::OkStatus();
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
