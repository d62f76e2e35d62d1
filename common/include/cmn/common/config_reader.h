#pragma once
// One configuration layer for every YAML file cmn reads (configs/server.yaml, the cmn-train recipes, a model
// bundle's model.yaml) and one parser for dotted command-line overrides ("server.port=0").
//
// Each options struct lists its fields once, in a field table: a function template
//
//   template <class V> void visit(V& v, ListenOptions& o) {
//     v("host", o.host);
//     v("port", o.port);
//     v.section("tls", [&](auto& s) { visit(s, o.tls); });   // a nested mapping
//   }
//
// and the visitors below drive reading (ReadVisitor, strict), writing (EmitVisitor) and the list of keys
// (KeysVisitor) from it; the struct's member initialisers are the defaults. A field may carry `uses` bits:
// the low bits say in which formats it appears (a visitor built with a mask skips fields of other formats;
// no format bits = every format), kRequired makes its absence an error.
//
// Strict reading: every key of a mapping must be a field of the table (else "unknown key 'server.prot'" with
// the full dotted path), every value must have the field's type ("key 'engine.max_batch_size' must be a
// whole number, got 'lots'"). A null value (`key:` or `key: ~`) leaves the field at its default.
#include <array>
#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cmn::config {

inline constexpr unsigned kRequired = 1u << 31;  // `uses` bit: absence is an error

// Reads one YAML mapping strictly. `path` is the mapping's dotted name ("" = the document), `source` the
// file name or "command line" that errors start with.
class Section {
 public:
  Section(YAML::Node node, std::string path, std::string source)
      : node_(std::move(node)), path_(std::move(path)), source_(std::move(source)) {}

  // Absent and null count as an empty mapping.
  absl::Status check_map() const;
  bool has(const std::string& key) const;

  // Reads `key` into *out (left unchanged when absent or null, unless `required`). T: bool, int, int64_t,
  // uint64_t, float, double, std::string, std::vector of those, std::array<float|double, N>.
  template <class T>
  absl::Status get(const std::string& key, T* out, bool required = false);

  // The nested mapping `key` (an error if present and not a mapping).
  absl::StatusOr<Section> child(const std::string& key, bool required = false);

  // After every field was read: an error naming the first key that no field claimed.
  absl::Status finish() const;

  std::string name(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }
  const std::string& source() const { return source_; }
  // "<source>: key '<dotted>' <what>".
  absl::Status error(const std::string& dotted, const std::string& what) const;

 private:
  // The node of `key` after marking it known; undefined when absent.
  YAML::Node lookup(const std::string& key);

  YAML::Node node_;
  std::string path_;
  std::string source_;
  std::vector<std::string> known_;  // in reading order, for the "known keys" hint
};

// ---- value conversion -------------------------------------------------------------------------------------

namespace internal {
template <class T> struct is_vector : std::false_type {};
template <class T> struct is_vector<std::vector<T>> : std::true_type {};
template <class T> struct is_array : std::false_type {};
template <class T, size_t N> struct is_array<std::array<T, N>> : std::true_type {};

template <class T>
const char* type_name() {
  if constexpr (std::is_same_v<T, bool>) return "true or false";
  else if constexpr (std::is_integral_v<T>) return "a whole number";
  else if constexpr (std::is_floating_point_v<T>) return "a number";
  else return "a string";
}

// One scalar; false when it does not convert.
template <class T>
bool scalar_as(const YAML::Node& node, T* out) {
  if (!node.IsScalar()) return false;
  if constexpr (std::is_unsigned_v<T> && !std::is_same_v<T, bool>) {
    if (!node.Scalar().empty() && node.Scalar()[0] == '-') return false;
  }
  try {
    *out = node.as<T>();
    return true;
  } catch (const YAML::Exception&) {
    return false;
  }
}
}  // namespace internal

template <class T>
absl::Status Section::get(const std::string& key, T* out, bool required) {
  const YAML::Node value = lookup(key);
  if (!value.IsDefined() || value.IsNull()) {
    return required ? error(name(key), "is required") : absl::OkStatus();
  }
  if constexpr (internal::is_vector<T>::value || internal::is_array<T>::value) {
    using Item = typename T::value_type;
    T result{};
    const std::string expected = internal::is_array<T>::value
                                     ? "must be a list of " + std::to_string(result.size()) + " values, each " +
                                           internal::type_name<Item>()
                                     : std::string("must be a list, each item ") + internal::type_name<Item>();
    if (!value.IsSequence()) return error(name(key), expected);
    if constexpr (internal::is_array<T>::value) {
      if (value.size() != result.size()) return error(name(key), expected);
    }
    size_t i = 0;
    for (const auto& item : value) {
      Item converted{};
      if (!internal::scalar_as(item, &converted)) return error(name(key), expected);
      if constexpr (internal::is_vector<T>::value) {
        result.push_back(std::move(converted));
      } else {
        result[i++] = converted;
      }
    }
    *out = std::move(result);
  } else {
    if (!value.IsScalar()) return error(name(key), std::string("must be a single value, ") + internal::type_name<T>());
    if (!internal::scalar_as(value, out)) {
      return error(name(key), std::string("must be ") + internal::type_name<T>() + ", got '" + value.Scalar() + "'");
    }
  }
  return absl::OkStatus();
}

