#include "cmn/pipeline/batch.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cmn/common/file_util.h"
#include "cmn/common/status_macros.h"
#include "cmn/pipeline/attention.h"

namespace cmn::pipeline {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

bool hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

// Files named, and every regular file under the folders named (recursively, sorted), each once.
std::vector<std::string> collect_files(const std::vector<std::string>& paths) {
  std::vector<std::string> files;
  for (const auto& path : paths) {
    if (!fs::is_directory(path)) {
      files.push_back(path);
      continue;
    }
    std::vector<std::string> found;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(path, fs::directory_options::skip_permission_denied, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (hidden(it->path())) {
        if (it->is_directory()) it.disable_recursion_pending();
        continue;
      }
      if (it->is_regular_file()) found.push_back(it->path().string());
    }
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }
  std::vector<std::string> unique;
  std::set<std::string> seen;
  for (const auto& f : files) {
    std::error_code ec;
    const auto key = fs::weakly_canonical(f, ec).string();
    if (seen.insert(ec ? f : key).second) unique.push_back(f);
  }
  return unique;
}

absl::StatusOr<std::string> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open '", path, "'"));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read '", path, "'"));
  return ss.str();
}

bool is_image_file(const std::string& path) {
  const std::string ext = absl::AsciiStrToLower(fs::path(path).extension().string());
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

std::string status_code_name(absl::StatusCode code) { return absl::StatusCodeToString(code); }

nlohmann::json model_json(const ModelIdentity& id) {
  return {{"name", id.name}, {"version", id.version}, {"digest", id.digest}, {"untrained", id.untrained}};
}

// One study read and decoded ahead of the model.
struct Prepared {
  absl::Status status;                               // not OK: the study fails with this
  std::vector<preprocessing::FloatImage> images;     // `views` model inputs in slot order
  nlohmann::json line;                               // id, study, instances, skipped, ...
  double read_s = 0.0;
};

Prepared prepare(const BatchStudy& study, const BatchOptions& options, const ModelIdentity& id) {
  namespace pre = preprocessing;
  Prepared p;
  const auto start = Clock::now();
  p.line["id"] = study.key;
  p.line["model"] = model_json(id);
  if (id.untrained) p.line["warning"] = "untrained model: random weights, not a report";
  if (study.source == BatchStudy::Source::kImages) {
    p.line["images"] = study.files;
    if (static_cast<int64_t>(study.files.size()) != options.study.views) {
      p.status = absl::InvalidArgumentError(
          absl::StrCat("study has ", study.files.size(), " images but the model takes ", options.study.views));
    }
    for (size_t v = 0; p.status.ok() && v < study.files.size(); ++v) {
      auto image = pre::load_model_input(study.files[v], options.generator.image);
      if (!image.ok()) {
        p.status = image.status();
        break;
      }
      p.images.push_back(std::move(*image));
    }
  } else {
    if (study.key_is_study_uid) p.line["study"] = study.key;  // also when the study fails
    std::vector<pre::InstanceInput> inputs;
    for (const auto& f : study.files) {
      auto bytes = read_bytes(f);
      if (!bytes.ok()) {
        p.status = bytes.status();
        break;
      }
      inputs.push_back({f, std::move(*bytes)});
    }
    if (p.status.ok()) {
      auto assembled = pre::assemble_study(inputs, options.study);
      if (!assembled.ok()) {
        p.status = assembled.status();
      } else {
        p.line["study"] = assembled->study_instance_uid;
        nlohmann::json slots = nlohmann::json::array();
        for (const auto& s : assembled->slots) {
          slots.push_back({{"slot", s.slot},
                           {"sop_instance_uid", s.instance.sop_instance_uid},
                           {"series_instance_uid", s.instance.series_instance_uid},
                           {"view", pre::view_name(s.instance.view)},
                           {"source", s.instance.source},
                           {"reason", s.reason}});
        }
        nlohmann::json skipped = nlohmann::json::array();
        for (const auto& s : assembled->skipped) {
          skipped.push_back({{"sop_instance_uid", s.instance.sop_instance_uid},
                             {"source", s.instance.source},
                             {"reason", s.reason}});
        }
        p.line["instances"] = std::move(slots);
        p.line["skipped"] = std::move(skipped);
        p.images = std::move(assembled->images);
      }
    }
  }
  p.read_s = seconds_since(start);
  return p;
}

// Bounded queue between the reader thread and the model loop.
class PreparedQueue {
 public:
  explicit PreparedQueue(size_t capacity) : capacity_(capacity) {}
  void push(Prepared p) {
    std::unique_lock<std::mutex> lock(mu_);
    not_full_.wait(lock, [&] { return items_.size() < capacity_ || stop_; });
    if (stop_) return;
    items_.push_back(std::move(p));
    not_empty_.notify_all();
  }
  void close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    not_empty_.notify_all();
  }
  void stop() {  // the consumer gives up: unblock the producer
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    not_full_.notify_all();
  }
  // Up to `n` items; fewer only at the end. Empty = done.
  std::vector<Prepared> pop(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    not_empty_.wait(lock, [&] { return items_.size() >= n || closed_; });
    std::vector<Prepared> out;
    while (!items_.empty() && out.size() < n) {
      out.push_back(std::move(items_.front()));
      items_.pop_front();
    }
    not_full_.notify_all();
    return out;
  }

 private:
  std::mutex mu_;
  std::condition_variable not_empty_, not_full_;
  std::deque<Prepared> items_;
  size_t capacity_;
  bool closed_ = false, stop_ = false;
};

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const auto total = static_cast<int64_t>(s + 0.5);
  if (total >= 3600) return absl::StrCat(total / 3600, "h", (total % 3600) / 60, "m");
  if (total >= 60) return absl::StrCat(total / 60, "m", total % 60, "s");
  return absl::StrCat(total, "s");
}

