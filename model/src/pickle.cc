// pickle::Value and its constructors (make_*), and describe() for error messages: the object model that the
// reader (pickle_reader.cc) builds and checkpoint.cc reads.
#include "pickle.h"

namespace cmn::model::pickle {

namespace {

std::string quoted(const std::string& s) {
  constexpr size_t kMax = 60;  // error messages stay readable even for huge strings
  return "'" + (s.size() > kMax ? s.substr(0, kMax) + "..." : s) + "'";
}

}  // namespace

Value::~Value() {
  if (items.empty() && entries.empty()) return;
  std::vector<ValuePtr> pending;
  auto take = [&pending](Value& v) {
    for (auto& item : v.items) pending.push_back(std::move(item));
    for (auto& [key, value] : v.entries) {
      pending.push_back(std::move(key));
      pending.push_back(std::move(value));
    }
    v.items.clear();
    v.entries.clear();
  };
  take(*this);
  while (!pending.empty()) {
    ValuePtr v = std::move(pending.back());
    pending.pop_back();
    // Only a child this value held the last reference to dies here; empty it first so its own destructor
    // has nothing to recurse into. Values are never shared across threads, so use_count is exact.
    if (v && v.use_count() == 1) take(*v);
  }
}

void Value::dict_set(ValuePtr key, ValuePtr value) {
  if (key->kind == Kind::string) {
    auto [it, inserted] = string_index.emplace(key->text, entries.size());
    if (!inserted) {
      entries[it->second].second = std::move(value);
      return;
    }
  }
  entries.emplace_back(std::move(key), std::move(value));
}

ValuePtr Value::dict_get(const std::string& key) const {
  if (kind != Kind::dict) return nullptr;
  auto it = string_index.find(key);
  return it == string_index.end() ? nullptr : entries[it->second].second;
}

ValuePtr make_none() { return std::make_shared<Value>(); }

ValuePtr make_bool(bool b) {
  auto v = std::make_shared<Value>();
  v->kind = Value::Kind::boolean;
  v->boolean = b;
  return v;
}

ValuePtr make_int(int64_t i) {
  auto v = std::make_shared<Value>();
  v->kind = Value::Kind::integer;
  v->integer = i;
  return v;
}

ValuePtr make_float(double d) {
  auto v = std::make_shared<Value>();
  v->kind = Value::Kind::floating;
  v->floating = d;
  return v;
}

ValuePtr make_string(std::string s) {
  auto v = std::make_shared<Value>();
  v->kind = Value::Kind::string;
  v->text = std::move(s);
  return v;
}

ValuePtr make_tuple(std::vector<ValuePtr> items) {
  auto v = std::make_shared<Value>();
  v->kind = Value::Kind::tuple;
  v->items = std::move(items);
  return v;
}

ValuePtr make_dict(bool ordered) {
  auto v = std::make_shared<Value>();
  v->kind = Value::Kind::dict;
  v->ordered = ordered;
  return v;
}

ValuePtr make_global(std::string module, std::string name) {
  auto v = std::make_shared<Value>();
  v->kind = Value::Kind::global;
  v->text = std::move(module);
  v->name = std::move(name);
  return v;
}

ValuePtr make_tensor(torch::Tensor t) {
  auto v = std::make_shared<Value>();
  v->kind = Value::Kind::tensor;
  v->tensor = std::move(t);
  return v;
}

ValuePtr make_object(const Value& callable) {
  auto v = std::make_shared<Value>();
  v->kind = Value::Kind::object;
  v->name = callable.kind == Value::Kind::global ? callable.text + "." + callable.name : describe(callable);
  return v;
}

std::string describe(const Value& v) {
  switch (v.kind) {
    case Value::Kind::none: return "None";
    case Value::Kind::boolean: return v.boolean ? "True" : "False";
    case Value::Kind::integer: return "int " + std::to_string(v.integer);
    case Value::Kind::floating: return "float " + std::to_string(v.floating);
    case Value::Kind::string: return "str " + quoted(v.text);
    case Value::Kind::bytes: return "bytes of length " + std::to_string(v.text.size());
    case Value::Kind::tuple: return "tuple of " + std::to_string(v.items.size());
    case Value::Kind::list: return "list of " + std::to_string(v.items.size());
    case Value::Kind::dict: return (v.ordered ? "OrderedDict of " : "dict of ") + std::to_string(v.entries.size());
    case Value::Kind::global: return "global " + v.text + "." + v.name;
    case Value::Kind::tensor: return "tensor";
    case Value::Kind::storage: return "storage";
    case Value::Kind::object: return "object of " + v.name;
  }
  return "?";
}

}  // namespace cmn::model::pickle