// ---- visitors over a field table --------------------------------------------------------------------------

// Whether a field with `uses` bits takes part under a visitor's `mask` (no format bits = every format).
inline bool in_format(unsigned uses, unsigned mask) {
  const unsigned formats = uses & ~kRequired;
  return formats == 0 || (formats & mask) != 0;
}

// Reads a mapping into fields; the first error sticks. finish() runs for every section, so unknown keys are
// errors at every level.
class ReadVisitor {
 public:
  explicit ReadVisitor(Section& section, unsigned mask = ~0u) : section_(section), mask_(mask) {}

  template <class T>
  void operator()(const char* key, T& field, unsigned uses = 0) {
    if (!status_.ok() || !in_format(uses, mask_)) return;
    status_ = section_.get(key, &field, (uses & kRequired) != 0);
  }

  template <class Body>
  void section(const char* key, Body&& body, unsigned uses = 0) {
    if (!status_.ok() || !in_format(uses, mask_)) return;
    absl::StatusOr<Section> child = section_.child(key, (uses & kRequired) != 0);
    if (!child.ok()) {
      status_ = child.status();
      return;
    }
    ReadVisitor sub(*child, mask_);
    body(sub);
    status_ = sub.status_.ok() ? child->finish() : sub.status_;
  }

  // The first error, or the unknown-key check of this visitor's own section.
  absl::Status finish() const { return status_.ok() ? section_.finish() : status_; }

 private:
  Section& section_;
  unsigned mask_;
  absl::Status status_;
};

// Shortest decimal text that reads back to the same value (0.485, not 0.485000014901161), kept
// recognisably a float ("1.0", not "1").
std::string shortest(double value);
std::string shortest(float value);

// Writes fields as a YAML block mapping (the caller opens and closes the outermost map).
class EmitVisitor {
 public:
  explicit EmitVisitor(YAML::Emitter& out, unsigned mask = ~0u) : out_(out), mask_(mask) {}

  template <class T>
  void operator()(const char* key, const T& field, unsigned uses = 0) {
    if (!in_format(uses, mask_)) return;
    out_ << YAML::Key << key << YAML::Value;
    if constexpr (internal::is_vector<T>::value || internal::is_array<T>::value) {
      out_ << YAML::Flow << YAML::BeginSeq;
      for (const auto& item : field) scalar(item);
      out_ << YAML::EndSeq;
    } else {
      scalar(field);
    }
  }

  template <class Body>
  void section(const char* key, Body&& body, unsigned uses = 0) {
    if (!in_format(uses, mask_)) return;
    out_ << YAML::Key << key << YAML::Value << YAML::BeginMap;
    body(*this);
    out_ << YAML::EndMap;
  }

 private:
  template <class T>
  void scalar(const T& value) {
    if constexpr (std::is_floating_point_v<T>) {
      out_ << shortest(value);
    } else if constexpr (std::is_same_v<T, std::string>) {
      // Quoted when plain text would read back as something else (empty, null, a YAML special).
      out_ << (plain_is_safe(value) ? YAML::Auto : YAML::DoubleQuoted) << value;
    } else {
      out_ << value;
    }
  }
  static bool plain_is_safe(const std::string& text);

  YAML::Emitter& out_;
  unsigned mask_;
};

// Collects the dotted name of every field ("server.port", ...) in table order.
class KeysVisitor {
 public:
  explicit KeysVisitor(std::vector<std::string>* keys, std::string prefix = "", unsigned mask = ~0u)
      : keys_(keys), prefix_(std::move(prefix)), mask_(mask) {}

  template <class T>
  void operator()(const char* key, const T&, unsigned uses = 0) {
    if (in_format(uses, mask_)) keys_->push_back(prefix_ + key);
  }
  template <class Body>
  void section(const char* key, Body&& body, unsigned uses = 0) {
    if (!in_format(uses, mask_)) return;
    KeysVisitor sub(keys_, prefix_ + key + ".", mask_);
    body(sub);
  }

 private:
  std::vector<std::string>* keys_;
  std::string prefix_;
  unsigned mask_;
};

// ---- documents and overrides ------------------------------------------------------------------------------

// Parses YAML text ("" = an empty document); the error names `source`. The top level must be a mapping.
absl::StatusOr<YAML::Node> parse_document(const std::string& text, const std::string& source);
// Reads a whole file; NotFound naming the path when it cannot be opened.
absl::StatusOr<std::string> read_text_file(const std::string& path);

// One dotted override "a.b.c=value": sets root[a][b][c] (intermediate mappings created) to the value parsed
// as YAML ("" = the empty string, so `tls.cert_file=` clears a path; `null` restores the default).
// Errors start with "command line:" and say what is wrong ("is not key=value", an empty key part, a value
// that is not YAML, a path through a non-mapping).
absl::Status apply_override(YAML::Node& root, const std::string& assignment);

// The document of `text` with `overrides` applied in order. `check` is the caller's strict reader: it runs on
// each override alone first, so an unknown or mistyped override is reported against "command line" rather
// than the file.
absl::StatusOr<YAML::Node> load_with_overrides(
    const std::string& text, const std::string& source, const std::vector<std::string>& overrides,
    const std::function<absl::Status(const YAML::Node& document, const std::string& source)>& check);

}  // namespace cmn::config