// Progress on stderr: counts and rates only (never a study key: logs carry no identifiers).
class Progress {
 public:
  Progress(const std::string& mode, int64_t total) : total_(total), start_(Clock::now()) {
    enabled_ = mode == "always" || (mode == "auto" && isatty(STDERR_FILENO) == 1);
    tty_ = isatty(STDERR_FILENO) == 1;
  }
  void update(int64_t processed, int64_t failed, bool final = false) {
    if (!enabled_ || total_ == 0) return;
    const double elapsed = seconds_since(start_);
    if (!final && !tty_ && elapsed - last_print_ < 10.0) return;  // a log file gets a line every 10 s
    if (final && !tty_ && processed == last_count_) return;         // already said
    last_print_ = elapsed;
    last_count_ = processed;
    const double rate = elapsed > 0 ? static_cast<double>(processed) / elapsed : 0.0;
    const double eta = rate > 0 ? static_cast<double>(total_ - processed) / rate : NAN;
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(kWidth * processed / total_);
    char rate_text[32];
    std::snprintf(rate_text, sizeof rate_text, "%.2f", rate);
    std::cerr << (tty_ ? "\r" : "") << "cmn-generate: [" << std::string(static_cast<size_t>(filled), '#')
              << std::string(static_cast<size_t>(kWidth - filled), ' ') << "] " << processed << "/" << total_
              << " studies, " << failed << " failed, " << rate_text << " studies/s, ETA " << format_duration(eta)
              << (tty_ && !final ? "" : "\n") << std::flush;
  }

 private:
  bool enabled_ = false, tty_ = false;
  int64_t total_;
  Clock::time_point start_;
  double last_print_ = -1e9;
  int64_t last_count_ = -1;
};

}  // namespace

// ---- studies --------------------------------------------------------------------------------------------

