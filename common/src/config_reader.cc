#include "cmn/common/config_reader.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace cmn::config {

// ---- Section ----------------------------------------------------------------------------------------------

absl::Status Section::check_map() const {
  if (!node_.IsDefined() || node_.IsNull() || node_.IsMap()) return absl::OkStatus();
  if (path_.empty()) return absl::InvalidArgumentError(absl::StrCat(source_, ": the document must be a mapping"));
  return error(path_, "must be a mapping");
}

bool Section::has(const std::string& key) const {
  if (!node_.IsMap()) return false;
  const YAML::Node value = node_[key];
  return value.IsDefined() && !value.IsNull();
}

YAML::Node Section::lookup(const std::string& key) {
  known_.push_back(key);
  if (!node_.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
  // operator[] on a const node never inserts the key.
  const YAML::Node& map = node_;
  return map[key];
}

absl::StatusOr<Section> Section::child(const std::string& key, bool required) {
  const YAML::Node value = lookup(key);
  if (required && (!value.IsDefined() || value.IsNull())) return error(name(key), "is required");
  Section sub(value.IsDefined() ? value : YAML::Node(), name(key), source_);
  if (absl::Status s = sub.check_map(); !s.ok()) return s;
  return sub;
}

absl::Status Section::finish() const {
  if (!node_.IsMap()) return absl::OkStatus();
  for (const auto& entry : node_) {
    if (!entry.first.IsScalar()) return error(path_.empty() ? "(top level)" : path_, "has a key that is not text");
    const std::string key = entry.first.Scalar();
    bool known = false;
    for (const auto& k : known_) known = known || k == key;
    if (!known) {
      return absl::InvalidArgumentError(absl::StrCat(source_, ": unknown key '", name(key), "' (known here: ",
                                                     absl::StrJoin(known_, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status Section::error(const std::string& dotted, const std::string& what) const {
  return absl::InvalidArgumentError(absl::StrCat(source_, ": key '", dotted, "' ", what));
}

// ---- writing ----------------------------------------------------------------------------------------------

namespace {
template <typename T>
std::string shortest_impl(T value) {
  for (int precision = 1; precision <= 17; ++precision) {
    std::ostringstream s;
    s.precision(precision);
    s << value;
    std::istringstream back(s.str());
    T parsed{};
    back >> parsed;
    if (parsed == value) {
      std::string text = s.str();
      if (text.find_first_of(".eEn") == std::string::npos) text += ".0";
      return text;
    }
  }
  return std::to_string(value);
}
}  // namespace

std::string shortest(double value) { return shortest_impl(value); }
std::string shortest(float value) { return shortest_impl(value); }

bool EmitVisitor::plain_is_safe(const std::string& text) {
  if (text.empty()) return false;
  // Plain text that YAML reads as null would come back as "absent" (the default) instead of the text.
  for (const char* null : {"~", "null", "Null", "NULL"}) {
    if (text == null) return false;
  }
  return true;
}

// ---- documents and overrides ------------------------------------------------------------------------------

absl::StatusOr<YAML::Node> parse_document(const std::string& text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid YAML: ", e.what()));
  }
  if (root.IsDefined() && !root.IsNull() && !root.IsMap()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": the document must be a mapping of sections"));
  }
  return root;
}

absl::StatusOr<std::string> read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open config '", path, "'"));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("read error on '", path, "'"));
  return buffer.str();
}

absl::Status apply_override(YAML::Node& root, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("command line: '", assignment, "' is not key=value (e.g. section.key=value)"));
  }
  const std::string key = assignment.substr(0, eq);
  const std::string text = assignment.substr(eq + 1);
  const std::vector<std::string> parts = absl::StrSplit(key, '.');
  for (const auto& part : parts) {
    if (part.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("command line: bad key '", key, "' in '", assignment, "' (empty part between dots)"));
    }
  }
  YAML::Node value;
  try {
    value = text.empty() ? YAML::Node(std::string()) : YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("command line: ", key, ": cannot parse '", text, "': ", e.msg));
  }
  if (!root.IsDefined() || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  YAML::Node current = root;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node next = current[parts[i]];
    if (!next.IsDefined() || next.IsNull()) {
      current[parts[i]] = YAML::Node(YAML::NodeType::Map);
      next = current[parts[i]];
    } else if (!next.IsMap()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "command line: '", absl::StrJoin(parts.begin(), parts.begin() + static_cast<long>(i) + 1, "."),
          "' is not a section (in '", assignment, "')"));
    }
    current.reset(next);  // re-seat the handle; `current = next` would overwrite the node's content
  }
  current[parts.back()] = value;
  return absl::OkStatus();
}

absl::StatusOr<YAML::Node> load_with_overrides(
    const std::string& text, const std::string& source, const std::vector<std::string>& overrides,
    const std::function<absl::Status(const YAML::Node& document, const std::string& source)>& check) {
  absl::StatusOr<YAML::Node> root = parse_document(text, source);
  if (!root.ok()) return root.status();
  for (const auto& assignment : overrides) {
    YAML::Node single;
    if (absl::Status s = apply_override(single, assignment); !s.ok()) return s;
    if (absl::Status s = check(single, "command line"); !s.ok()) return s;
    if (absl::Status s = apply_override(*root, assignment); !s.ok()) return s;
  }
  return root;
}

}  // namespace cmn::config
