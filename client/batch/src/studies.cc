// Which studies there are: DICOM folder trees grouped by StudyInstanceUID, manifests (CSV or JSONL), and an
// annotation.json split; and the file helpers the other parts share (batch_internal.h).
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "batch_internal.h"
#include "cmn/batch/batch.h"
#include "cmn/common/status_macros.h"

namespace cmn::batch {

namespace fs = std::filesystem;

namespace detail {
namespace {

bool hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

}  // namespace

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

}  // namespace detail

namespace {

bool is_image_file(const std::string& path) {
  const std::string ext = absl::AsciiStrToLower(fs::path(path).extension().string());
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

}  // namespace

StudyList list_dicom_studies(const std::vector<std::string>& paths, const preprocessing::DicomReadOptions& read) {
  namespace pre = preprocessing;
  StudyList list;
  std::vector<std::string> files;
  std::vector<pre::InstanceInfo> infos;
  for (const auto& path : detail::collect_files(paths)) {
    auto bytes = detail::read_bytes(path);
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
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read manifest '", manifest_path, "'"));
  CMN_ASSIGN_OR_RETURN(std::vector<detail::ManifestStudy> parsed,
                       detail::parse_manifest(text.str(), jsonl, manifest_path));
  std::vector<std::string> order;                          // ids in first-seen order
  std::map<std::string, std::vector<std::string>> paths;   // id -> resolved paths
  for (const auto& m : parsed) {
    order.push_back(m.id);
    for (const auto& p : m.paths) paths[m.id].push_back(resolve(p));
  }

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
      s.files = detail::collect_files(paths[id]);
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

}  // namespace cmn::batch