StudyList list_dicom_studies(const std::vector<std::string>& paths, const preprocessing::DicomReadOptions& read) {
  namespace pre = preprocessing;
  StudyList list;
  std::vector<std::string> files;
  std::vector<pre::InstanceInfo> infos;
  for (const auto& path : collect_files(paths)) {
    auto bytes = read_bytes(path);
    auto info = bytes.ok() ? pre::read_dicom_info(*bytes, path, read)
                           : absl::StatusOr<pre::InstanceInfo>(bytes.status());
    if (!info.ok()) {
      const std::string message(info.status().message());
      list.file_errors.push_back(message.find(path) == std::string::npos ? "'" + path + "': " + message : message);
      continue;
    }
    if (info->source.empty()) info->source = path;
    files.push_back(path);
    infos.push_back(std::move(*info));
  }
  const pre::StudyGrouping grouping = pre::group_studies(infos);
  for (size_t i : grouping.unassigned) {
    if (infos[i].is_image) list.file_errors.push_back("'" + files[i] + "': image without StudyInstanceUID, not used");
  }
  for (const auto& group : grouping.studies) {
    BatchStudy s;
    s.key = group.study_instance_uid;
    s.source = BatchStudy::Source::kDicom;
    s.key_is_study_uid = true;
    for (size_t m : group.members) s.files.push_back(files[m]);
    list.studies.push_back(std::move(s));
  }
  return list;
}

absl::StatusOr<StudyList> list_manifest_studies(const std::string& manifest_path) {
  std::ifstream in(manifest_path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open manifest '", manifest_path, "'"));
  const fs::path base = fs::path(manifest_path).parent_path();
  auto resolve = [&](const std::string& p) { return fs::path(p).is_absolute() ? p : (base / p).string(); };
  const std::string ext = absl::AsciiStrToLower(fs::path(manifest_path).extension().string());
  const bool jsonl = ext == ".jsonl" || ext == ".ndjson";

  std::vector<std::string> order;                          // ids in first-seen order
  std::map<std::string, std::vector<std::string>> paths;   // id -> paths as listed
  std::string line;
  int64_t line_no = 0;
  int id_col = -1, path_col = -1;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    const std::string where = absl::StrCat(manifest_path, ":", line_no);
    std::string id;
    std::vector<std::string> listed;
    if (jsonl) {
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception&) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": malformed line (not JSON)"));
      }
      if (!j.is_object() || !j.contains("id") || !(j["id"].is_string() || j["id"].is_number())) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": want {\"id\": ..., \"path\" or \"paths\": ...}"));
      }
      id = j["id"].is_string() ? j["id"].get<std::string>() : j["id"].dump();
      if (j.contains("path") && j["path"].is_string()) listed.push_back(j["path"].get<std::string>());
      if (j.contains("paths") && j["paths"].is_array()) {
        for (const auto& p : j["paths"]) {
          if (!p.is_string()) return absl::InvalidArgumentError(absl::StrCat(where, ": \"paths\" must hold strings"));
          listed.push_back(p.get<std::string>());
        }
      }
      if (listed.empty()) return absl::InvalidArgumentError(absl::StrCat(where, ": no \"path\" or \"paths\""));
    } else {
      // Plain CSV: comma-separated, no quoting (paths with commas need the JSONL form).
      std::vector<std::string> cells = absl::StrSplit(line, ',');
      for (auto& c : cells) c = std::string(absl::StripAsciiWhitespace(c));
      if (id_col < 0) {
        for (size_t i = 0; i < cells.size(); ++i) {
          if (cells[i] == "id") id_col = static_cast<int>(i);
          if (cells[i] == "path") path_col = static_cast<int>(i);
        }
        if (id_col < 0 || path_col < 0) {
          return absl::InvalidArgumentError(absl::StrCat(where, ": the CSV header must name columns 'id' and 'path'"));
        }
        continue;
      }
      if (static_cast<int>(cells.size()) <= std::max(id_col, path_col)) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": ", cells.size(), " columns, the header has more"));
      }
      id = cells[static_cast<size_t>(id_col)];
      listed.push_back(cells[static_cast<size_t>(path_col)]);
    }
    if (id.empty()) return absl::InvalidArgumentError(absl::StrCat(where, ": empty id"));
    if (!paths.count(id)) order.push_back(id);
    for (auto& p : listed) paths[id].push_back(resolve(p));
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read manifest '", manifest_path, "'"));

  StudyList list;
  for (const auto& id : order) {
    BatchStudy s;
    s.key = id;
    bool all_images = true;
    for (const auto& p : paths[id]) all_images = all_images && !fs::is_directory(p) && is_image_file(p);
    if (all_images) {
      s.source = BatchStudy::Source::kImages;
      s.files = paths[id];  // slot order as listed
    } else {
      s.source = BatchStudy::Source::kDicom;
      s.files = collect_files(paths[id]);
    }
    list.studies.push_back(std::move(s));
  }
  return list;
}

StudyList annotation_studies(const std::vector<AnnotationExample>& split, const std::string& image_root) {
  StudyList list;
  for (const auto& e : split) {
    BatchStudy s;
    s.key = e.id;
    s.source = BatchStudy::Source::kImages;
    for (const auto& p : e.image_paths) s.files.push_back((fs::path(image_root) / p).string());
    s.reference = e.report;
    list.studies.push_back(std::move(s));
  }
  return list;
}

// ---- sharding -------------------------------------------------------------------------------------------

uint64_t fnv1a64(const std::string& bytes) {
  uint64_t h = 14695981039346656037ull;  // FNV offset basis
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;  // FNV prime
  }
  return h;
}

absl::StatusOr<Shard> parse_shard(const std::string& text) {
  const auto slash = text.find('/');
  Shard s;
  try {
    if (slash == std::string::npos) throw std::invalid_argument("no slash");
    size_t used = 0;
    s.index = std::stoll(text.substr(0, slash), &used);
    if (used != slash) throw std::invalid_argument("index");
    const std::string n = text.substr(slash + 1);
    s.count = std::stoll(n, &used);
    if (used != n.size()) throw std::invalid_argument("count");
  } catch (const std::exception&) {
    return absl::InvalidArgumentError(absl::StrCat("--shard '", text, "' is not i/n (e.g. 0/4)"));
  }
  if (s.count < 1 || s.index < 0 || s.index >= s.count) {
    return absl::InvalidArgumentError(absl::StrCat("--shard '", text, "': want 0 <= i < n"));
  }
  return s;
}

// ---- output ---------------------------------------------------------------------------------------------

namespace {

std::optional<std::string> line_key(const nlohmann::json& j) {
  if (!j.is_object()) return std::nullopt;
  for (const char* field : {"id", "study"}) {
    if (!j.contains(field)) continue;
    if (j[field].is_string()) return j[field].get<std::string>();
    if (j[field].is_number()) return j[field].dump();
  }
  return std::nullopt;
}

}  // namespace

absl::StatusOr<ExistingOutput> scan_output(const std::string& path) {
  ExistingOutput out;
  std::error_code ec;
  if (!fs::exists(path, ec)) return out;
  CMN_ASSIGN_OR_RETURN(const std::string bytes, read_bytes(path));
  size_t pos = 0;
  int64_t line_no = 0;
  while (pos < bytes.size()) {
    const size_t nl = bytes.find('\n', pos);
    ++line_no;
    const bool complete = nl != std::string::npos;
    const std::string line = bytes.substr(pos, complete ? nl - pos : std::string::npos);
    std::optional<std::string> key;
    try {
      key = line_key(nlohmann::json::parse(line));
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
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot open '", path, "' for writing"));
  if (::ftruncate(fd, static_cast<off_t>(keep_bytes)) != 0 || ::lseek(fd, 0, SEEK_END) < 0) {
    ::close(fd);
    return absl::InternalError(absl::StrCat("cannot truncate '", path, "'"));
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
  const std::string bytes = line + "\n";
  size_t written = 0;
  while (written < bytes.size()) {  // one write call in practice; a short write continues
    const ssize_t n = ::write(fd_, bytes.data() + written, bytes.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(absl::StrCat("cannot write to '", path_, "'"));
    }
    written += static_cast<size_t>(n);
  }
  if (sync_ && ::fdatasync(fd_) != 0) return absl::InternalError(absl::StrCat("cannot sync '", path_, "'"));
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

// ---- the run --------------------------------------------------------------------------------------------

absl::StatusOr<BatchSummary> run_batch(ReportGenerator& generator, const std::vector<BatchStudy>& studies,
                                       const BatchOptions& options,
                                       const std::function<absl::Status(const std::string& line)>& emit) {
  BatchSummary summary;
  summary.total = static_cast<int64_t>(studies.size());
  const auto start = Clock::now();
  const size_t batch = static_cast<size_t>(std::max<int64_t>(1, options.generator.batch_size));
  GeneratorOptions gen = options.generator;
  gen.attention = !options.attention_dir.empty();
  gen.batch_size = static_cast<int64_t>(batch);
  const ModelIdentity& id = generator.identity();
  Progress progress(options.progress, summary.total);

  // The reader: decodes studies in order, ahead of the model, into a queue of two batches.
  PreparedQueue queue(2 * batch);
  std::thread reader;
  size_t next_inline = 0;
  if (options.read_ahead) {
    reader = std::thread([&] {
      for (const auto& s : studies) queue.push(prepare(s, options, id));
      queue.close();
    });
  }
  auto next_batch = [&]() -> std::vector<Prepared> {
    if (options.read_ahead) return queue.pop(batch);
    std::vector<Prepared> out;
    for (; next_inline < studies.size() && out.size() < batch; ++next_inline) {
      out.push_back(prepare(studies[next_inline], options, id));
    }
    return out;
  };
  auto finish_reader = [&] {
    if (reader.joinable()) {
      queue.stop();
      reader.join();
    }
  };

  size_t index = 0;  // of the first study of the current batch
  absl::Status emit_status;
  while (emit_status.ok()) {
    std::vector<Prepared> prepared = next_batch();
    if (prepared.empty()) break;
    std::vector<std::vector<preprocessing::FloatImage>> images;
    std::vector<size_t> decoded;  // index into `prepared` of each entry of `images`
    for (size_t i = 0; i < prepared.size(); ++i) {
      if (!prepared[i].status.ok()) continue;
      decoded.push_back(i);
      images.push_back(std::move(prepared[i].images));
    }
    auto results = generator.generate_images(images, gen);
    std::vector<absl::Status> status(prepared.size());
    for (size_t i = 0; i < prepared.size(); ++i) status[i] = prepared[i].status;
    for (size_t k = 0; k < decoded.size(); ++k) {
      auto& p = prepared[decoded[k]];
      const auto& r = results[k];
      if (!r.ok()) {
        status[decoded[k]] = r.status();
        continue;
      }
      p.line["report"] = r->report;
      p.line["token_ids"] = r->token_ids;
      p.line["log_prob"] = r->log_prob;
      p.line["timings"] = {{"read_s", p.read_s}, {"preprocess_s", r->times.preprocess_s},
                           {"visual_s", r->times.visual_s}, {"encode_s", r->times.encode_s},
                           {"decode_s", r->times.decode_s}};
      if (gen.attention) {
        const std::string dir = (fs::path(options.attention_dir) / safe_file_name(studies[index + decoded[k]].key)).string();
        auto maps = sentence_attention_maps(r->token_ids, r->token_attention, generator.tokenizer(), options.study.views);
        absl::Status written = maps.ok() ? write_attention_maps(dir, *maps, images[k], gen.image) : maps.status();
        if (written.ok()) {
          p.line["attention_dir"] = dir;
        } else {
          p.line["attention_error"] = std::string(written.message());
        }
      }
    }
    for (size_t i = 0; i < prepared.size(); ++i) {
      auto& p = prepared[i];
      if (!status[i].ok()) {
        p.line["error"] = std::string(status[i].message());
        p.line["error_code"] = status_code_name(status[i].code());
        ++summary.failed;
        ++summary.failed_by_reason[status_code_name(status[i].code())];
      } else {
        ++summary.done;
      }
      emit_status = emit(p.line.dump());
      if (!emit_status.ok()) break;
    }
    index += prepared.size();
    progress.update(summary.done + summary.failed, summary.failed);
  }
  finish_reader();
  progress.update(summary.done + summary.failed, summary.failed, /*final=*/true);
  if (!emit_status.ok()) return emit_status;
  summary.elapsed_s = seconds_since(start);
  summary.studies_per_s =
      summary.elapsed_s > 0 ? static_cast<double>(summary.done + summary.failed) / summary.elapsed_s : 0.0;
  return summary;
}

// ---- merge ----------------------------------------------------------------------------------------------

absl::StatusOr<MergeResult> merge_outputs(const std::vector<std::string>& inputs, const std::string& output,
                                          bool force) {
  MergeResult result;
  std::string merged;
  std::set<std::string> present, expected;
  std::map<int64_t, std::string> shard_files;  // index -> input
  int64_t shard_count = -1;
  bool have_keys = true;
  for (const auto& input : inputs) {
    CMN_ASSIGN_OR_RETURN(const std::string bytes, read_bytes(input));
    // Lines, as scan_output reads them (a torn tail is noted and left out).
    size_t pos = 0;
    int64_t line_no = 0;
    while (pos < bytes.size()) {
      const size_t nl = bytes.find('\n', pos);
      ++line_no;
      const std::string line = bytes.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
      pos = nl == std::string::npos ? bytes.size() : nl + 1;
      if (absl::StripAsciiWhitespace(line).empty()) continue;
      nlohmann::json j;
      std::optional<std::string> key;
      try {
        j = nlohmann::json::parse(line);
        key = line_key(j);
      } catch (const nlohmann::json::exception&) {
      }
      if (!key || nl == std::string::npos) {
        if (pos >= bytes.size()) {
          result.problems.push_back(absl::StrCat(input, ":", line_no, ": torn last line left out (rerun that shard)"));
          continue;
        }
        return absl::DataLossError(absl::StrCat(input, ":", line_no, ": not a study line (JSON with \"id\")"));
      }
      if (!present.insert(*key).second) {
        result.problems.push_back(absl::StrCat("duplicate study '", *key, "' (", input, ":", line_no, ")"));
        continue;
      }
      if (j.contains("error")) ++result.failed;
      ++result.lines;
      merged += line + "\n";
    }
    // The shard's key list, when it wrote one.
    const std::string keys_path = keys_file_for(input);
    if (!fs::exists(keys_path)) {
      have_keys = false;
      continue;
    }
    CMN_ASSIGN_OR_RETURN(const std::string keys_text, read_bytes(keys_path));
    nlohmann::json k;
    try {
      k = nlohmann::json::parse(keys_text);
    } catch (const nlohmann::json::exception&) {
      return absl::DataLossError(absl::StrCat(keys_path, ": malformed"));
    }
    if (!k.is_object() || !k.contains("shard") || !k["shard"].is_string() || !k.contains("keys") || !k["keys"].is_array()) {
      return absl::DataLossError(absl::StrCat(keys_path, ": want {\"shard\": \"i/n\", \"keys\": [...]}"));
    }
    CMN_ASSIGN_OR_RETURN(const Shard shard, parse_shard(k["shard"].get<std::string>()));
    if (shard_count >= 0 && shard.count != shard_count) {
      result.problems.push_back(absl::StrCat(input, " is shard ", shard.text(), " but another input has n = ", shard_count));
    }
    shard_count = shard.count;
    if (!shard_files.emplace(shard.index, input).second) {
      result.problems.push_back(absl::StrCat("shard ", shard.text(), " given twice (", shard_files[shard.index], ", ", input, ")"));
    }
    for (const auto& key : k["keys"]) expected.insert(key.get<std::string>());
  }
  if (have_keys && shard_count > 0) {
    for (int64_t i = 0; i < shard_count; ++i) {
      if (!shard_files.count(i)) result.problems.push_back(absl::StrCat("shard ", i, "/", shard_count, " is missing"));
    }
  } else if (!have_keys) {
    result.problems.push_back("note: some inputs have no .keys.json: missing studies cannot be detected for them");
  }
  int64_t missing = 0;
  for (const auto& key : expected) {
    if (present.count(key)) continue;
    if (++missing <= 20) result.problems.push_back(absl::StrCat("missing study '", key, "'"));
  }
  if (missing > 20) result.problems.push_back(absl::StrCat("... ", missing - 20, " more missing studies"));
  result.ok = true;
  for (const auto& p : result.problems) {
    if (p.rfind("note:", 0) != 0 && p.find("torn last line") == std::string::npos) result.ok = false;
  }
  if (missing > 0) result.ok = false;
  if (result.ok || force) CMN_RETURN_IF_ERROR(write_file_atomically(output, merged));
  return result;
}

}  // namespace cmn::pipeline
